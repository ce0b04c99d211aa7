"""``core publish``: a self-contained folder, moved elsewhere, opened read-only by a visitor who changes nothing."""

from __future__ import annotations

import hashlib
import shutil

import pandas as pd
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

import ui
from core import cli
from core.config import COLLECTION_STORE
from core.errors import StoreError
from core.extract import extract, read_metadata_csv
from core.publish import publish
from core.store import Store
from tests.conftest import PROJECT_ROOT, import_noisy_copy, tone_files


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """12 tones of 4 s (one 3 s segment each) in dsp, a noisy copy of dsp as a second space, and a label column."""
    base = tmp_path_factory.mktemp("src")
    folder = tone_files(base / "tones", 12, 4.0)
    csv = base / "labels.csv"
    pd.DataFrame({"path": [f"{i}.wav" for i in range(12)], "pitch": ["low" if i < 6 else "high" for i in range(12)],
                  "take": [i % 3 for i in range(12)]}).to_csv(csv, index=False)
    db = base / "src.duckdb"
    extract([folder], ["dsp"], db=db, metadata=read_metadata_csv(csv, [folder]))
    import_noisy_copy(db)
    return base, folder, db


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(page: str) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / page), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_publish_move_open_play_search_and_leave_the_store_unchanged(source, tmp_path, monkeypatch):
    base, folder, db = source
    report = publish(db, tmp_path / "pub", label="pitch", group="take")
    assert report.tracks == 12 and report.spaces == ["dsp", "noisy"] and report.projections == 16
    assert report.audio_files == 12 and not report.missing_audio
    assert report.audio_bytes < 2**20 and report.total_bytes < 8 * 2**20 and "total" in report.lines()[-1]

    moved = tmp_path / "elsewhere" / "collection"
    moved.parent.mkdir()
    shutil.move(tmp_path / "pub", moved)
    hidden = base / "tones-gone"
    folder.rename(hidden)  # the originals are not where the store was made: the folder must be enough
    try:
        published = Store(moved / COLLECTION_STORE)
        assert published.read_only and published.published
        tracks = published.tracks_frame()
        assert all(p.startswith("audio/") and p.endswith(".ogg") for p in tracks["path"])
        assert published.info()["missing_files"] == 0 and published.failures().empty
        with pytest.raises(StoreError, match="read-only"):
            published.put_cached("kind", "key", "version", 1)
        # an Ogg copy holds what the segments cover: a 4 s tone on a 3 s grid keeps one segment, and 1 s is cut
        clip = sf.info(moved / tracks["path"].iloc[0])
        assert clip.channels == 1 and abs(clip.duration - 3.0) < 0.01
        before = digest(moved / COLLECTION_STORE)

        monkeypatch.setenv("AEB_COLLECTION", str(moved))
        monkeypatch.delenv("AEB_DB", raising=False)
        home = run("streamlit_app.py")
        assert not any(b.label == "Load the demo collection" for b in home.button)
        extract_page = run("pages/1_Extract.py")
        assert "published collection" in extract_page.info[0].value and not extract_page.button

        search = run("pages/4_Search.py")
        next(b for b in search.button if b.label == "Find similar segments").click().run()
        assert not search.exception, [e.value for e in search.exception]
        assert len(search.get("audio")) == 11  # the query and its 10 results: every result plays, from the folder's own Ogg copies
        assert not [c.value for c in search.caption if "🔇" in c.value]

        explore = run("pages/2_Explore.py")
        assert "computed" not in " ".join(s.label for s in explore.get("expandable"))  # default maps were stored
        explore.selectbox(key="method0").set_value("tsne").run()
        explore.slider(key="perp0").set_value(4.0).run()  # a setting nobody published: this visitor's own map
        assert not explore.exception, [e.value for e in explore.exception]
        assert len(explore.session_state[ui.VISITOR_MAPS_KEY]) == 1  # kept in the session, not in the store
        compare = run("pages/3_Compare.py")
        assert compare.dataframe[0].value.shape[0] == 2

        assert digest(moved / COLLECTION_STORE) == before
        assert sorted(p.name for p in moved.iterdir()) == ["audio", COLLECTION_STORE]  # no lock, no WAL

        monkeypatch.delenv("AEB_COLLECTION")
        assert cli.main(["search", "--db", str(moved / COLLECTION_STORE), "--model", "dsp",
                         "--audio", str(moved / tracks["path"].iloc[3]), "-k", "1", "--json"]) == 0
        assert digest(moved / COLLECTION_STORE) == before
    finally:
        hidden.rename(folder)


def test_publish_refuses_past_max_mb_and_writes_nothing(source, tmp_path, capsys):
    _, _, db = source
    rc = cli.main(["publish", "--db", str(db), "--out", str(tmp_path / "pub"), "--model", "dsp", "--max-mb", "0.01",
                   "--audio", "copy"])
    err = capsys.readouterr().err
    assert rc == 2 and "more than --max-mb 0.01" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_publish_refuses_an_existing_folder_and_unknown_columns(source, tmp_path, capsys):
    _, _, db = source
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    assert cli.main(["publish", "--db", str(db), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    assert cli.main(["publish", "--db", str(db), "--out", str(tmp_path / "new"), "--label", "nope"]) == 2
    assert "not a metadata column" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_publish_refuses_a_model_folder_of_this_machine(source, tmp_path, capsys):
    """Its path would be shown to every visitor, and the shared app could not load it for a text query."""
    from tests.test_clap import _save_tiny_clap

    _, folder, _ = source
    clap_dir = _save_tiny_clap(tmp_path / "my-clap")
    db = tmp_path / "local.duckdb"
    assert extract([folder], ["dsp", f"clap:{clap_dir}"], db=db).stored == 12
    assert cli.main(["publish", "--db", str(db), "--out", str(tmp_path / "pub")]) == 2
    err = capsys.readouterr().err
    assert "'my-clap' names a folder on this machine" in err and str(tmp_path) not in err
    assert not (tmp_path / "pub").exists()
    assert cli.main(["publish", "--db", str(db), "--out", str(tmp_path / "pub"), "--model", "dsp", "--audio", "none"]) == 0
