"""Segment-accurate exports: clips, playlists, EDL, label and region lists, and ``export --clips``."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from core import cli
from core.clips import (SEGMENTS_CSV, audacity_labels, clips_zip, m3u8, match_ids, mpv_edl, reaper_regions,
                        write_clips)
from core.errors import BadInput
from core.extract import extract
from core.store import Store
from tests.conftest import tone


@pytest.fixture
def rows(tmp_path) -> pd.DataFrame:
    """Two segments of a 7 s file (the second cut short by its end), one of a file whose name holds a comma."""
    a, b = tmp_path / "a.wav", tmp_path / "b, c.wav"
    sf.write(a, tone(440, 7.0), 22050)
    sf.write(b, tone(220, 3.0, sr=16000), 16000)
    return pd.DataFrame({"path": [str(a), str(a), str(b)], "path_escaped": [False] * 3, "start_s": [0.0, 6.0, 0.0],
                         "end_s": [3.0, 9.0, 3.0], "family": ["x", "y", "z"], "segment_id": [1, 3, 4]})


def test_zip_holds_each_clip_with_its_duration_and_a_table(rows, tmp_path):
    archive = zipfile.ZipFile(io.BytesIO(clips_zip(rows)))
    names = archive.namelist()
    assert names == ["0001_a_0.00-3.00.wav", "0002_a_6.00-9.00.wav", "0003_b_c_0.00-3.00.wav", SEGMENTS_CSV]
    durations = [sf.info(io.BytesIO(archive.read(n))).duration for n in names[:3]]
    assert durations == pytest.approx([3.0, 1.0, 3.0])  # the second ends with its file
    table = pd.read_csv(io.BytesIO(archive.read(SEGMENTS_CSV)))
    assert table["clip"].tolist() == names[:3] and table["duration_s"].tolist() == pytest.approx([3.0, 1.0, 3.0])
    assert table["family"].tolist() == ["x", "y", "z"] and "segment_id" not in table
    y, sr = sf.read(io.BytesIO(archive.read(names[0])))
    original, _ = sf.read(rows["path"][0], frames=3 * 22050)
    assert sr == 22050 and np.allclose(y, original, atol=1e-4)  # the segment itself, not a re-encoding


def test_unreadable_files_are_listed_and_the_rest_written(rows, tmp_path):
    broken = pd.concat([rows, rows.iloc[:1].assign(path=str(tmp_path / "gone.wav"))], ignore_index=True)
    written, failures = write_clips(broken, tmp_path / "out")
    assert written == 3 and len(failures) == 1 and "gone.wav" in failures[0]
    table = pd.read_csv(tmp_path / "out" / SEGMENTS_CSV)
    assert len(table) == 4 and table["error"].notna().sum() == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.wav")) == table["clip"].dropna().sort_values().tolist()


def test_playlists_play_only_the_segments(rows):
    lines = m3u8(rows).splitlines()
    assert lines[0] == "#EXTM3U" and lines[1] == "#EXTINF:3,a.wav 0.00-3.00 s"
    assert lines[2:5] == ["#EXTVLCOPT:start-time=0.000", "#EXTVLCOPT:stop-time=3.000", rows["path"][0]]
    assert lines[6:8] == ["#EXTVLCOPT:start-time=6.000", "#EXTVLCOPT:stop-time=9.000"]
    edl = mpv_edl(rows).decode().splitlines()
    b = rows["path"][2]
    assert edl[0] == "# mpv EDL v0" and edl[3] == f"%{len(b.encode())}%{b},0.000,3.000"  # the comma is safe
    assert edl[2].endswith(",6.000,3.000")


def test_label_and_region_lists_hold_one_tracks_segments(rows):
    one = rows.iloc[[1, 0]]
    assert audacity_labels(one, "family") == "0.000000\t3.000000\tx\n6.000000\t9.000000\ty\n"
    regions = pd.read_csv(io.StringIO(reaper_regions(one)))
    assert list(regions.columns) == ["#", "Name", "Start", "End", "Length"]
    assert regions["#"].tolist() == ["R1", "R2"] and regions["Length"].tolist() == [3.0, 3.0]
    assert regions["Name"][0] == "a.wav 0.00-3.00 s"
    with pytest.raises(BadInput, match="one track"):
        audacity_labels(rows)


def test_ids_csv_names_stored_segments(rows):
    segments = rows.rename(columns={})
    wanted = pd.DataFrame({"path": [rows["path"][2], rows["path"][0]], "start_s": [0.0, 6.0004]})
    assert match_ids(segments, wanted).tolist() == [4, 3]
    with pytest.raises(BadInput, match="1 of 1 rows"):
        match_ids(segments, pd.DataFrame({"path": ["/x.wav"], "start_s": [0.0]}))
    with pytest.raises(BadInput, match="start_s"):
        match_ids(segments, pd.DataFrame({"path": ["/x.wav"]}))


def test_cli_exports_every_segment_or_those_of_an_ids_csv(tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i, seconds in enumerate((7.0, 4.0)):
        sf.write(folder / f"t{i}.wav", tone(300 + 100 * i, seconds), 22050)
    db = tmp_path / "s.duckdb"
    extract([folder], ["dsp"], db=db)
    assert cli.main(["export", "--model", "dsp", "--clips", str(tmp_path / "all"), "--db", str(db)]) == 0
    table = pd.read_csv(tmp_path / "all" / SEGMENTS_CSV)
    assert len(table) == len(Store(db).segments_frame()) and (tmp_path / "all" / table["clip"][0]).is_file()

    picked = table.iloc[[2, 0]][["path", "start_s"]]
    picked.to_csv(tmp_path / "ids.csv", index=False)
    argv = ["export", "--model", "dsp", "--clips", str(tmp_path / "some"), "--ids", str(tmp_path / "ids.csv"),
            "--db", str(db)]
    assert cli.main(argv) == 0
    some = pd.read_csv(tmp_path / "some" / SEGMENTS_CSV)
    assert some[["path", "start_s"]].values.tolist() == picked.values.tolist()
    capsys.readouterr()
    pd.DataFrame({"path": ["/nowhere.wav"], "start_s": [0]}).to_csv(tmp_path / "bad.csv", index=False)
    argv[-3] = str(tmp_path / "bad.csv")
    assert cli.main(argv) == 2
    assert "name no stored segment" in capsys.readouterr().err
    assert cli.main(["export", "--model", "dsp", "--out", "x.parquet", "--ids", "a.csv", "--db", str(db)]) == 2
