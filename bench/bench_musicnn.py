"""Throughput of the MusiCNN and VGG ports on real clips, in seconds of audio per second.

Measured the way the pipeline calls an adapter: one ``embed`` per decoded track
on the 3 s grid, which fills both the embedding and the taggram.  The front end
(soxr resampling to 16 kHz + log-mel) is also timed alone, since it is shared by
all four models.

    python bench/bench_musicnn.py [--threads 2] [--limit 60] [--device cpu] [--model musicnn-msd ...]
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
from core.models import musicnn  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = ("librosa_examples", "esc50_subset", "gm_notes")


def decode_set(name: str, limit: int) -> list[tuple[np.ndarray, int]]:
    meta = pd.read_csv(DATA / name / "metadata.csv").head(limit)
    return [load(DATA / name / rel) for rel in meta["path"]]


def bench(adapter, name: str, decoded: list) -> dict:
    audio_s = sum(len(y) / sr for y, sr in decoded)
    n_rows = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for y, sr in decoded:
        rows = adapter.embed(y, sr, segment_grid(len(y) / sr))
        n_rows += len(rows[adapter.entry.key])
        assert all(np.isfinite(v).all() for v in rows.values())
    embed_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {"model": adapter.entry.key, "set": name, "clips": len(decoded), "audio_s": round(audio_s, 1),
            "segments": n_rows, "embed_s": round(embed_s, 2), "embed_x": round(audio_s / embed_s, 1),
            "cpu_s": round(cpu_s, 2), "per_cpu_s_x": round(audio_s / cpu_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=60, help="clips per data set")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", action="append", help="catalogue key (repeatable); default musicnn-msd and vgg-msd")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        sys.exit("../shared/data is not present beside the project")
    decoded = {name: decode_set(name, args.limit) for name in SETS}

    front = []
    for name, clips in decoded.items():
        audio_s = sum(len(y) / sr for y, sr in clips)
        t0 = time.perf_counter()
        for y, sr in clips:
            musicnn.log_mel(y, sr)
        front.append({"set": name, "audio_s": round(audio_s, 1), "front_end_x": round(audio_s / (time.perf_counter() - t0), 1)})

    rows = []
    for key in args.model or ["musicnn-msd", "vgg-msd"]:
        t0 = time.perf_counter()
        adapter = musicnn.load({e.key: e for e in musicnn.CATALOGUE}[key], args.device)
        print(f"load {key}: {time.perf_counter() - t0:.2f} s (device {args.device}, {args.threads} threads)")
        adapter.embed(np.zeros(16000 * 3, dtype=np.float32), 16000, np.array([[0.0, 3.0]]))
        rows.extend(bench(adapter, name, clips) for name, clips in decoded.items())
    print("front_end_x, embed_x: seconds of audio per wall-clock second (front end = soxr to 16 kHz + log-mel);")
    print("per_cpu_s_x: seconds of audio per CPU-second of this process, summed over its threads")
    print(pd.DataFrame(front).to_string(index=False))
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
