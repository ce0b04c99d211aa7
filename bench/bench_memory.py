"""Bounded memory at a million segments (issue 14, item 5): import time, and the peak RSS of loading and searching.

1. ``python -m core import`` of a synthetic ``rows × dim`` Parquet file
   (see :mod:`bench.synthetic`), timed with its peak RSS (target at
   1,000,000 × 512: ≤ 20 s).
2. A fresh process that does what the app does for a search: load the space
   (normalised), build the int8 sketch, read the row labels, then answer
   ``--queries`` queries at segment and at track level through
   ``search_store``.  Its peak RSS is the figure (target: ≤ 3 GB), with the
   time of each step.

    python bench/bench_memory.py [--rows 1000000] [--dim 512] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.measure import peak_rss  # noqa: E402
from bench.synthetic import imported_store  # noqa: E402


def load_and_search(db: str, space: str, queries: int) -> None:
    """The child: each step's seconds, on one line each."""
    from core import spaces
    from core.labels import RowLabels
    from core.search import build_sketch, search_store
    from core.store import Store

    store = Store(db)
    steps = {}
    t0 = time.perf_counter()
    loaded = spaces.load(store, space)
    steps["load and normalise"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sketch = build_sketch(loaded.vectors)
    steps["int8 sketch"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = RowLabels.read(store)
    steps["row labels"] = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for level in ("segment", "track"):
        for row in rng.integers(0, len(loaded.ids), queries):
            search_store(store, loaded, loaded.vectors[row], k=10, level=level, sketch=sketch, labels=labels)
    steps[f"{2 * queries} queries"] = time.perf_counter() - t0
    for name, seconds in steps.items():
        print(f"  {name:<24} {seconds:8.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the synthetic store in this folder")
    parser.add_argument("--child", nargs=2, metavar=("DB", "SPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        load_and_search(*args.child, args.queries)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        print(f"cores available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}", flush=True)
        db, imported = imported_store(args.rows, args.dim, folder)
        if imported:
            print(f"import {args.rows:,} x {args.dim}: {imported['seconds']:.1f} s ({imported['cpu_seconds']:.1f} CPU-s), peak RSS {imported['peak_mb']:,.0f} MB "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        print(f"load + sketch + labels + search, {args.rows:,} x {args.dim}:", flush=True)
        mb, code, seconds, cpu = peak_rss([__file__, "--child", str(db), "bench", "--queries", str(args.queries)], quiet=False)
        print(f"  peak RSS {mb:,.0f} MB, exit {code}, {seconds:.1f} s ({cpu:.1f} CPU-s) in all (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
