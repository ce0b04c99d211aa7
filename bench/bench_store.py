"""Store ingest of 200,000 x 512 synthetic embeddings, read-back, a top-10 cosine query over them, and row lookups.

The lookups are what labelling search results and clicked points costs
(``Store.rows`` of a few ids), against reading every segment's row.

Usage: python bench/bench_store.py [N] [DIM]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.vectors import normalize  # noqa: E402
from core.search import top_k  # noqa: E402
from core.store import Provenance, Store, TrackRecord  # noqa: E402


def main(n: int = 200_000, dim: int = 512) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    per_track = 100
    segs = np.stack([np.arange(per_track) * 3.0, np.arange(per_track) * 3.0 + 3.0], axis=1)
    records = [TrackRecord(f"/synthetic/{i:06d}.wav", str(i), per_track * 3.0, 22050, 1, "x", segs,
                           {"bench": vectors[i * per_track : (i + 1) * per_track]}, {"genre": f"g{i % 10}", "year": 1990 + i % 30})
               for i in range(n // per_track)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        store.ensure_grid(3.0, 3.0)
        store.prepare_space(Provenance("bench", "bench", dim, "1", ""))
        t = time.perf_counter()
        store.write_tracks(records)
        rows.append(("ingest (one transaction)", time.perf_counter() - t))
        t = time.perf_counter()
        ids, x = store.vectors("bench")
        rows.append(("read back to numpy", time.perf_counter() - t))
        t = time.perf_counter()
        xn = normalize(x)
        rows.append(("normalise (once per data version)", time.perf_counter() - t))
        q = rng.normal(size=dim).astype(np.float32)
        rows.append(("top-10 cosine query (median of 5)", _median(lambda: top_k(xn, q, k=10))))
        wanted = rng.choice(ids, 10, replace=False)
        rows.append(("rows of 10 segments (`Store.rows`, median of 5)", _median(lambda: store.rows(wanted))))
        tracks = store.segment_tracks(wanted)
        rows.append(("rows of 10 tracks (`Store.rows`, track level, median of 5)",
                     _median(lambda: store.rows(tracks, "track"))))
        rows.append(("track of every segment (`Store.segment_tracks`)", _median(lambda: store.segment_tracks(ids), 1)))
        rows.append(("every segment's row (`Store.segments_frame`)", _median(store.segments_frame, 1)))
        assert len(ids) == n
    print(f"| {n:,} x {dim} | seconds |\n|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec:.3f} |")


def _median(run, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
