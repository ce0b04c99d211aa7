"""Every command answers bad usage or unusable input with exit code 2 and one line on stderr, never a traceback."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from core import cli
from core.extract import extract
from core.store import Store
from tests.conftest import tone_files


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A store with a few dsp vectors, and the odd files the cases point at."""
    d = tmp_path_factory.mktemp("cli")
    audio = tone_files(d / "audio", 4, 7.0, step_hz=100.0)
    db = d / "s.duckdb"
    assert not extract([audio], ["dsp"], db=db).failures
    data = db.read_bytes()
    (d / "half.duckdb").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[4096::4096] = bytes(b ^ 0x10 for b in flipped[4096::4096])
    (d / "flipped.duckdb").write_bytes(bytes(flipped))
    import duckdb

    with duckdb.connect(str(d / "foreign.duckdb")) as con:
        con.execute("CREATE TABLE mine (x INTEGER)")
    (d / "text.csv").write_text("path,label\n0.wav,a\n")
    (d / "nopath.csv").write_text("file,label\n0.wav,a\n")
    (d / "binary.csv").write_bytes(b"\xff\xfe\x00\x01garbage")
    (d / "notaudio.wav").write_text("hello")
    (d / "out").mkdir()
    with sf.SoundFile(d / "three_hours.flac", "w", samplerate=8000, channels=1, format="FLAC") as fh:
        block = np.zeros(8000 * 600, np.int16)
        for _ in range(18):
            fh.write(block)

    def parquet(name, vectors, **columns):
        n = len(vectors)
        table = {"path": [str(audio / "0.wav")] * n, "start_s": [0.0] * n, "end_s": [3.0] * n, **columns}
        table["vector"] = pa.array(vectors) if isinstance(vectors, list) else pa.FixedSizeListArray.from_arrays(
            pa.array(np.asarray(vectors, np.float32).reshape(-1)), np.asarray(vectors).shape[1])
        pq.write_table(pa.table(table), d / name)

    parquet("nan.parquet", np.array([[0.1] * 128, [np.nan] * 128]))
    parquet("ragged.parquet", [[0.1] * 128, [0.2] * 127])
    parquet("holes.parquet", [[0.1] * 128, None])
    parquet("wide.parquet", np.ones((2, 7)))
    parquet("ok.parquet", np.ones((2, 128)))
    pq.write_table(pa.table({"path": ["x"], "vector": [[1.0]]}), d / "nocolumns.parquet")
    parquet("backwards.parquet", np.ones((1, 128)))
    table = pq.read_table(d / "backwards.parquet")
    pq.write_table(table.set_column(2, "end_s", pa.array([-1.0])), d / "backwards.parquet")
    return d


