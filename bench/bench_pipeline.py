"""Pipeline throughput with the dsp baseline on ../shared/data/esc50_subset, and where the time goes.

Usage: python bench/bench_pipeline.py [FOLDER]
Prints end-to-end seconds of audio per second, then the same files timed stage by stage.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import audio  # noqa: E402
from core.extract import extract  # noqa: E402
from core.models import dsp  # noqa: E402
from core.models.base import load_model  # noqa: E402
from core.store import Provenance, Store, TrackRecord  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc50_subset"


def main(folder: Path) -> None:
    files, _ = audio.find_audio_files([folder])
    with tempfile.TemporaryDirectory() as tmp:
        report = extract(files, ["dsp"], db=Path(tmp) / "bench.duckdb")
    total = report.audio_s
    print(f"{len(files)} files, {total:.0f} s of audio, end to end {report.seconds:.1f} s "
          f"-> {total / report.seconds:.0f}x real time")

    adapter = load_model("dsp")
    t = dict(decode=0.0, resample=0.0, model=0.0, store=0.0)
    records = []
    for f in files:
        t0 = time.perf_counter()
        meta = audio.info(f)
        digest = audio.content_hash(f)
        y, sr = audio.load(f)
        t1 = time.perf_counter()
        audio.resample(y, sr, dsp.SAMPLE_RATE)
        t2 = time.perf_counter()
        segs = audio.segment_grid(meta.duration_s)
        out = adapter.embed(y, sr, segs)
        t3 = time.perf_counter()
        t["decode"] += t1 - t0
        t["resample"] += t2 - t1
        t["model"] += (t3 - t2) - (t2 - t1)  # embed() resamples again inside; count that once
        records.append(TrackRecord(str(f), digest, meta.duration_s, sr, meta.channels, "x", segs, out))
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.duckdb")
        store.ensure_grid(3.0, 3.0)
        store.prepare_space(Provenance("dsp", "dsp", 128, "1", ""))
        t0 = time.perf_counter()
        for i in range(0, len(records), 32):
            store.write_tracks(records[i : i + 32])
        t["store"] = time.perf_counter() - t0
    whole = sum(t.values())
    print("\n| stage | seconds | share | x real time |\n|---|---|---|---|")
    for k, v in t.items():
        print(f"| {k} | {v:.2f} | {v / whole:.0%} | {total / v:.0f} |")
    print(f"| all stages | {whole:.2f} | 100% | {total / whole:.0f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
