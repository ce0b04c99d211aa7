"""The pipeline with worker processes and cross-track batches: the same vectors as in one process, resumable, precise."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from core import cli
from core.extract import WORKER_DIED, extract
from core.store import Store
from core.workers import deaths_raised_by_next
from tests.conftest import PROJECT_ROOT, WatchedDsp, tone, tone_files
from tests.test_clap import _save_tiny_clap
from tests.conftest import save_tiny_mert


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-models")
    return _save_tiny_clap(folder / "clap"), save_tiny_mert(folder / "mert")


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Rates, channels and lengths that give ragged CLAP chunks and MERT passes of several lengths."""
    d = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(1)
    for i, (seconds, sr) in enumerate([(7.0, 22050), (2.0, 44100), (4.6, 48000), (11.0, 16000), (1.2, 8000),
                                       (9.5, 44100), (3.0, 22050)]):
        y = tone(150 + 90 * i, seconds, sr) + 0.02 * rng.standard_normal(int(round(seconds * sr))).astype(np.float32)
        sf.write(d / f"{i}.wav", np.stack([y, 0.5 * y], axis=1) if i % 2 else y, sr)
    return d


def _stored(db) -> dict[str, tuple[list, np.ndarray]]:
    store = Store(db)
    segments = store.segments_frame(with_metadata=False).set_index("segment_id")
    out = {}
    for space in store.spaces()["space"]:
        ids, x = store.vectors(space)
        keys = [(segments.loc[i, "path"], segments.loc[i, "start_s"]) for i in ids]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        out[space] = ([keys[i] for i in order], x[order])
    return out


def test_workers_and_batches_give_the_vectors_of_one_process(tiny_models, mixed_folder, tmp_path, capsys):
    clap_dir, mert_dir = tiny_models
    models = ["--model", "dsp", "--model", f"clap:{clap_dir}", "--model", f"mert:{mert_dir}"]
    results = {}
    for workers, batch in (("0", "1"), ("2", "3")):
        db = tmp_path / f"w{workers}.duckdb"
        code = cli.main(["extract", str(mixed_folder), *models, "--db", str(db), "--device", "cpu",
                         "--workers", workers, "--batch-size", batch])
        assert code == 0, capsys.readouterr().err
        results[workers] = _stored(db)
    assert set(results["0"]) == set(results["2"]) == {"dsp", f"clap:{clap_dir}", f"mert:{mert_dir}"}
    for space, (keys, x) in results["0"].items():
        keys2, x2 = results["2"][space]
        assert keys == keys2 and len(keys) == Store(tmp_path / "w0.duckdb").info()["segments"]
        np.testing.assert_allclose(x2, x, rtol=0, atol=1e-5 * np.abs(x).max(), err_msg=space)


