"""Destructive commands killed mid-way leave the previous vectors intact; readers running nonstop never starve a writer."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.extract import extract
from core.store import Store
from tests.conftest import PROJECT_ROOT, WatchedDsp, tone_files


class NewVersion(WatchedDsp):
    """The real dsp adapter under a new adapter version, with its vectors negated so that old and new differ."""

    def __init__(self, pause_s: float = 0.0):
        super().__init__()
        self.pause_s, self.version = pause_s, "2"

    def prepare(self, audio, sr, segments, offset_s=0.0):
        out = {space: -rows for space, rows in self.inner.embed(audio, sr, segments, offset_s).items()}
        print("embedded", flush=True)
        time.sleep(self.pause_s)
        return out


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A store holding dsp vectors of eight files."""
    d = tmp_path_factory.mktemp("interrupt")
    folder = tone_files(d / "audio", 8, 6.0, first_hz=150.0)
    db = d / "s.duckdb"
    assert extract([folder], ["dsp"], db=db).stored == 8
    return folder, db


def writer_inside(db) -> bool:
    """Whether a writer holds the store's writer-intent lock (it is about to write, or writing)."""
    try:
        fd = os.open(f"{db}.writer", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def kill_when_writing(args: list[str], db, delay_s: float | None) -> float:
    """Run the CLI; ``delay_s`` after its write transaction begins, kill -9 it.

    With ``delay_s=None`` it runs to the end; returns how long it held the
    writer's lock (its transaction, from connecting to closing).
    """
    proc = subprocess.Popen([sys.executable, "-m", "core", *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not writer_inside(db):
        assert proc.poll() is None, "the command ended before it wrote"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    started = time.monotonic()
    if delay_s is None:
        while writer_inside(db):
            time.sleep(0.001)
        held = time.monotonic() - started
        assert proc.wait(timeout=300) == 0
        return held
    else:
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    return time.monotonic() - started


@pytest.mark.slow
def test_an_import_killed_mid_way_leaves_the_extracted_vectors_intact(extracted, tmp_path):
    folder, db = extracted
    ids, before = Store(db).vectors("dsp")
    # 20,000 segments of the stored tracks: a transaction of seconds, long enough to be killed inside
    n = 20_000
    paths = [str(folder / f"{i % 8}.wav") for i in range(n)]
    starts = np.repeat(np.arange(n // 8 + 1) * 0.05, 8)[:n]
    vectors = np.random.default_rng(0).normal(size=(n, 128)).astype(np.float32)
    pq.write_table(pa.table({"path": paths, "start_s": starts, "end_s": starts + 3.0,
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 128)}),
                   tmp_path / "big.parquet")
    args = ["import", str(tmp_path / "big.parquet"), "--model", "dsp", "--replace"]
    clean = tmp_path / "clean.duckdb"
    shutil.copy(db, clean)
    writing_s = kill_when_writing([*args, "--db", str(clean)], clean, None)
    assert Store(clean).info()["embeddings"] == {"dsp": n}  # the import itself works
    for fraction in (0.05, 0.25, 0.5):  # of a clean run's transaction: a margin for the machine's load
        copy = tmp_path / f"killed-{fraction}.duckdb"
        shutil.copy(db, copy)
        kill_when_writing([*args, "--db", str(copy)], copy, fraction * writing_s)
        store = Store(copy)  # opens, replaying what DuckDB's log holds
        kept_ids, kept = store.vectors("dsp")
        assert kept_ids.tolist() == ids.tolist() and np.array_equal(kept, before), fraction
        assert store.space("dsp")["source"] == "extracted"


@pytest.mark.slow
def test_a_re_extraction_killed_mid_way_keeps_the_old_vectors_and_resumes(extracted, tmp_path):
    folder, original = extracted
    db = tmp_path / "s.duckdb"
    shutil.copy(original, db)
    ids, before = Store(db).vectors("dsp")
    script = (
        "import sys; from tests.test_interruptions import NewVersion; from core.extract import extract; "
        "extract([sys.argv[1]], ['dsp'], db=sys.argv[2], adapters=[NewVersion(pause_s=0.5)], batch_tracks=1)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder), str(db)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    # killed once three files are written: the writer thread stores a file while the next one is embedded
    deadline = time.monotonic() + 120
    while True:  # the first file is embedded into the staging table, made before it
        assert proc.stdout.readline().strip() == "embedded" and time.monotonic() < deadline
        if len(Store(db).tracks_with_space("dsp")) >= 3:
            break
    assert proc.poll() is None, "the re-extraction ended before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    store = Store(db)
    kept_ids, kept = store.vectors("dsp")
    assert kept_ids.tolist() == ids.tolist() and np.array_equal(kept, before)
    assert store.space("dsp")["adapter_version"] == "1"
    assert len(store.tracks_with_space("dsp")) >= 3  # the staged re-extraction got that far

    report = extract([folder], ["dsp"], db=db, adapters=[NewVersion()], batch_tracks=1)
    assert report.skipped >= 3 and report.stored + report.skipped == 8 and not report.failures
    new_ids, after = store.vectors("dsp")
    assert store.space("dsp")["adapter_version"] == "2"
    assert new_ids.tolist() == ids.tolist() and np.array_equal(after, -before)


#: A process that reads a store's dsp vectors nonstop, printing "TIME READS_PER_S" about once a second.
READER = """
import sys, time
from core.store import Store
store, reads, last = Store(sys.argv[1]), 0, time.monotonic()
print("reading", flush=True)
while True:
    store.vectors("dsp")
    reads += 1
    if time.monotonic() - last >= 1:
        print(f"{time.monotonic():.3f} {reads / (time.monotonic() - last):.2f}", flush=True)
        reads, last = 0, time.monotonic()
"""


@pytest.mark.slow
def test_an_extract_stores_every_file_while_three_readers_read_nonstop(extracted, tmp_path):
    _, original = extracted
    db = tmp_path / "s.duckdb"
    shutil.copy(original, db)
    folder = tone_files(tmp_path / "more", 14, 5.0, first_hz=300.0, step_hz=40.0)
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(db)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                text=True) for _ in range(3)]
    try:
        for r in readers:
            assert r.stdout.readline().strip() == "reading"
        time.sleep(2.0)
        assert all(r.poll() is None for r in readers)
        report = extract([folder], ["dsp"], db=db, batch_tracks=1)
        assert all(r.poll() is None for r in readers)  # they kept reading all along
    finally:
        for r in readers:
            r.kill()
        rates = [float(line.split()[1]) for r in readers for line in r.communicate()[0].splitlines()]
    assert (report.stored, report.failures) == (14, [])
    assert Store(db).info()["tracks"] == 8 + 14
    waits = report.write_waits
    print(f"writer: {waits['writes']} writes waited {waits['total_s']:.2f} s in all, {waits['max_s']:.3f} s at most; "
          f"readers: {np.median(rates) if rates else 0:.0f} reads/s each (median)")
    assert waits["writes"] >= 14 and waits["max_s"] < 10.0
    assert rates and min(rates) > 0
