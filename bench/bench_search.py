"""Latency of one text query's top-10 over stored 512-D segment vectors (issue 4: ≤ 100 ms at 1,000,000).

The stored matrix is random float32, normalised once in place as the app
does after loading; each query is a fresh random vector, as a text
embedding would be.  Reported per query: the bare matrix-vector product,
``cosine_scores`` (product plus input checks), ``rank_segments`` (top-10
segments) and ``rank_tracks`` (top-10 tracks, ten segments per track).
Medians over the repeats, and the fastest, because the machine is shared.

    python bench/bench_search.py [--sizes 1000000 200000] [--dim 512] [--repeats 20]
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

from core.search import EXACT_SEARCH_MAX_VALUES, cosine_scores, normalize, rank_segments, rank_tracks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 200_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}")
    print(f"{'n':>9} {'step':<28} {'median ms':>10} {'min ms':>8}")
    rng = np.random.default_rng(0)
    for n in args.sizes:
        matrix = rng.standard_normal((n, args.dim), dtype=np.float32)
        start = time.perf_counter()
        normalize(matrix, copy=False)
        print(f"{n:>9} {'normalize (once, in place)':<28} {1000 * (time.perf_counter() - start):>10.1f}")
        tracks = np.arange(n) // 10
        queries = rng.standard_normal((args.repeats, args.dim), dtype=np.float32)
        timings: dict[str, list[float]] = {"matrix @ query (bare)": [], "cosine_scores": [],
                                           "+ rank_segments k=10": [], "+ rank_tracks k=10": []}
        for q in queries:
            t0 = time.perf_counter()
            matrix @ q
            t1 = time.perf_counter()
            scores = cosine_scores(matrix, q)
            t2 = time.perf_counter()
            rank_segments(scores, k=10)
            t3 = time.perf_counter()
            rank_tracks(scores, tracks, k=10)
            t4 = time.perf_counter()
            for name, seconds in zip(timings, (t1 - t0, t2 - t1, t3 - t1, t4 - t3 + t2 - t1)):
                timings[name].append(seconds)
        for name, values in timings.items():
            print(f"{n:>9} {name:<28} {1000 * np.median(values):>10.1f} {1000 * np.min(values):>8.1f}")
        print(f"{n:>9} {'needs approximate index':<28} {str(n * args.dim > EXACT_SEARCH_MAX_VALUES):>10}")
        del matrix


if __name__ == "__main__":
    main()
