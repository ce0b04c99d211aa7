"""Projection times of PCA, STD-PCA, t-SNE (openTSNE) and UMAP on synthetic segment embeddings or a store's.

The vectors are clustered Gaussians (64 clusters, like a collection of many
tracks of a few kinds) so that the neighbour graphs of t-SNE and UMAP have
the structure they meet on real embeddings; ``--db``/``--space`` take a
stored space instead (a random subset of each size).  Each row runs in a
fresh process, as the app's first projection does, so UMAP's numba
compilation is counted where it is paid: "jit" runs UMAP once on 500 points
first and reports that separately.  Library imports are done before the
clock starts.

t-SNE and UMAP above ``--sample-above`` points (default: the app's, 100,000)
are fit on ``--fit-sample`` points and place the others; the fit and the
placing are timed apart.  ``--sample-above 0`` forces fit-and-place, and a
very large value a full fit, to compare the two at one size.

    python bench/bench_projection.py [--sizes 10000 50000 100000] [--methods pca std-pca tsne umap] [--dim 200]
                                     [--sample-above N] [--fit-sample N] [--db FILE --space KEY]
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


def vectors(n: int, dim: int, db: str | None, space: str | None):
    """``n`` synthetic vectors, or ``n`` random rows of a stored space (all of it when it has fewer)."""
    import numpy as np

    if db is None:
        return synthetic(n, dim)
    from core.store import Store

    _, x = Store(db).vectors(space)
    rows = np.sort(np.random.default_rng(0).choice(len(x), min(n, len(x)), replace=False))
    return x[rows]


def one(n: int, dim: int, method: str, sample_above: int | None, fit_sample: int | None,
        db: str | None, space: str | None) -> dict:
    """Run in a child process: time one projection (and UMAP's JIT warm-up apart)."""
    sys.path.insert(0, str(ROOT))
    from core.compare import trustworthiness
    from core.reduce import project

    import sklearn.decomposition  # noqa: F401  (imports are not projection time)
    import sklearn.manifold  # noqa: F401

    if method == "tsne":
        import openTSNE  # noqa: F401
    x = vectors(n, dim, db, space)
    row = {"n": len(x), "dim": x.shape[1], "method": method}
    if method == "umap":
        t = time.perf_counter()
        project(synthetic(500, x.shape[1], seed=1), "umap")
        row["jit_s"] = time.perf_counter() - t
    starts: dict[str, float] = {}
    t = time.perf_counter()
    xy, info = project(x, method, sample_above=sample_above, fit_sample=fit_sample,
                       progress=lambda done, total, step: starts.setdefault(step.split()[0], time.perf_counter()))
    row["seconds"] = time.perf_counter() - t
    if "placing" in starts:
        row["fit_s"] = starts["placing"] - t
        row["place_s"] = row["seconds"] - row["fit_s"]
    row["fit_on"] = info.get("fit_sample", len(x))
    t = time.perf_counter()
    row["trust"] = trustworthiness(x, xy)
    row["trust_s"] = time.perf_counter() - t
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--methods", nargs="+", default=["pca", "std-pca", "tsne", "umap"])
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--sample-above", type=int, help="fit t-SNE and UMAP on a sample above this many points")
    parser.add_argument("--fit-sample", type=int, help="points of that sample")
    parser.add_argument("--db", help="take the vectors from this store instead of synthetic ones")
    parser.add_argument("--space", help="the stored space (with --db)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per row before it is reported as not finished")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kwargs = json.loads(args.child)
        print(json.dumps(one(**kwargs)))
        return
    source = f"{args.space} from {args.db}" if args.db else f"synthetic {args.dim}-D vectors in 64 clusters"
    print(f"{os.cpu_count()} CPUs · {source} · one fresh process per row · load average {os.getloadavg()[0]:.1f}")
    print(f"{'method':<8} {'points':>9} {'fit on':>8} {'seconds':>9} {'fit s':>7} {'place s':>8} {'umap jit s':>11} "
          f"{'trust@10':>9} {'trust s':>8}")
    for n in args.sizes:
        for method in args.methods:
            kwargs = {"n": n, "dim": args.dim, "method": method, "sample_above": args.sample_above,
                      "fit_sample": args.fit_sample, "db": args.db, "space": args.space}
            cmd = [sys.executable, __file__, "--child", json.dumps(kwargs)]
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=True).stdout
            except subprocess.TimeoutExpired:
                print(f"{method:<8} {n:>9,} {'':>8} {'>' + str(int(args.timeout)):>9}   (not finished)", flush=True)
                continue
            row = json.loads(out.strip().splitlines()[-1])
            cells = [f"{row[k]:.1f}" if k in row else "" for k in ("fit_s", "place_s", "jit_s")]
            print(f"{method:<8} {row['n']:>9,} {row['fit_on']:>8,} {row['seconds']:>9.1f} {cells[0]:>7} {cells[1]:>8} "
                  f"{cells[2]:>11} {row['trust']:>9.3f} {row['trust_s']:>8.1f}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
