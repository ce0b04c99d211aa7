"""Throughput of the aisfx port on real clips, in seconds of audio per second.

The original package runs at about 19x real time end to end on 2 CPU threads
(../shared/reference/aisfx/README.md); this measures our adapter the way the
pipeline calls it: one ``embed`` per decoded track on the 3 s grid.

    python bench/bench_aisfx.py [--threads 2] [--limit 60] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from core.audio import load, segment_grid  # noqa: E402
from core.models import aisfx  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = ("esc50_subset", "librosa_examples", "gm_notes", "fsdd")


def bench_set(adapter, name: str, limit: int) -> dict:
    meta = pd.read_csv(DATA / name / "metadata.csv").head(limit)
    decoded = []
    t0 = time.perf_counter()
    for rel in meta["path"]:
        decoded.append(load(DATA / name / rel))
    decode_s = time.perf_counter() - t0
    audio_s = sum(len(y) / sr for y, sr in decoded)

    t0 = time.perf_counter()
    for y, sr in decoded:
        aisfx.log_mel(aisfx.resample_44k(y, sr))
    front_s = time.perf_counter() - t0

    n_rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for y, sr in decoded:
        rows = adapter.embed(y, sr, segment_grid(len(y) / sr))["aisfx"]
        n_rows += len(rows)
        assert np.isfinite(rows).all()
    embed_s, embed_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {
        "set": name, "clips": len(decoded), "audio_s": round(audio_s, 1), "segments": n_rows,
        "decode_s": round(decode_s, 2), "front_end_x": round(audio_s / front_s, 1),
        "embed_s": round(embed_s, 2), "embed_x": round(audio_s / embed_s, 1),
        "embed_cpu_s": round(embed_cpu_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=60, help="clips per data set")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        sys.exit("../shared/data is not present beside the project")
    t0 = time.perf_counter()
    adapter = aisfx.load(aisfx.CATALOGUE[0], args.device)
    print(f"load: {time.perf_counter() - t0:.2f} s (device {args.device}, {args.threads} threads)")
    warm = np.zeros(44100 * 3, dtype=np.float32)
    adapter.embed(warm, 44100, np.array([[0.0, 3.0]]))
    rows = [bench_set(adapter, name, args.limit) for name in SETS]
    print("embed_x, front_end_x: seconds of audio per wall-clock second (front end = resample + log-mel);")
    print("embed_cpu_s: CPU time of the embed calls, summed over threads (steadier on a busy machine)")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
