"""The pipeline with worker processes and cross-track batches: the same vectors as in one process, resumable, precise."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from core import cli
from core.extract import extract
from core.store import Store
from tests.conftest import PROJECT_ROOT, tone, tone_files
from tests.test_clap import _save_tiny_clap
from tests.test_mert import _save_tiny_mert


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-models")
    return _save_tiny_clap(folder / "clap"), _save_tiny_mert(folder / "mert")


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
