"""Throughput of the OpenL3 port on real clips, in seconds of audio per second.

Measured the way the pipeline calls an adapter: one ``embed`` per decoded
clip on the 3 s grid.  The cost is that of the windows (one 1 s window per
hop), so it depends on the representation and the hop, not on the content
type or on 512 versus 6144 (the same network, pooled differently).  The
resampler (resampy 0.2.x ``kaiser_best``) is also timed alone.

Weight values do not change the cost: without the official files (set
``OPENL3_WEIGHTS_DIR``) the random-weight reference files of
``../shared/reference/openl3`` are used.

    python bench/bench_openl3.py [--threads 2] [--limit 1] [--seconds 10] [--device cpu]
                                 [--model openl3-mel128-music-512 ...]
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
from core.models import openl3  # noqa: E402
from core.models.weights import sha256_file  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
REFERENCE = ROOT.parent / "shared" / "reference" / "openl3"
SETS = ("esc50_subset", "librosa_examples")
DEFAULT_MODELS = ("openl3-mel128-music-512", "openl3-mel256-music-512", "openl3-linear-music-512",
                  "openl3-mel128-music-512-hop0.5")


def decode_set(name: str, limit: int, seconds: float) -> list[tuple[np.ndarray, int]]:
    """The clips as the pipeline decodes them for OpenL3 (the float64 mix its entries declare)."""
    meta = pd.read_csv(DATA / name / "metadata.csv").head(limit)
    dtype = openl3.CATALOGUE[0].input_dtype
    return [load(DATA / name / rel, duration_s=seconds, dtype=dtype) for rel in meta["path"]]


def windows_in_segments(n_samples: int, sr: int, segments: np.ndarray, hop_s: float) -> int:
    """Windows the adapter computes: those whose centre lies in some segment."""
    centres = np.arange(openl3.window_count(int(n_samples * (48000 / sr)), hop_s)) * hop_s
    inside = (centres[:, None] >= segments[:, 0]) & (centres[:, None] < segments[:, 1])
    return int(inside.any(axis=1).sum())


def adapter_for(key: str, device: str) -> openl3.OpenL3:
    entry = {e.key: e for e in openl3.CATALOGUE}[key]
    p = entry.params
    path = openl3.local_weights(p["input_repr"], p["content_type"])
    if path is None:
        path = REFERENCE / f"openl3_audio_{p['input_repr']}_music-random.h5"
    return openl3.OpenL3(entry, openl3.read_weights(path), sha256_file(path), device, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=1, help="clips per data set")
    parser.add_argument("--seconds", type=float, default=10.0, help="longest excerpt per clip")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", action="append", help="catalogue key (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        sys.exit("../shared/data is not present beside the project")
    clips = [clip for name in SETS for clip in decode_set(name, args.limit, args.seconds)]
    audio_s = sum(len(y) / sr for y, sr in clips)

    openl3.resample(np.zeros(4410, dtype=np.float32), 44100)  # compiles the resampler
    t0 = time.perf_counter()
    for y, sr in clips:
        openl3.resample(y, sr)
    resample_x = audio_s / (time.perf_counter() - t0)

    rows = []
    for key in args.model or DEFAULT_MODELS:
        adapter = adapter_for(key, args.device)
        adapter.embed(np.zeros(48000, dtype=np.float32), 48000, np.array([[0.0, 0.1]]))  # warm-up
        n_windows = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for y, sr in clips:
            segments = segment_grid(len(y) / sr)
            out = adapter.embed(y, sr, segments)[key]
            assert np.isfinite(out).all()
            n_windows += windows_in_segments(len(y), sr, segments, adapter.hop_s)
        embed_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        rows.append({"model": key, "hop_s": adapter.hop_s, "clips": len(clips), "audio_s": round(audio_s, 1),
                     "windows": n_windows, "embed_s": round(embed_s, 1),
                     "ms_per_window": round(1000 * embed_s / n_windows), "embed_x": round(audio_s / embed_s, 2),
                     "cpu_s": round(cpu_s, 1)})
    print(f"device {args.device}, {args.threads} threads; {', '.join(SETS)}: {args.limit} clip(s) each, "
          f"at most {args.seconds:g} s per clip")
    print(f"resampler alone (resampy 0.2.x kaiser_best to 48 kHz): {resample_x:.0f} s of audio per s")
    print("embed_x: seconds of audio per second through embed (resampling included); "
          "cpu_s: CPU time of this process, all threads")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
