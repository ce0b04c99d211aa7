"""Peak memory of a dsp extract over hostile files, and how long a writer waits while readers read nonstop.

Usage: python bench/bench_hardening.py [rss|writer|all]

* rss: the peak RSS of ``python -m core extract ... --model dsp`` (its own,
  from ``wait4``) on one small WAV (the interpreter and model baseline), on
  the 1 MB FLAC bomb alone (320 s at 384 kHz × 8 channels), and on the whole
  hostile corpus of ``tests/test_hostile.py``.
* writer: 3 reader processes call ``Store.vectors`` nonstop while one
  ``extract`` stores 14 files (one transaction per file, the worst case);
  prints reads/s per reader with and without the writer, and the writer's
  waits (``ExtractReport.write_waits``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import peak_rss  # noqa: E402
from core.extract import extract  # noqa: E402
from core.store import Store  # noqa: E402
from tests.conftest import tone_files  # noqa: E402
from tests.test_hostile import make_corpus, write_bomb  # noqa: E402
from tests.test_interruptions import READER  # noqa: E402


def bench_rss(tmp: Path) -> None:
    small = tone_files(tmp / "small", 1, 10.0)
    bomb_dir = tmp / "bomb"
    bomb_dir.mkdir()
    write_bomb(bomb_dir / "bomb.flac")
    corpus = tmp / "corpus"
    expect = make_corpus(corpus, bomb_dir / "bomb.flac")
    print(f"load before: {os.getloadavg()[0]:.1f}")
    print("| input | peak RSS | exit | seconds |\n|---|---|---|---|")
    for name, folder in (("one 10 s WAV (baseline)", small), ("the 1 MB FLAC bomb", bomb_dir),
                         (f"hostile corpus ({len(expect)} entries, bomb included)", corpus)):
        mb, code, seconds, _ = peak_rss(["-m", "core", "extract", str(folder), "--model", "dsp", "--db", str(tmp / f"{folder.name}.duckdb")])
        print(f"| {name} | {mb:,.0f} MB | {code} | {seconds:.1f} |")
    print(f"load after: {os.getloadavg()[0]:.1f}")


def bench_writer(tmp: Path) -> None:
    db = tmp / "w.duckdb"
    extract([tone_files(tmp / "base", 100, 9.0, first_hz=100.0, step_hz=7.0)], ["dsp"], db=db)
    more = tone_files(tmp / "more", 14, 5.0, first_hz=300.0, step_hz=40.0)
    print(f"load before: {os.getloadavg()[0]:.1f}; store: {Store(db).info()['segments']} segments of dsp")
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(db)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for _ in range(3)]
    for r in readers:
        r.stdout.readline()
    time.sleep(5)
    start = time.monotonic()
    report = extract([more], ["dsp"], db=db, batch_tracks=1)
    end = time.monotonic()
    time.sleep(2)
    for r in readers:
        r.kill()
    samples = [tuple(map(float, line.split())) for r in readers for line in r.communicate()[0].splitlines()]
    before = [rate for t, rate in samples if t < start]
    during = [rate for t, rate in samples if start + 1 <= t <= end]
    waits = report.write_waits
    print(f"extract: {report.stored} of 14 files stored, {len(report.failures)} failures, {end - start:.1f} s")
    print(f"writer: {waits['writes']} write connections waited {waits['total_s']:.2f} s in all, "
          f"{waits['total_s'] / max(waits['writes'], 1) * 1000:.0f} ms on average, {waits['max_s'] * 1000:.0f} ms at most")
    print(f"readers: {np.median(before):.1f} reads/s each before the extract, "
          f"{np.median(during) if during else float('nan'):.1f} during it (median of 1 s windows)")
    print(f"load after: {os.getloadavg()[0]:.1f}")


def main(what: str = "all") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if what in ("rss", "all"):
            bench_rss(Path(tmp))
        if what in ("writer", "all"):
            bench_writer(Path(tmp))


if __name__ == "__main__":
    main(*sys.argv[1:2])
