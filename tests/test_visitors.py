"""Hostile visitors of a shared app: crafted stores, crafted uploads, links out of the root, leaked paths.

Every hostile file is made here, at test time.
"""

from __future__ import annotations

import os
import time

import duckdb
import pytest
import soundfile as sf
from streamlit import config
from streamlit.testing.v1 import AppTest

import ui
from core import cli, uploads
from core.audio import AudioError
from core.config import settings
from core.errors import BadInput, StoreError
from core.extract import extract
from core.models.base import load_model
from core.reduce import cached_projection
from core.search import embed_clip
from core.store import Store
from tests.conftest import PROJECT_ROOT, import_noisy_copy, tone, tone_files
from tests.test_hostile import write_bomb
from tests.test_ui import uploaded


# ---------------------------------------------------------------------------- crafted stores


@pytest.fixture
def store_file(tmp_path):
    db = tmp_path / "s.duckdb"
    extract([tone_files(tmp_path / "a", 2, 3.0)], ["dsp"], db=db)
    return db


def craft(db, *statements) -> None:
    con = duckdb.connect(str(db))
    for statement in statements:
        con.execute(statement)
    con.close()


def test_a_store_holding_a_view_that_reads_a_file_is_refused(store_file, tmp_path, capsys):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    table = duckdb.connect(str(store_file)).execute("SELECT table_name FROM spaces").fetchone()[0]
    craft(store_file, f"DROP TABLE {table}", f"CREATE VIEW {table} AS SELECT * FROM read_csv('{secret}')")
    with pytest.raises(StoreError, match="views"):
        Store(store_file)
    assert cli.main(["info", "--db", str(store_file)]) == 2
    err = capsys.readouterr().err
    assert "views" in err and "hunter2" not in err and "Traceback" not in err


def test_a_store_holding_a_macro_is_refused(store_file):
    craft(store_file, "CREATE MACRO spaces_n() AS 1")
    with pytest.raises(StoreError, match="macros"):
        Store(store_file, read_only=True)


def test_a_table_name_holding_sql_is_never_run(store_file, tmp_path, capsys):
    target = tmp_path / "written_by_the_store.csv"
    payload = f"emb_1 LIMIT 0; COPY (SELECT 1) TO '{target}'; --"
    craft(store_file, f"UPDATE spaces SET table_name = '{payload.replace(chr(39), chr(39) * 2)}'")
    for command in (["info"], ["export", "--model", "dsp", "--out", str(tmp_path / "x.parquet")]):
        assert cli.main([*command, "--db", str(store_file)]) == 2
        assert "never makes" in capsys.readouterr().err
    assert not target.exists()


def test_sql_reaches_no_other_file_even_on_an_open_connection(store_file, tmp_path):
    with Store(store_file).connect(read_only=True) as con:
        with pytest.raises(duckdb.Error, match="disabled"):
            con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'")
    assert not (tmp_path / "out.csv").exists()


# ---------------------------------------------------------------------------- uploads


@pytest.mark.parametrize("name", ["..", ".", "", "   ", ".hidden.wav", "a/..", "x\\..", "new\nline.wav"])
def test_upload_names_that_could_name_a_folder_or_hide_are_refused(name):
    with pytest.raises(BadInput, match="plain name"):
        uploads.safe_name(name)


def test_upload_names_are_reduced_to_their_base_name():
    assert uploads.safe_name("../../etc/passwd") == "passwd"
    assert uploads.safe_name("..\\..\\clip.wav") == "clip.wav"


def test_an_upload_named_dot_dot_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("AEB_CACHE", str(tmp_path))
    monkeypatch.setenv("AEB_SHARED_MODE", "1")
    ui.save_upload(uploaded("private.wav", b"someone else's clip"), "visitors/other")
    with pytest.raises(BadInput):
        ui.save_upload(uploaded("..", b"x"))
    assert sorted(p.name for p in (tmp_path / "uploads").rglob("*") if p.is_file()) == ["private.wav"]


def test_the_upload_quota_and_the_size_limit_refuse_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("AEB_CACHE", str(tmp_path))
    monkeypatch.setenv("AEB_UPLOAD_QUOTA_MB", "1")
    ui.save_upload(uploaded("first.wav", b"x" * 700_000))
    with pytest.raises(BadInput, match="uploads of this shared app are full"):
        ui.save_upload(uploaded("second.wav", b"y" * 700_000))
    monkeypatch.setenv("AEB_MAX_UPLOAD_MB", "1")
    with pytest.raises(BadInput, match="larger than 1 MB"):
        ui.save_upload(uploaded("huge.wav", b"z" * (2**20 + 1)))
    assert [p.name for p in (tmp_path / "uploads").rglob("*.wav")] == ["first.wav"]


def test_visitor_folders_expire(tmp_path):
    old, new = tmp_path / uploads.VISITORS / "old", tmp_path / uploads.VISITORS / "new"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / "q.wav").write_bytes(b"q")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert uploads.sweep(tmp_path, ttl_s=3600) == 1
    assert not old.exists() and new.exists()


def test_a_flac_bomb_query_gets_one_line_and_is_never_decoded(tmp_path, monkeypatch):
    monkeypatch.setenv("AEB_SHARED_MODE", "1")
    bomb = tmp_path / "bomb.flac"
    write_bomb(bomb, seconds=64)
    started = time.perf_counter()
    with pytest.raises(AudioError, match="exceed the limit") as caught:
        embed_clip(load_model("dsp"), bomb, 3.0, 3.0, space="dsp", max_samples=settings().query_budget)
    assert "\n" not in str(caught.value) and time.perf_counter() - started < 10


