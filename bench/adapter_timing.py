"""Shared by the model benchmarks: time an adapter the way the pipeline calls it, on real clips."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.audio import load, segment_grid


def time_on_set(adapter, folder: Path, limit: int, max_s: float, threads: int) -> dict:
    """Embed the first ``limit`` clips of a data set (at most ``max_s`` s each) on the 3 s grid.

    ``cpu_x`` divides audio seconds by CPU time over ``threads``: what an otherwise idle machine would give.
    """
    meta = pd.read_csv(folder / "metadata.csv").head(limit)
    t0 = time.perf_counter()
    decoded = [load(folder / rel, duration_s=max_s) for rel in meta["path"]]
    decode_s = time.perf_counter() - t0
    audio_s = sum(len(y) / sr for y, sr in decoded)
    n_rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for y, sr in decoded:
        rows = adapter.embed(y, sr, segment_grid(len(y) / sr))[adapter.entry.key]
        assert np.isfinite(rows).all()
        n_rows += len(rows)
    embed_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {"set": folder.name, "clips": len(decoded), "audio_s": round(audio_s, 1), "segments": n_rows,
            "decode_s": round(decode_s, 2), "embed_s": round(embed_s, 2), "embed_x": round(audio_s / embed_s, 1),
            "cpu_x": round(audio_s * threads / cpu_s, 1)}
