"""Time the Compare metrics on synthetic clustered spaces of the sizes issue 7 targets.

Three models of different widths embed the same items: label clusters plus
noise, ten segments per track (the group excluded from neighbours), and a
2-D map per model for trustworthiness.  Wall time and process CPU time are
both printed, because on a shared machine wall time also measures the
neighbours' load; CPU time / cores is the wall time of an idle machine.

    python bench/bench_metrics.py [--sizes 20000 100000] [--dims 512 200 128] [--full-knn]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core import compare  # noqa: E402


def synthetic(n: int, dims: list[int], n_labels: int = 20, seed: int = 0) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Spaces that share labels but not geometry, like real models of one collection."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels, n)
    tracks = np.repeat(np.arange((n + 9) // 10), 10)[:n]
    spaces, maps = {}, {}
    for dim in dims:
        centres = rng.standard_normal((n_labels, dim)).astype(np.float32)
        x = centres[labels] + 2.0 * rng.standard_normal((n, dim), dtype=np.float32)
        spaces[f"model-{dim}"] = x
        maps[f"model-{dim}"] = x @ rng.standard_normal((dim, 2)).astype(np.float32)
    return spaces, maps, labels, tracks


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 200, 128])
    parser.add_argument("--full-knn", action="store_true", help="also time exact k-NN of every item at each size")
    args = parser.parse_args()
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}")
    print(f"{'n':>8} {'step':<32} {'wall s':>8} {'cpu s':>8}")
    for n in args.sizes:
        spaces, maps, labels, tracks = synthetic(n, args.dims)
        first = next(iter(spaces))
        rows = np.arange(min(n, compare.MAX_POINTS))
        x = spaces[first][rows]
        steps = {
            f"knn k=10 ({first}, {len(rows)})": lambda: compare.knn(x, k=10, groups=tracks[rows]),
            f"silhouette ({first}, {len(rows)})": lambda: compare.silhouette(x, labels[rows]),
            f"k-means NMI/ARI ({first}, {len(rows)})": lambda: compare.kmeans_agreement(x, labels[rows]),
            f"CKA ({first} | next, {len(rows)})": lambda: compare.cka(x, list(spaces.values())[1][rows]),
            f"trustworthiness ({first})": lambda: compare.trustworthiness(spaces[first], maps[first]),
        }
        if args.full_knn and len(rows) < n:
            steps[f"knn k=10 ({first}, all {n})"] = lambda: compare.knn(spaces[first], k=10, groups=tracks)
        for name, fn in steps.items():
            _, wall, cpu = timed(fn)
            print(f"{n:>8} {name:<32} {wall:>8.2f} {cpu:>8.2f}")
        table, wall, cpu = timed(lambda: compare.metrics_table(spaces, labels=labels, groups=tracks, k=10, maps=maps))
        sampled = table["info"]["sampled"]
        print(f"{n:>8} {'metrics_table, ' + str(len(spaces)) + ' models':<32} {wall:>8.2f} {cpu:>8.2f}"
              f"   (scored on {sampled or n} items)")


if __name__ == "__main__":
    main()
