"""Search over a store: the CLI's JSON, track ranking, own-track exclusion, CLAP text queries, the Search page."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from core import cli, spaces
from core.errors import BadInput
from core.search import SearchError, exclude_below, search, search_store
from core.store import Store
from tests.conftest import PROJECT_ROOT, tone


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    d = tmp_path_factory.mktemp("search")
    (d / "audio").mkdir()
    for i, f in enumerate((220, 230, 440, 450, 880, 900)):
        y = tone(f, 7.0) + 0.05 * np.random.default_rng(i).normal(size=7 * 22050).astype(np.float32)
        sf.write(d / "audio" / f"tone_{f}.wav", y, 22050)
    (d / "audio" / "meta.csv").write_text("path,pitch\n" + "".join(
        f"tone_{f}.wav,{f}\n" for f in (220, 230, 440, 450, 880, 900)))
    db = d / "s.duckdb"
    assert cli.main(["extract", str(d / "audio"), "--model", "dsp", "--db", str(db),
                     "--metadata", str(d / "audio" / "meta.csv")]) == 0
    return d, db


def test_cli_audio_query_json_shape(collection, capsys):
    d, db = collection
    capsys.readouterr()
    code = cli.main(["search", "--model", "dsp", "--audio", str(d / "audio" / "tone_440.wav"), "-k", "3",
                     "--db", str(db), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and len(out) == 3
    assert set(out[0]) == {"path", "path_escaped", "start_s", "end_s", "score", "metadata"}
    assert [r["score"] for r in out] == sorted((r["score"] for r in out), reverse=True)
    assert out[0]["path"].endswith("tone_440.wav") and out[0]["metadata"] == {"pitch": 440}
    code = cli.main(["search", "--model", "dsp", "--audio", str(d / "audio" / "tone_440.wav"), "--level", "track",
                     "--db", str(db), "--json"])
    tracks = json.loads(capsys.readouterr().out)
    assert code == 0 and len({r["path"] for r in tracks}) == len(tracks) == 6
    assert tracks[1]["path"].endswith("tone_450.wav")
    assert tracks[0]["end_s"] - tracks[0]["start_s"] == pytest.approx(3.0)  # the best segment, not the track


def test_own_track_exclusion_and_visible_errors(collection):
    _, db = collection
    store = Store(db)
    space = spaces.load(store, "dsp")
    own = int(space.track_ids[0])
    found = search_store(store, space, space.vectors[0], k=5, exclude_track=own)
    assert all(r["track_id"] != own for r in found)
    with pytest.raises(SearchError, match="dimension|512|128"):
        search_store(store, space, np.ones(512, np.float32))
    assert cli.main(["search", "--model", "dsp", "--text", "a dog", "--db", str(db)]) == 2
    assert cli.main(["search", "--model", "clap-htsat-unfused", "--text", "a dog", "--db", str(db)]) == 2


def test_a_score_filter_gives_exactly_k_passing_results_reading_only_their_rows(collection, monkeypatch):
    _, db = collection
    store = Store(db)
    space = spaces.load(store, "dsp")
    passing = space.ids[::2]  # e.g. the segments whose tag score is high enough
    exclude = exclude_below(space.ids, passing[::-1], np.linspace(0.6, 0.9, len(passing)), 0.5)
    assert exclude.tolist() == [False, True] * 6
    assert exclude_below(space.ids, passing, np.linspace(0.0, 1.0, len(passing)), 0.5).sum() == 9
    monkeypatch.setattr(Store, "segments_frame", lambda *a, **kw: pytest.fail("search read every segment"))
    found = search_store(store, space, space.vectors[1], k=5, exclude=exclude, exclude_track=-1)
    best = np.argsort(-(space.vectors[::2] @ space.vectors[1]), kind="stable")[:5]
    assert [r["segment_id"] for r in found] == passing[best].tolist()
    assert found[0]["metadata"] == {"pitch": int(found[0]["path"].split("_")[-1][:-4])}


@pytest.mark.parametrize("call", ["rows", "load", "search", "projection", "metrics"])
def test_a_bad_level_is_refused_alike_everywhere(collection, call):
    from core.analyses import store_metrics
    from core.reduce import cached_projection

    store = Store(collection[1])
    calls = {
        "rows": lambda: store.rows(np.array([1]), "album"),
        "load": lambda: spaces.load(store, "dsp", "album"),
        "search": lambda: search(np.eye(2, dtype=np.float32), np.ones(2), level="album"),
        "projection": lambda: cached_projection(store, "dsp", "pca", level="album"),
        "metrics": lambda: store_metrics(store, ["dsp"], level="album"),
    }
    with pytest.raises(BadInput, match="^Unknown level 'album'; use one of segment, track.$"):
        calls[call]()


def test_the_cli_opens_aeb_db_and_refuses_bad_input_in_one_line(collection, monkeypatch, capsys, tmp_path):
    d, db = collection
    monkeypatch.setenv("AEB_DB", str(db))
    assert cli.main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tracks"] == 6
    (tmp_path / "no_path.csv").write_text("file,x\na.wav,1\n")
    (tmp_path / "junk.parquet").write_text("not parquet")
    for argv, reason in [
        (["search", "--model", "dsp", "--audio", str(d / "audio" / "tone_440.wav"), "-k", "0"], "k must be at least 1"),
        (["extract", str(d / "audio"), "--model", "dsp", "--metadata", str(tmp_path / "no_path.csv")], "no 'path' column"),
        (["extract", str(d / "audio"), "--model", "dsp", "--metadata", str(tmp_path / "gone.csv")], "cannot be read"),
        (["import", str(tmp_path / "junk.parquet"), "--model", "junk"], "cannot be read as Parquet"),
        (["export", "--model", "dsp", "--out", str(tmp_path / "missing" / "x.parquet")], "does not exist"),
        (["extract", str(d / "audio"), "--model", "dsp", "--db", str(tmp_path / "new.duckdb"), "--segment", "-1"],
         "must be positive"),
    ]:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert reason in err and len(err.strip().splitlines()) == 1, err
    assert Store(db).info()["tracks"] == 6 and "junk" not in Store(db).info()["embeddings"]


def test_clap_text_search_through_a_tiny_checkpoint(tmp_path, capsys):
    from tests.test_clap import _save_tiny_clap

    folder = _save_tiny_clap(tmp_path / "tiny-clap")
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for f in (300, 600, 1200):
        sf.write(audio_dir / f"t{f}.wav", tone(f, 4.0), 22050)
    db = tmp_path / "clap.duckdb"
    key = f"clap:{folder}"
    assert cli.main(["extract", str(audio_dir), "--model", key, "--db", str(db)]) == 0
    capsys.readouterr()
    assert cli.main(["search", "--model", key, "--text", "a high tone", "-k", "2", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 2 and -1.0 <= out[1]["score"] <= out[0]["score"] <= 1.0


@pytest.mark.parametrize("sketched", [False, True], ids=["scan", "int8 sketch"])
def test_search_page_more_like_this(collection, monkeypatch, sketched):
    _, db = collection
    monkeypatch.setenv("AEB_DB", str(db))
    built = []
    if sketched:  # the path large spaces take, forced on this small one
        import streamlit as st

        from core import search

        real = search.build_sketch
        monkeypatch.setattr(search, "SKETCH_MIN_VALUES", 0)
        monkeypatch.setattr(search, "build_sketch", lambda m: built.append(real(m)) or built[-1])
        st.cache_resource.clear()
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "4_Search.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert any("Text search needs a text–audio model" in i.value for i in at.info)
    more = next(b for b in at.button if b.label == "Find similar segments")
    more.click().run()
    assert not at.exception
    assert len(at.get("audio")) >= 1
    assert [type(b).__name__ for b in built] == (["Sketch"] if sketched else [])
    # the query's scores become a colour Explore offers
    (name, source), = at.session_state["explore_extra_colours"].items()
    scores = source()  # scored only when Explore colours by it
    assert name.startswith("search score") and len(scores) == 12 and scores.max() == pytest.approx(1.0, abs=1e-5)


def test_search_page_on_an_empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("AEB_DB", str(tmp_path / "empty.duckdb"))
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "4_Search.py"), default_timeout=60)
    at.run()
    assert not at.exception and "Nothing to search yet" in at.info[0].value