def test_bad_worker_batch_and_precision_settings_are_one_line_refusals(mixed_folder, tmp_path, capsys):
    for args in (["--workers", "-1"], ["--batch-size", "0"], ["--precision", "fp16"]):
        code = cli.main(["extract", str(mixed_folder), "--model", "dsp", "--db", str(tmp_path / "x.duckdb"), *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, (args, err)
    assert not (tmp_path / "x.duckdb").exists()


class FailsAt16k(WatchedDsp):
    """The real dsp adapter, whose CPU stage runs out of memory on 16 kHz files (in the worker, with workers)."""

    def prepare(self, audio, sr, segments, offset_s=0.0):
        if sr == 16000:
            raise MemoryError("Unable to allocate 2.73 PiB for an array with shape (4, 98, 2) and data type float64")
        return self.inner.embed(audio, sr, segments, offset_s)


def test_workers_keep_every_entry_a_track_or_one_failure(tmp_path):
    """Hostile entries, a file over the decode budget and a CPU stage that raises: the same outcome in workers."""
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "mono.wav", tone(220, 4.0), 22050)  # 88,200 sample values
    sf.write(d / "stereo.wav", np.stack([tone(330, 2.0)] * 2, axis=1), 22050)  # 88,200
    sf.write(d / "over_budget.wav", np.stack([tone(440, 3.0)] * 2, axis=1), 22050)  # 132,300
    sf.write(d / "oom.wav", tone(220, 4.0, 16000), 16000)
    nan = tone(550, 4.0)
    nan[100:110] = np.nan
    sf.write(d / "nan.wav", nan, 22050, subtype="FLOAT")
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_bytes(b"not audio at all\n" * 50)
    os.symlink("nowhere.wav", d / "dangling.wav")
    os.mkfifo(d / "fifo.wav")
    expected = {"over_budget.wav": "exceed the limit", "oom.wav": "not enough memory for this file",
                "nan.wav": "NaN or infinite", "empty.wav": "empty file", "text.wav": "not a readable audio file",
                "dangling.wav": "broken symbolic link", "fifo.wav": "named pipe"}
    vectors = {}
    for workers in (0, 2):
        db = tmp_path / f"w{workers}.duckdb"
        report = extract([d], ["dsp"], db=db, adapters=[FailsAt16k()], workers=workers, max_samples=100_000)
        reasons = {f.path.rsplit("/", 1)[-1]: f.message for f in report.failures}
        assert report.files == 9 and report.stored == 2 and len(report.failures) == len(reasons) == 7, workers
        for name, reason in expected.items():
            assert reason in reasons[name] and "\n" not in reasons[name], (workers, name, reasons[name])
        store = Store(db)
        assert sorted(p.rsplit("/", 1)[-1] for p in store.tracks_frame()["path"]) == ["mono.wav", "stereo.wav"]
        assert store.info()["failures"] == 7
        vectors[workers] = _stored(db)["dsp"]  # rows by (path, start): workers finish files in any order
    assert vectors[2][0] == vectors[0][0]
    np.testing.assert_array_equal(vectors[2][1], vectors[0][1])


def test_items_that_cannot_reach_the_device_fail_their_file_only(aisfx_adapter, tmp_path, monkeypatch):
    """The copy of a part to the device can run out of its memory: that model fails on that file, the run goes on."""
    from core.batcher import Batcher

    folder = tone_files(tmp_path / "audio", 3, 3.5)
    add = Batcher.add

    def add_or_run_out(self, ticket, positions, inputs, lengths):
        if ticket.order.index == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 32.00 MiB\n(more lines)")
        return add(self, ticket, positions, inputs, lengths)

    monkeypatch.setattr(Batcher, "add", add_or_run_out)
    report = extract([folder], ["aisfx"], db=tmp_path / "x.duckdb", adapters=[aisfx_adapter])
    assert report.stored == 2 and [(f.path.rsplit("/", 1)[-1], f.model) for f in report.failures] == [("1.wav", "aisfx")]
    assert report.failures[0].message == "RuntimeError: CUDA out of memory. Tried to allocate 32.00 MiB"


class KilledAt16k(WatchedDsp):
    """The real dsp adapter, whose worker process is killed (as by the kernel's out-of-memory killer) on 16 kHz files."""

    def prepare(self, audio, sr, segments, offset_s=0.0):
        if sr == 16000 and multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.embed(audio, sr, segments, offset_s)


@pytest.mark.slow
def test_a_killed_worker_fails_the_files_in_flight_and_the_run_goes_on(tmp_path):
    folder = tone_files(tmp_path / "audio", 8, 3.5)
    sf.write(folder / "3.wav", tone(500, 3.5, 16000), 16000)
    db = tmp_path / "x.duckdb"
    report = extract([folder], ["dsp"], db=db, adapters=[KilledAt16k()], workers=2, batch_tracks=1)
    failed = {f.path.rsplit("/", 1)[-1]: f.message for f in report.failures}
    # the killed worker's file, and those begun whose messages were still queued; new workers took the rest
    assert "3.wav" in failed and len(failed) < 8 and set(failed.values()) == {WORKER_DIED}
    assert report.files == 8 and report.stored == 8 - len(failed) == Store(db).info()["tracks"]
    assert not multiprocessing.active_children()  # the dead loader's workers are gone too

    again = extract([folder], ["dsp"], db=db, adapters=[KilledAt16k()], workers=0)  # no worker to kill
    assert again.stored == len(failed) and again.skipped == 8 - len(failed) and not again.failures
    assert Store(db).info()["segments"] == 8


#: Extracts with two workers and one track per transaction, printing a line per finished file.
EXTRACT = (
    "import sys; from core.extract import extract; "
    "extract([sys.argv[1]], ['dsp', 'mert:' + sys.argv[3]], db=sys.argv[2], workers=2, batch_size=4, device='cpu', "
    "batch_tracks=1, progress=lambda d, n, p: print('done', flush=True))"
)


@pytest.mark.slow
def test_a_killed_multi_worker_run_resumes_without_loss_or_duplicates(tiny_models, tmp_path):
    _, mert_dir = tiny_models
    folder = tone_files(tmp_path / "audio", 24, 4.0)
    clean = tmp_path / "clean.duckdb"
    assert extract([folder], ["dsp", f"mert:{mert_dir}"], db=clean, device="cpu").stored == 24
    db = tmp_path / "killed.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", EXTRACT, str(folder), str(db), str(mert_dir)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for _ in range(8):
        assert proc.stdout.readline().strip() == "done"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    kept = Store(db).info()
    assert 0 < kept["tracks"] < 24 and kept["segments"] == kept["tracks"]  # whole tracks only, each once

    report = extract([folder], ["dsp", f"mert:{mert_dir}"], db=db, device="cpu", workers=2)
    assert report.skipped == kept["tracks"] and report.stored == 24 - kept["tracks"] and not report.failures
    assert Store(db).info()["segments"] == Store(clean).info()["segments"] == 24
    resumed, expected = _stored(db), _stored(clean)
    for space, (keys, x) in expected.items():
        assert resumed[space][0] == keys
        np.testing.assert_allclose(resumed[space][1], x, rtol=0, atol=1e-5 * np.abs(x).max())


def test_bf16_vectors_replace_fp32_ones_under_their_own_provenance(aisfx_adapter, tmp_path):
    folder = tone_files(tmp_path / "audio", 2, 3.5)
    db = tmp_path / "x.duckdb"
    fp32 = extract([folder], ["aisfx"], db=db, adapters=[aisfx_adapter])
    assert fp32.precisions == {"aisfx": "fp32"} and Store(db).space("aisfx")["adapter_version"] == "2"
    _, before = Store(db).vectors("aisfx")
    again = extract([folder], ["aisfx"], db=db, adapters=[aisfx_adapter], precision="bf16")
    assert again.precisions == {"aisfx": "bf16"} and again.replaced_spaces == ["aisfx"] and again.stored == 2
    assert Store(db).space("aisfx")["adapter_version"] == "2+bf16"
    _, after = Store(db).vectors("aisfx")
    cosine = (before * after).sum(1) / np.linalg.norm(before, axis=1) / np.linalg.norm(after, axis=1)
    assert not np.array_equal(before, after) and cosine.min() >= 0.999


def test_a_dead_worker_is_reported_by_the_loaders_next_not_wherever_the_pipeline_is():
    """torch's SIGCHLD handler raised inside the hand-over of a finished track, which lost it."""
    def torch_like(signum, frame):
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Killed.")

    before = signal.signal(signal.SIGCHLD, torch_like)
    try:
        with deaths_raised_by_next():
            os.kill(os.getpid(), signal.SIGCHLD)  # a worker exits mid-pipeline: nothing is raised here
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGCHLD) is torch_like
    finally:
        signal.signal(signal.SIGCHLD, before)
