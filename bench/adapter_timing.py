"""Shared by the model benchmarks: time an adapter the way the pipeline calls it, on real clips."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.audio import load, segment_grid


def time_on_set(adapter, folder: Path, limit: int, max_s: float | None, threads: int) -> dict:
    """Embed the first ``limit`` clips of a data set (at most ``max_s`` s each) on the 3 s grid.

    ``cpu_x`` divides audio seconds by CPU time over ``threads``: what an otherwise idle machine would give.
    """
    meta = pd.read_csv(folder / "metadata.csv").head(limit)
    t0 = time.perf_counter()
    decoded = [load(folder / rel, duration_s=max_s, dtype=adapter.entry.input_dtype) for rel in meta["path"]]
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


def pipeline_loss(adapter, folder: Path, limit: int) -> dict:
    """The whole pipeline (decode, resample, model, DuckDB writes) against the adapter alone, on the same clips.

    ``lost`` is the share of throughput that decoding, batching and storage cost on top of the model.
    """
    import tempfile

    from core.extract import extract

    meta = pd.read_csv(folder / "metadata.csv").head(limit)
    paths = [folder / rel for rel in meta["path"]]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = extract(paths, [adapter.entry.key], db=Path(tmp) / "bench.duckdb", adapters=[adapter])
        pipeline_s = time.perf_counter() - t0
    assert not report.failures, report.failures
    alone = time_on_set(adapter, folder, limit, None, 1)
    pipeline_x = report.audio_s / pipeline_s
    return {"set": folder.name, "clips": len(paths), "audio_s": round(report.audio_s, 1),
            "pipeline_x": round(pipeline_x, 1), "adapter_x": alone["embed_x"],
            "lost": f"{100 * (1 - pipeline_x / alone['embed_x']):.0f} %"}


def run_random_weight_bench(description: str, build, bare, bare_label: str, embed_note: str) -> None:
    """Command line shared by the hub-model benchmarks: build a random-weight adapter, time it bare and on real sets.

    Parameters
    ----------
    build : callable(device) -> adapter
    bare : callable(adapter, n) -> dict
        Times the bare network on ``n`` full inputs.
    """
    import argparse
    import sys

    import torch

    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=8, help="clips per data set")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="decode at most this much of each clip")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pipeline", type=int, default=0, metavar="N",
                        help="also run the whole pipeline on N esc50_subset clips and report what it loses")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not data.is_dir():
        sys.exit("../shared/data is not present beside the project")
    t0 = time.perf_counter()
    adapter = build(args.device)
    print(f"build: {time.perf_counter() - t0:.2f} s (device {args.device}, {args.threads} threads, "
          f"batch {adapter.batch_size})")
    print(f"{bare_label}:", bare(adapter, 2 * adapter.batch_size))
    adapter.embed(np.zeros(44100 * 3, dtype=np.float32), 44100, np.array([[0.0, 3.0]]))  # warm-up: resampler, allocator
    rows = [time_on_set(adapter, data / name, args.limit, args.max_seconds, args.threads)
            for name in ("esc50_subset", "librosa_examples")]
    print("cpu_x: the same from CPU time over the threads (what an otherwise idle machine would give)")
    print(f"embed_x: seconds of audio per second through the adapter ({embed_note})")
    print(pd.DataFrame(rows).to_string(index=False))
    if args.pipeline:
        print("pipeline_x: extract() end to end into a fresh store; adapter_x: adapter.embed on the same decoded clips")
        print(pd.DataFrame([pipeline_loss(adapter, data / "esc50_subset", args.pipeline)]).to_string(index=False))
