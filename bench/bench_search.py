"""Latency of one query's top-10 at 200,000 and 1,000,000 × 512: the kernel and the app's call, side by side.

The space is :mod:`bench.synthetic`'s (tracks of 200 segments around 1,000
cluster centres per million), imported into a store with
``python -m core import`` and loaded as the app loads it (normalised once).
Each query is a stored vector plus noise, as a text query lands near the
audio it describes.  Reported per query, at segment and at track level:

* the kernel, ``core.search.search``: the float32 scan, and the int8 sketch
  with exact rescoring (the same rows; the script checks it);
* end to end, ``core.search.search_store`` (what the app and the CLI call:
  results with path, times and metadata), labelled by one lookup in the
  store (``Store.rows``, the CLI), and from row labels kept in memory
  (``core.labels.RowLabels``, the app; targets ≤ 30 ms at 200k and ≤ 100 ms
  at 1M, warm).

The labelling step is also timed alone, on 10 random ids per repeat.
Also timed: the once-per-load steps (load and normalise, the sketch, the
labels) and, with ``--text``, embedding a short text with the
clap-htsat-unfused architecture (random weights, same cost), which a search
pays once per new text.  Medians over the repeats, and the fastest.

    python bench/bench_search.py [--sizes 200000 1000000] [--dim 512] [--repeats 20] [--text] [--keep FOLDER]
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

from bench.synthetic import imported_store  # noqa: E402
from core import spaces  # noqa: E402
from core.labels import RowLabels  # noqa: E402
from core.search import EXACT_SEARCH_MAX_VALUES, build_sketch, search, search_store  # noqa: E402
from core.store import Store  # noqa: E402


def row(n: int, name: str, values: list[float], unit: str = "ms") -> None:
    scale = 1000 if unit == "ms" else 1
    print(f"{n:>9} {name:<52} {scale * np.median(values):>10.1f} {scale * np.min(values):>8.1f} {unit}")


def text_latency(repeats: int) -> list[float]:
    """Seconds to embed a new short text with the real-size CLAP text tower (random weights)."""
    import torch

    from bench.random_models import clap_unfused

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    adapter = clap_unfused("cpu")
    adapter.embed_text(["warm up"])
    seconds = []
    for i in range(repeats):
        t0 = time.perf_counter()
        adapter.embed_text([f"rain on a window number {i}"])
        seconds.append(time.perf_counter() - t0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--text", action="store_true", help="also time the CLAP text tower")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the synthetic stores in this folder")
    args = parser.parse_args()
    print(f"cores available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.1f}")
    if args.text:
        row(0, "embed a new text (CLAP text tower)", text_latency(args.repeats))
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            db, _ = imported_store(n, args.dim, args.keep or Path(tmp))
            print(f"{'n':>9} {'step':<52} {'median':>10} {'min':>8}   (load average {os.getloadavg()[0]:.1f})")
            measure(Store(db), n, args.repeats)


def measure(store: Store, n: int, repeats: int) -> None:
    """One size: the once-per-load steps, then each path's queries back to back."""
    t0 = time.perf_counter()
    space = spaces.load(store, "bench")
    row(n, "load and normalise (once per data version)", [time.perf_counter() - t0], "s")
    t0 = time.perf_counter()
    sketch = build_sketch(space.vectors)
    row(n, "build the int8 sketch (once per load)", [time.perf_counter() - t0], "s")
    t0 = time.perf_counter()
    labels = RowLabels.read(store)
    row(n, "read the row labels (once per data version)", [time.perf_counter() - t0], "s")
    rng = np.random.default_rng(1)
    dim = space.vectors.shape[1]
    noise = 0.5 * rng.standard_normal((repeats, dim), dtype=np.float32) / np.sqrt(dim)
    queries = space.vectors[rng.integers(0, n, repeats)] + noise
    paths = {
        "kernel: float32 scan": lambda q, level: search(space.vectors, q, k=10, level=level,
                                                        track_ids=space.track_ids),
        "kernel: int8 sketch + rescoring": lambda q, level: search(space.vectors, q, k=10, level=level,
                                                                   track_ids=space.track_ids, sketch=sketch),
        "search_store, labels by Store.rows": lambda q, level: search_store(store, space, q, k=10, level=level,
                                                                            sketch=sketch),
        "search_store, labels in memory": lambda q, level: search_store(store, space, q, k=10, level=level,
                                                                        sketch=sketch, labels=labels),
    }
    for level in ("segment", "track"):
        # Each path runs its queries back to back, as the app does: interleaving
        # them would leave BLAS threads spinning into the other path's timing.
        found = {}
        for name, run in paths.items():
            seconds, found[name] = [], []
            for q in queries:
                t0 = time.perf_counter()
                found[name].append(run(q, level))
                seconds.append(time.perf_counter() - t0)
            row(n, f"{name}, top-10 {level}s", seconds)
        kernels = list(found.values())[:2]
        for (a_rows, a_scores), (b_rows, b_scores) in zip(*kernels):
            assert np.array_equal(a_rows, b_rows) and np.allclose(a_scores, b_scores, atol=1e-6), "kernels differ"
        by_store, in_memory = list(found.values())[2:]
        assert by_store == in_memory, "labels differ"
        assert [r["segment_id"] for r in in_memory[0]] == space.ids[kernels[1][0][0]].tolist(), "end to end differs"
    # The labelling step alone (what search_store adds to the kernel), steadier than the difference of two totals.
    picked = [space.ids[rng.integers(0, n, 10)] for _ in range(repeats)]
    for name, lookup in (("label 10 results: Store.rows", store.rows), ("label 10 results: in memory", labels.rows)):
        seconds = []
        for ids in picked:
            t0 = time.perf_counter()
            lookup(ids)
            seconds.append(time.perf_counter() - t0)
        row(n, name, seconds)
    print(f"{n:>9} {'needs an approximate index':<52} {str(n * dim > EXACT_SEARCH_MAX_VALUES):>10}")


if __name__ == "__main__":
    main()