# ---------------------------------------------------------------------------- the audio root


@pytest.fixture
def shared_root(tmp_path, monkeypatch):
    root = tmp_path / "root"
    tone_files(root, 2, 3.0)
    outside = tmp_path / "private"
    outside.mkdir()
    sf.write(outside / "secret.wav", tone(440, 3.0), 22050)
    (root / "leak.wav").symlink_to(outside / "secret.wav")
    (root / "leakdir").symlink_to(outside)
    monkeypatch.setenv("AEB_SHARED_MODE", "1")
    monkeypatch.setenv("AEB_AUDIO_ROOT", str(root))
    monkeypatch.setenv("AEB_DB", str(tmp_path / "shared.duckdb"))
    return root, outside


def test_a_file_link_out_of_the_root_is_a_failure_named_by_its_own_path(shared_root, tmp_path):
    root, outside = shared_root
    cfg = settings()
    report = extract([root], ["dsp"], db=cfg.db, inside=cfg.allows)
    assert report.stored == 2
    failed = {f.path: f.message for f in report.failures}
    assert failed == {str(root / "leak.wav"): "outside the allowed folder",
                      str(root / "leakdir"): "a link to a folder outside the allowed folder"}
    assert not any(str(outside) in p for p in Store(cfg.db).tracks_frame()["path"])


def test_no_absolute_path_reaches_the_rendered_pages(shared_root, tmp_path):
    root, _ = shared_root
    cfg = settings()
    extract([root], ["dsp"], db=cfg.db, inside=cfg.allows)
    pages = {}
    for page in ("streamlit_app.py", "pages/1_Extract.py", "pages/2_Explore.py", "pages/4_Search.py"):
        at = AppTest.from_file(str(PROJECT_ROOT / page), default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        pages[page] = at
    extract_page = pages["pages/1_Extract.py"]
    extract_page.text_input[0].input("%2e%2e/private").run()
    search = pages["pages/4_Search.py"]
    next(b for b in search.button if b.label == "Find similar segments").click().run()
    explore = pages["pages/2_Explore.py"]
    explore.session_state["map-2-select-segment-0"] = {"selection": {"pick": [{"id": 1}], "box": [{"id": 2}]}}
    explore.run()
    assert explore.subheader[0].value.startswith("▶") and len(search.get("audio")) == 2  # the query and the other track
    for page, at in pages.items():
        shown = [str(getattr(e, "value", "")) for kind in ("markdown", "caption", "error", "warning", "info", "text")
                 for e in at.get(kind)]
        shown += [e.value.to_csv() for e in at.dataframe]
        assert shown and not [s for s in shown if str(tmp_path) in s], page
    assert any("leak.wav" in e.value.to_csv() for e in extract_page.dataframe)  # failures are listed, relatively
    assert config.get_option("client.showErrorDetails") == "none"  # and a failure shows no traceback


def test_a_visitors_map_is_not_written_into_the_shared_store(shared_root, tmp_path):
    root, _ = shared_root
    cfg = settings()
    extract([root], ["dsp"], db=cfg.db, inside=cfg.allows)
    at = AppTest.from_file(str(PROJECT_ROOT / "pages/2_Explore.py"), default_timeout=120)
    at.run()
    at.selectbox(key="method0").set_value("tsne").run()
    assert not at.exception, [e.value for e in at.exception]
    with Store(cfg.db).connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM projections").fetchone()[0] == 0
    assert len(at.session_state[ui.VISITOR_MAPS_KEY]) == 3  # two PCA views, then t-SNE in view A


def test_a_visitors_map_is_refused_over_the_budget(shared_root, monkeypatch):
    cfg = settings()
    extract([shared_root[0]], ["dsp"], db=cfg.db, inside=cfg.allows)
    monkeypatch.setenv("AEB_VISITOR_MAX_POINTS", "1")
    at = AppTest.from_file(str(PROJECT_ROOT / "pages/2_Explore.py"), default_timeout=120)
    at.run()
    assert any("at most 1 points" in e.value for e in at.error)
    assert not at.exception


def test_compares_trustworthiness_map_keeps_to_the_visitors_budget(shared_root, monkeypatch):
    """Choosing t-SNE for trustworthiness must not start an unbudgeted map of the whole collection."""
    cfg = settings()
    tone_files(shared_root[0] / "more", 12, 3.0)  # enough points for neighbours
    extract([shared_root[0]], ["dsp"], db=cfg.db, inside=cfg.allows)
    import_noisy_copy(cfg.db)
    for space in ("dsp", "noisy"):  # the maps a collection's owner left stored: free for visitors
        cached_projection(Store(cfg.db), space, "pca")
    monkeypatch.setenv("AEB_VISITOR_MAX_POINTS", "1")
    at = AppTest.from_file(str(PROJECT_ROOT / "pages/3_Compare.py"), default_timeout=120)
    at.run()
    next(s for s in at.selectbox if s.label == "Trustworthiness of the map").set_value("tsne").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("No trustworthiness for this map" in i.value and "at most 1 points" in i.value for i in at.info)
    assert not at.error  # the rest of the metrics stand
    with Store(cfg.db).connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM projections WHERE method = 'tsne'").fetchone()[0] == 0
