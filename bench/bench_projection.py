"""Projection times of PCA, STD-PCA, t-SNE (openTSNE) and UMAP on synthetic segment embeddings.

The vectors are clustered Gaussians (64 clusters, like a collection of many
tracks of a few kinds) so that the neighbour graphs of t-SNE and UMAP have
the structure they meet on real embeddings.  Each row runs in a fresh
process, as the app's first projection does, so UMAP's numba compilation is
counted where it is paid: "jit" runs UMAP once on 500 points first and
reports that separately.  Library imports are done before the clock starts.

    python bench/bench_projection.py [--sizes 10000 50000 100000] [--methods pca std-pca tsne umap] [--dim 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic(n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim)).astype(np.float32) * 3
    return (centres[rng.integers(0, 64, n)] + rng.normal(size=(n, dim)).astype(np.float32)).astype(np.float32)


def one(n: int, dim: int, method: str) -> dict:
    """Run in a child process: time one projection (and UMAP's JIT warm-up apart)."""
    sys.path.insert(0, str(ROOT))
    from core.compare import trustworthiness
    from core.reduce import project

    import sklearn.decomposition  # noqa: F401  (imports are not projection time)
    import sklearn.manifold  # noqa: F401

    if method == "tsne":
        import openTSNE  # noqa: F401
    x = synthetic(n, dim)
    row = {"n": n, "dim": dim, "method": method}
    if method == "umap":
        t = time.perf_counter()
        project(synthetic(500, dim, seed=1), "umap")
        row["jit_s"] = time.perf_counter() - t
    t = time.perf_counter()
    xy, _ = project(x, method)
    row["seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    row["trust"] = trustworthiness(x, xy)
    row["trust_s"] = time.perf_counter() - t
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=["pca", "std-pca", "tsne", "umap"])
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per row before it is reported as not finished")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(int(args.child[0]), int(args.child[1]), args.child[2])))
        return
    print(f"{os.cpu_count()} CPUs · synthetic {args.dim}-D vectors in 64 clusters · one fresh process per row")
    print(f"{'method':<8} {'points':>8} {'seconds':>9} {'umap jit s':>11} {'trust@10':>9} {'trust s':>8}")
    for n in args.sizes:
        for method in args.methods:
            cmd = [sys.executable, __file__, "--child", str(n), str(args.dim), method]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=True).stdout
            except subprocess.TimeoutExpired:
                print(f"{method:<8} {n:>8,} {'>' + str(int(args.timeout)):>9}   (not finished)", flush=True)
                continue
            row = json.loads(out.strip().splitlines()[-1])
            jit = f"{row['jit_s']:.1f}" if "jit_s" in row else ""
            print(f"{method:<8} {n:>8,} {row['seconds']:>9.1f} {jit:>11} {row['trust']:>9.3f} {row['trust_s']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