CASES = {
    # corrupted stores
    "info on a store cut in half": ["info", "--db", "{d}/half.duckdb"],
    "info on a store with flipped bits": ["info", "--db", "{d}/flipped.duckdb"],
    "search on a store with flipped bits": ["search", "--model", "dsp", "--audio", "{d}/audio/0.wav",
                                            "--db", "{d}/flipped.duckdb"],
    "a DuckDB file that is not a store": ["info", "--db", "{d}/foreign.duckdb"],
    "a text file as the store": ["info", "--db", "{d}/text.csv"],
    "a folder as the store": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/out"],
    "a missing store": ["metrics", "--model", "dsp", "--db", "{d}/missing.duckdb"],
    # grids
    "--segment 0": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb", "--segment", "0"],
    "--segment -1": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb", "--segment", "-1"],
    "--segment nan": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb", "--segment", "nan"],
    "--segment inf": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb", "--segment", "inf"],
    "--hop 0": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb", "--hop", "0"],
    "--hop 0.0001 on a 3-hour file": ["extract", "{d}/three_hours.flac", "--model", "dsp", "--db", "{d}/new.duckdb",
                                      "--hop", "0.0001"],
    "another grid than the store's": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/s.duckdb", "--segment", "5"],
    "--segment not a number": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb", "--segment", "x"],
    # budgets and k
    "--max-samples 0": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb", "--max-samples", "0"],
    "--max-samples not a number": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb",
                                   "--max-samples", "lots"],
    "metrics -k 1000000000": ["metrics", "--model", "dsp", "-k", "1000000000", "--db", "{d}/s.duckdb"],
    "metrics -k 0": ["metrics", "--model", "dsp", "-k", "0", "--db", "{d}/s.duckdb"],
    "project --fit-sample 2": ["project", "--model", "dsp", "--method", "tsne", "--fit-sample", "2", "--db", "{d}/s.duckdb"],
    "project --sample-above not a number": ["project", "--model", "dsp", "--method", "umap", "--sample-above", "many",
                                            "--db", "{d}/s.duckdb"],
    "search -k -1": ["search", "--model", "dsp", "--audio", "{d}/audio/0.wav", "-k", "-1", "--db", "{d}/s.duckdb"],
    # paths
    "extract a path that does not exist": ["extract", "{d}/nowhere", "--model", "dsp", "--db", "{d}/new.duckdb"],
    "export --out a folder": ["export", "--model", "dsp", "--db", "{d}/s.duckdb", "--out", "{d}/out"],
    "export --out into a missing folder": ["export", "--model", "dsp", "--db", "{d}/s.duckdb", "--out", "{d}/no/x.parquet"],
    "export an unknown model": ["export", "--model", "nope", "--db", "{d}/s.duckdb", "--out", "{d}/out/x.parquet"],
    "search --audio that is not audio": ["search", "--model", "dsp", "--audio", "{d}/notaudio.wav", "--db", "{d}/s.duckdb"],
    "search --audio that does not exist": ["search", "--model", "dsp", "--audio", "{d}/none.wav", "--db", "{d}/s.duckdb"],
    "search --text on an audio-only model": ["search", "--model", "dsp", "--text", "a dog", "--db", "{d}/s.duckdb"],
    # metadata CSV
    "--metadata /nonexistent.csv": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb",
                                    "--metadata", "/nonexistent.csv"],
    "--metadata a folder": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb", "--metadata", "{d}/out"],
    "--metadata without a path column": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb",
                                         "--metadata", "{d}/nopath.csv"],
    "--metadata that is not text": ["extract", "{d}/audio", "--model", "dsp", "--db", "{d}/new.duckdb",
                                    "--metadata", "{d}/binary.csv"],
    # imports
    "import a file that is not Parquet": ["import", "{d}/text.csv", "--model", "mine", "--db", "{d}/s.duckdb"],
    "import NaN vectors": ["import", "{d}/nan.parquet", "--model", "mine", "--db", "{d}/s.duckdb"],
    "import ragged vectors": ["import", "{d}/ragged.parquet", "--model", "mine", "--db", "{d}/s.duckdb"],
    "import a missing vector": ["import", "{d}/holes.parquet", "--model", "mine", "--db", "{d}/s.duckdb"],
    "import without the segment columns": ["import", "{d}/nocolumns.parquet", "--model", "mine", "--db", "{d}/s.duckdb"],
    "import a segment that ends before it starts": ["import", "{d}/backwards.parquet", "--model", "mine",
                                                    "--db", "{d}/s.duckdb"],
    "import another dimension into a space": ["import", "{d}/wide.parquet", "--model", "dsp", "--db", "{d}/s.duckdb"],
    "import over extracted vectors without --replace": ["import", "{d}/ok.parquet", "--model", "dsp",
                                                        "--db", "{d}/s.duckdb"],
    # usage
    "no command": [],
    "an unknown command": ["frobnicate"],
    "an unknown model": ["extract", "{d}/audio", "--model", "nope", "--db", "{d}/new.duckdb"],
    "an unknown option": ["info", "--colour"],
}


@pytest.mark.parametrize("case", CASES)
def test_bad_usage_and_unusable_input_exit_2_with_one_line(place, case, capsys):
    before = Store(place / "s.duckdb").vectors("dsp")
    code = cli.main([a.format(d=place) for a in CASES[case]])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(("error:", "usage:")), err
    after = Store(place / "s.duckdb").vectors("dsp")  # nothing already stored is lost
    np.testing.assert_array_equal(before[1], after[1])
    assert not (place / "new.duckdb").exists()  # refused before anything was written


def test_a_bad_budget_in_the_environment_is_one_line(place, capsys, monkeypatch):
    monkeypatch.setenv("AEB_MAX_SAMPLES", "a lot")
    code = cli.main(["extract", str(place / "audio"), "--model", "dsp", "--db", str(place / "new.duckdb")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "AEB_MAX_SAMPLES" in err, err
