"""The pipeline and the command line: idempotent, resumable, and bad input never stops a batch."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import soundfile as sf

from core import audio as audio_io, cli
from core.extract import extract, read_metadata_csv
from core.store import Store
from tests.conftest import WatchedDsp, tone


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "a.wav", tone(220, 7.0), 22050)
    sf.write(d / "b.flac", tone(880, 2.0, 44100), 44100)
    sf.write(d / "c.ogg", tone(440, 4.0, 48000), 48000)
    return d


def run_cli(*args, capsys=None):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return code, out


def test_extract_is_idempotent_and_counts_match_the_grid(folder, tmp_path):
    db = tmp_path / "x.duckdb"
    r1 = extract([folder], ["dsp"], db=db)
    assert (r1.stored, r1.skipped, r1.failures) == (3, 0, [])
    r2 = extract([folder], ["dsp"], db=db)
    assert (r2.stored, r2.skipped) == (0, 3)
    # 7 s -> 0-3, 3-6 (tail of 1 s < 1.5 s dropped); 2 s -> one segment; 4 s -> 0-3 (tail 1 s dropped)
    assert Store(db).info()["segments"] == 4 and Store(db).info()["embeddings"] == {"dsp": 4}


def test_a_changed_file_replaces_its_rows(folder, tmp_path):
    db = tmp_path / "x.duckdb"
    extract([folder], ["dsp"], db=db)
    sf.write(folder / "a.wav", tone(220, 12.0), 22050)
    r = extract([folder], ["dsp"], db=db)
    assert (r.stored, r.skipped) == (1, 2)
    assert Store(db).info()["segments"] == 4 - 2 + 4


class InterruptAfter(WatchedDsp):
    """The real dsp adapter, with a Ctrl-C arriving while the n-th file is embedded."""

    def __init__(self, n):
        super().__init__()
        self.calls, self.n = 0, n

    def prepare(self, audio, sr, segments, offset_s=0.0):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.inner.embed(audio, sr, segments, offset_s)


class Recording(WatchedDsp):
    """The real dsp adapter, noting the mono mix it is handed; ``input_dtype`` as an entry may declare it."""

    def __init__(self, input_dtype=None):
        super().__init__()
        self.seen, self.offsets = [], []
        if input_dtype is not None:
            self.entry = dataclasses.replace(self.entry, input_dtype=np.dtype(input_dtype).name)

    def prepare(self, audio, sr, segments, offset_s=0.0):
        self.seen.append(audio.copy())
        self.offsets.append(offset_s)
        return self.inner.embed(audio.astype(np.float32), sr, segments, offset_s)


@pytest.mark.parametrize("dtype", [None, np.float64])
def test_adapters_get_the_mono_mix_in_the_dtype_they_declare(tmp_path, dtype):
    """float64 is the exact mean of the channels (what openl3 computes); float32 is it rounded once."""
    rng = np.random.default_rng(0)
    stereo = (rng.standard_normal((48000, 2)) * 0.3).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 48000, subtype="FLOAT")
    adapter = Recording(dtype)
    extract([tmp_path / "s.wav"], ["dsp"], db=tmp_path / "x.duckdb", adapters=[adapter])
    (mix,) = adapter.seen
    exact = stereo.astype(np.float64).mean(axis=1)
    if dtype is None:
        assert mix.dtype == np.float32
        np.testing.assert_array_equal(mix, stereo.mean(axis=1, dtype=np.float32))
    else:
        assert mix.dtype == np.float64
        np.testing.assert_array_equal(mix, exact)
        assert not np.array_equal(exact.astype(np.float32), exact)  # the bit a float32 mix would lose


def test_every_adapter_gets_the_place_of_each_block_in_the_track(tmp_path, monkeypatch):
    """Adapters that frame on the track's grid need it; the pipeline hands it to every adapter alike.

    Blocks of 6 s (instead of minutes) make a 20 s file come in several.
    """
    path = tmp_path / "long.wav"
    sf.write(path, tone(330, 20.0, sr=8000), 8000)
    small_blocks = functools.partial(audio_io.iter_blocks, block_samples=6 * 8000)
    monkeypatch.setattr(audio_io, "iter_blocks", small_blocks)
    adapter = Recording()
    extract([path], ["dsp"], db=tmp_path / "x.duckdb", adapters=[adapter])
    segments = audio_io.segment_grid(20.0, audio_io.DEFAULT_WINDOW_S, audio_io.DEFAULT_HOP_S)
    offsets = [b.offset_s for b in small_blocks(path, segments)]
    assert len(offsets) == 4 and offsets[1] > 0
    assert adapter.offsets == offsets


def test_an_interrupted_run_resumes_without_duplicates(folder, tmp_path):
    db = tmp_path / "x.duckdb"
    with pytest.raises(KeyboardInterrupt):
        extract([folder], ["dsp"], db=db, adapters=[InterruptAfter(3)], batch_tracks=1)
    assert Store(db).info()["tracks"] == 2  # finished tracks were kept
    r = extract([folder], ["dsp"], db=db)
    assert (r.stored, r.skipped) == (1, 2)
    info = Store(db).info()
    assert info["tracks"] == 3 and info["segments"] == 4 and info["embeddings"] == {"dsp": 4}


def make_bad_inputs(d):
    good = tone(440, 3.5)
    sf.write(d / "good.wav", good, 22050)
    full = d / "full.flac"
    sf.write(full, np.random.default_rng(0).uniform(-0.5, 0.5, 44100 * 3), 44100)
    (d / "truncated.flac").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    (d / "zero.wav").write_bytes(b"")
    (d / "text.wav").write_text("hello, I am not audio\n" * 20)
    sf.write(d / "tiny.wav", tone(440, 0.01), 22050)
    sf.write(d / "silent.wav", np.zeros(22050 * 2, np.float32), 22050)
    nan = tone(440, 1.0)
    nan[10:20] = np.nan
    sf.write(d / "nan.wav", nan, 22050, subtype="FLOAT")
    sf.write(d / "u8.wav", tone(300, 1.0, 8000), 8000, subtype="PCM_U8")
    sf.write(d / "alaw.wav", tone(300, 1.0, 8000), 8000, subtype="ALAW")
    sf.write(d / "odd_rate.wav", tone(300, 1.0, 22255), 22255)


def test_bad_input_gets_one_line_errors_and_the_batch_goes_on(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    make_bad_inputs(d)
    db = tmp_path / "x.duckdb"
    code, out = run_cli("extract", d, "--model", "dsp", "--db", db, capsys=capsys)
    assert code == 1
    reported = [line for line in out.err.splitlines() if line.startswith("  ") and "]: " in line]  # not the bar
    failed = {line.split(" [")[0].strip() for line in reported}
    assert failed == {str(d / n) for n in ("truncated.flac", "zero.wav", "text.wav", "nan.wav")}
    for line in reported:
        assert len(line.split("]: ", 1)[1]) < 100, line
    info = Store(db).info()
    assert info["tracks"] == 6 and info["failures"] == 4  # good, tiny, silent, u8, alaw, odd_rate
    tracks = Store(db).tracks_frame().set_index("path")
    assert tracks.loc[str(d / "odd_rate.wav"), "sample_rate"] == 22255
    ids, x = Store(db).vectors("dsp")
    assert np.isfinite(x).all()
    # nothing already stored is lost when a later batch has failures
    code, _ = run_cli("extract", d, "--model", "dsp", "--db", db, capsys=capsys)
    assert code == 1 and Store(db).info()["tracks"] == 6


def test_cli_json_shapes_and_exit_codes(folder, tmp_path, capsys):
    db = tmp_path / "x.duckdb"
    csv = folder / "meta.csv"
    csv.write_text("path,genre,bpm,duration_s\na.wav,rock,120,1\nb.flac,jazz,90.5,2\nc.ogg,jazz,,3\n")
    code, _ = run_cli("extract", folder, "--model", "dsp", "--db", db, "--metadata", csv, capsys=capsys)
    assert code == 0
    code, out = run_cli("info", "--db", db, "--json", capsys=capsys)
    info = json.loads(out.out)
    assert code == 0 and {k: info[k] for k in ("tracks", "segments", "embeddings", "failures", "missing_files")} == {
        "tracks": 3, "segments": 4, "embeddings": {"dsp": 4}, "failures": 0, "missing_files": 0}
    seg = Store(db).segments_frame()
    assert seg["bpm"].dropna().tolist() == [120.0, 120.0, 90.5] and seg["genre"].tolist()[0] == "rock"
    assert (seg["track_duration_s"] > 1.5).all()  # the CSV's duration_s did not overwrite the attribute
    code, out = run_cli("models", "--json", capsys=capsys)
    models = json.loads(out.out)
    assert code == 0 and {"key": "dsp", "dim": 128, "available": True, "reason": ""}.items() <= models[0].items()
    code, out = run_cli("project", "--model", "dsp", "--method", "pca", "--db", db, "--json", capsys=capsys)
    proj = json.loads(out.out)
    assert code == 0 and proj["n"] == 4 and proj["method"] == "pca" and 0 <= proj["trustworthiness"] <= 1
    code, out = run_cli("export", "--model", "dsp", "--db", db, "--out", tmp_path / "d.parquet", capsys=capsys)
    assert code == 0 and (tmp_path / "d.parquet").is_file()
    # exit code 2 with a one-line reason: unknown model, grid mismatch, missing db, bad usage
    for args in (["extract", folder, "--model", "nope", "--db", db],
                 ["extract", folder, "--model", "dsp", "--db", db, "--segment", "5"],
                 ["info", "--db", tmp_path / "missing.duckdb"],
                 ["project", "--model", "nope", "--method", "pca", "--db", db],
                 ["extract", folder]):
        code, out = run_cli(*args, capsys=capsys)
        assert code == 2, args
        assert out.err.strip() and len(out.err.strip().splitlines()) <= 3, out.err


def test_metadata_csv_typing(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("path,n,x,label\na.wav,1,1.5,cat\nb.wav,2,,dog\nc.wav,3,2,7\n")
    md = read_metadata_csv(csv, [tmp_path])
    a, b, c = (md[str((tmp_path / n).resolve())] for n in ("a.wav", "b.wav", "c.wav"))
    assert a == {"n": 1, "x": 1.5, "label": "cat"} and b == {"n": 2, "label": "dog"} and c["label"] == "7"


class Misbehaving(WatchedDsp):
    """The real dsp adapter, except on chosen files: out of memory, or rows of the wrong shape."""

    def prepare(self, audio, sr, segments, offset_s=0.0):
        if sr == 16000:
            raise MemoryError("Unable to allocate 2.73 PiB for an array with shape (4, 98, 2) and data type float64")
        out = self.inner.embed(audio, sr, segments, offset_s)
        return {k: v[:, :7] for k, v in out.items()} if sr == 8000 else out


def test_one_files_exception_is_that_files_failure_and_the_batch_goes_on(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    sf.write(d / "a.wav", tone(220, 4.0), 22050)
    sf.write(d / "oom.wav", tone(220, 4.0, 16000), 16000)
    sf.write(d / "shape.wav", tone(220, 4.0, 8000), 8000)
    sf.write(d / "z.wav", tone(330, 4.0), 22050)
    report = extract([d], ["dsp"], db=tmp_path / "x.duckdb", adapters=[Misbehaving()])
    assert report.stored == 2 and report.files == 4
    reasons = {f.path.rsplit("/", 1)[-1]: f.message for f in report.failures}
    assert set(reasons) == {"oom.wav", "shape.wav"}
    assert reasons["oom.wav"].startswith("not enough memory for this file (Unable to allocate 2.73 PiB")
    assert reasons["shape.wav"] == "returned shape (1, 7), expected (1, 128)"
    assert Store(tmp_path / "x.duckdb").info()["failures"] == 2


def test_metadata_rows_matched_are_reported(folder, tmp_path, capsys):
    db = tmp_path / "x.duckdb"
    csv = folder / "meta.csv"
    csv.write_text("path,genre\na.wav,rock\nb.flac,jazz\nmissing.wav,pop\n")
    code, out = run_cli("extract", folder, "--model", "dsp", "--db", db, "--metadata", csv, capsys=capsys)
    assert code == 0 and "metadata: 2 of 3 rows of meta.csv matched a file found." in out.err
    assert "warning" not in out.err
    csv.write_text("path,genre\nelsewhere/a.wav,rock\n")
    code, out = run_cli("extract", folder, "--model", "dsp", "--db", db, "--metadata", csv, capsys=capsys)
    assert code == 0 and "metadata: 0 of 1 rows" in out.err and "warning: no metadata row matched" in out.err
