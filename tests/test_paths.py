"""File names that are not UTF-8: decoded like any other, stored as escaped text, and every way out gives the exact bytes."""

from __future__ import annotations

import io
import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from core import audio, cli, clips, explore
from core.exchange import export_parquet, import_parquet
from core.extract import extract
from core.paths import display, from_text, playlist_entry, to_text
from core.store import Store
from tests.conftest import tone

#: Latin-1 bytes (not UTF-8), a literal percent sign, and valid UTF-8 in one name.
RAW_NAME = b"caf\xe9 100% \xff\xfe \xc3\xbc.wav"


@pytest.mark.parametrize("raw", [RAW_NAME, b"plain.wav", b"100%FF.wav", b"\x80", b"%25\xff", "ü".encode()])
def test_to_text_and_back_is_the_exact_bytes(raw):
    text, escaped = to_text(os.fsdecode(raw))
    text.encode("utf-8")  # always valid UTF-8, so DuckDB, Arrow, JSON and CSV take it
    assert escaped == (b"\xff" in raw or b"\x80" in raw or b"\xe9" in raw)
    assert os.fsencode(from_text(text, escaped)) == raw


def test_a_literal_name_that_looks_escaped_is_another_file(tmp_path):
    """``100%FF.wav`` (valid UTF-8) and ``100\\xff.wav`` share the text ``100%FF.wav``: the flag tells them apart."""
    literal, raw = os.fsdecode(b"100%FF.wav"), os.fsdecode(b"100\xff.wav")
    assert to_text(raw) == ("100%FF.wav", True) and to_text(literal) == ("100%FF.wav", False)
    for name in (literal, raw):
        sf.write(os.fsencode(tmp_path / name), tone(440, 1.0), 22050)
    db = tmp_path / "x.duckdb"
    report = extract([tmp_path], ["dsp"], db=db)
    assert (report.stored, report.failures) == (2, [])
    tracks = Store(db).tracks_frame()
    assert sorted(zip(tracks["path"].str.rsplit("/", n=1).str[-1], tracks["path_escaped"])) == [
        ("100%FF.wav", False), ("100%FF.wav", True)]


def test_display_is_one_printable_line():
    assert display(os.fsdecode(b"/x/a\nb\xff.wav")) == "/x/a\\x0ab%FF.wav"


def test_a_name_that_is_not_utf8_round_trips_through_store_player_json_parquet_and_csv(tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    name = os.fsdecode(RAW_NAME)
    y = tone(330, 4.0, 22050)
    sf.write(os.fsencode(folder / name), y, 22050)
    exact = os.fsencode(folder / name)
    db = tmp_path / "x.duckdb"

    # opening: the folder walk and the decoder take the name as it is
    code = cli.main(["extract", str(folder), "--model", "dsp", "--db", str(db)])
    assert code == 0, capsys.readouterr().err
    store = Store(db)
    seg = store.segments_frame()
    assert seg["path_escaped"].all()
    stored = from_text(seg["path"].iloc[0], True)
    assert os.fsencode(stored) == exact
    # playing: the excerpt a player gets is the file's audio
    wav, sr = sf.read(io.BytesIO(audio.excerpt_wav(stored, 0.0, 1.0)), dtype="float32")
    assert sr == 22050 and abs(len(wav) - 22050) <= 1

    # JSON: search results carry the text and the flag
    capsys.readouterr()
    assert cli.main(["search", "--model", "dsp", "--audio", str(folder / name), "--db", str(db), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)[0]
    assert os.fsencode(from_text(best["path"], best["path_escaped"])) == exact

    # Parquet: export, then import into another store, and the track keeps the exact name
    out = tmp_path / "dsp.parquet"
    export_parquet(store, "dsp", out)
    frame = pq.read_table(out).to_pandas()
    assert os.fsencode(from_text(frame["path"].iloc[0], frame["path_escaped"].iloc[0])) == exact
    other = Store(tmp_path / "other.duckdb")
    import_parquet(other, out, "dsp")
    back = other.tracks_frame().iloc[0]
    assert os.fsencode(from_text(back["path"], back["path_escaped"])) == exact

    # CSV: the Explore selection export
    frame = explore.points_frame(store, seg["segment_id"].to_numpy()[:1])
    table = pd.read_csv(io.BytesIO(explore.to_csv_bytes(explore.selection_table(frame, [int(frame["id"].iloc[0])]))))
    assert os.fsencode(from_text(table["path"].iloc[0], bool(table["path_escaped"].iloc[0]))) == exact

    # a playlist names it as a file:// URI whose percent-encoding is the exact bytes
    line = playlist_entry(seg["path"].iloc[0], True)
    from urllib.parse import unquote_to_bytes

    assert line.startswith("file://") and unquote_to_bytes(line[len("file://"):]) == exact
    assert line in clips.m3u8(frame)
    assert b"%%%d%%%s,0.000," % (len(exact), exact) in clips.mpv_edl(frame)

    # and a rerun finds it stored: nothing to do
    assert extract([folder], ["dsp"], db=db).skipped == 1
