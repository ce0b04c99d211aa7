"""Synthetic clustered spaces for the benchmarks, generated batch by batch, as Parquet files and as stores.

Tracks of 200 segments (3 s each) each pick one of ``rows / 1000`` cluster
centres and a drift of their own, so a segment's nearest neighbours are
mostly its own track's segments and then its cluster's other tracks, as in
a collection:

    x = 2 · centre[cluster(track)] + 0.7 · drift[track] + noise,  then normalised.

Every batch has its own seed, so a space is the same every time and is never
held whole: a 1,000,000 × 512 store is written from a Parquet file that is
written batch by batch, and imported by ``python -m core import`` as a user
would (which is what the import figure of ``bench_memory.py`` times).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.measure import peak_rss
from core import index as ann
from core.vectors import normalize

#: Seconds per segment in the synthetic tracks.
SEGMENT_S = 3.0

SEGMENTS_PER_TRACK = 200


class Synthetic:
    """A clustered space of ``rows`` unit vectors, generated batch by batch (a sequence of loaders for ``build``)."""

    def __init__(self, rows: int, dim: int, batch: int = ann.BATCH_ROWS, seed: int = 0):
        if rows % SEGMENTS_PER_TRACK:
            raise SystemExit(f"--rows must be a multiple of {SEGMENTS_PER_TRACK} (whole tracks).")
        self.rows, self.dim, self.batch, self.seed = rows, dim, batch - batch % SEGMENTS_PER_TRACK, seed
        self.centres = np.random.default_rng(seed).standard_normal((max(1, rows // 1000), dim), dtype=np.float32)
        self.seconds = 0.0  # spent generating, to take out of the build time

    def __len__(self) -> int:
        return -(-self.rows // self.batch)

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return lambda: self.generate(i)

    def generate(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        ids = np.arange(i * self.batch, min(self.rows, (i + 1) * self.batch), dtype=np.int64)
        tracks = ids // SEGMENTS_PER_TRACK
        first, last = int(tracks[0]), int(tracks[-1])
        per_track = [np.random.default_rng((self.seed, 1, t)) for t in range(first, last + 1)]
        cluster = np.array([r.integers(len(self.centres)) for r in per_track])
        drift = np.stack([r.standard_normal(self.dim, dtype=np.float32) for r in per_track])
        x = np.random.default_rng((self.seed, 2, i)).standard_normal((len(ids), self.dim), dtype=np.float32)
        x += 2 * self.centres[cluster[tracks - first]]
        x += 0.7 * drift[tracks - first]
        normalize(x, copy=False)
        self.seconds += time.perf_counter() - t0
        return ids, tracks, x


def write_parquet(space: Synthetic, out: Path) -> Path:
    """The space in the import layout (path, start_s, end_s, a ``genre`` column, vector), batch by batch."""
    schema = pa.schema([("path", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
                        ("genre", pa.string()), ("vector", pa.list_(pa.float32(), space.dim))])
    with pq.ParquetWriter(out, schema) as writer:
        for i in range(len(space)):
            ids, tracks, x = space.generate(i)
            start = (ids % SEGMENTS_PER_TRACK) * SEGMENT_S
            writer.write_table(pa.table({
                "path": pa.array([f"/synthetic/{t:06d}.wav" for t in tracks]),
                "start_s": start, "end_s": start + SEGMENT_S,
                "genre": pa.array([f"g{t % 10}" for t in tracks]),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), space.dim),
            }, schema=schema))
    return out


def imported_store(rows: int, dim: int, folder: Path, space: str = "bench") -> tuple[Path, dict]:
    """A store holding the synthetic space ``rows × dim`` under ``space``, imported from Parquet by the CLI.

    Kept in ``folder`` (named by its size) and reused by later runs.

    Returns
    -------
    db : Path
    figures : dict
        ``seconds``, ``cpu_seconds`` and ``peak_mb`` of ``python -m core import`` (empty when the store was already there).
    """
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / f"synthetic-{rows}x{dim}.duckdb"
    if db.exists():
        return db, {}
    parquet = write_parquet(Synthetic(rows, dim), folder / f"synthetic-{rows}x{dim}.parquet")
    mb, code, seconds, cpu = peak_rss(["-m", "core", "import", str(parquet), "--model", space, "--db", str(db)], quiet=False)
    parquet.unlink()
    if code != 0:
        raise SystemExit(f"import failed with exit {code}")
    return db, {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": mb}
