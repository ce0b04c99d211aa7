"""Explore: the pure functions behind the page, and the page's state logic through AppTest.

The store here is synthetic (random clustered vectors over short tone files),
so these tests need no model and no extraction.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

import ui
from core import explore as ex
from core.analyses import store_k_occurrence
from core.cluster import ClusterError, cached_clusters, cluster
from core.errors import BadInput
from core.exchange import vector_column
from core.store import Provenance, Store, TrackRecord
from core.wording import count_label
from tests.conftest import PROJECT_ROOT, tone

PAGE = str(PROJECT_ROOT / "pages" / "2_Explore.py")
FAMILIES = ("bell", "drum", "flute")
TAGS = ["calm", "loud", "bright", "dark"]


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    """12 tracks × 3 segments in three families, a tagger space, and an imported space with its own segments."""
    folder = tmp_path_factory.mktemp("audio")
    db = tmp_path_factory.mktemp("db") / "small.duckdb"
    store = Store(db)
    store.ensure_grid(1.0, 1.0)
    store.prepare_space(Provenance("toy", "toy", 16, "1", "sha"))
    store.prepare_space(Provenance("toy/taggram", "toy", len(TAGS), "1", "sha", tag_names=tuple(TAGS)))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(FAMILIES), 16)) * 4
    records = []
    for t in range(12):
        family = FAMILIES[t % 3]
        path = folder / f"{family}_{t:02d}.wav"
        sf.write(path, tone(220 + 40 * t, 3.0), 22050)
        vecs = (centres[t % 3] + rng.normal(size=(3, 16))).astype(np.float32)
        tags = np.zeros((3, len(TAGS)), np.float32)
        tags[:, t % len(TAGS)] = 1.0
        records.append(TrackRecord(str(path), f"h{t}", 3.0, 22050, 1, "WAV", np.array([[0, 1], [1, 2], [2, 3.0]]),
                                   {"toy": vecs, "toy/taggram": tags}, {"family": family, "loudness": float(t)}))
    store.write_tracks(records)
    first = str(folder / "bell_00.wav")
    imported = pd.DataFrame({"path": [first, first, "/nowhere/gone.wav"], "start_s": [0.0, 0.5, 0.0],
                             "end_s": [1.0, 1.5, 1.0]})
    store.add_imported(Provenance("mine", "mine", 8, "imported", "", source="imported"),
                       pa.Table.from_pandas(imported).append_column(
                           "vector", vector_column(rng.normal(size=(3, 8)).astype(np.float32))))
    return db


@pytest.fixture
def page(small_db, monkeypatch):
    monkeypatch.setenv("AEB_DB", str(small_db))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def select(at: AppTest, selection: dict) -> AppTest:
    at.session_state["map-2-select-segment-0"] = {"selection": {"pick": [], "brush0": {}, "brush1": {}, **selection}}  # two views, drag selects
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.caption, *at.subheader, *at.markdown, *at.warning])


# ---------------------------------------------------------------------- pure functions


@pytest.fixture
def two_tracks(tmp_path) -> Store:
    """Segments 1 and 2 of track 1 (/a/x.wav, family p), segment 3 of track 2 (/a/y.wav, family q)."""
    store = Store(tmp_path / "two.duckdb")
    store.ensure_grid(1.0, 1.0)
    store.write_tracks([TrackRecord("/a/x.wav", "hx", 2.0, 1, 1, "WAV", np.array([[0, 1], [1, 2.0]]), {}, {"family": "p"}),
                        TrackRecord("/a/y.wav", "hy", 1.0, 1, 1, "WAV", np.array([[0, 1.0]]), {}, {"family": "q"})])
    return store


def test_linked_frame_joins_views_on_segment_ids_and_leaves_missing_points_out(two_tracks):
    segments = two_tracks
    frame = ex.linked_frame(segments, [(np.array([1, 2]), np.array([[0, 0], [1, 1]], np.float32)),
                                       (np.array([2, 3]), np.array([[5, 5], [6, 6]], np.float32))])
    assert frame["id"].tolist() == [1, 2, 3]
    assert frame["x0"].tolist()[:2] == [0, 1] and np.isnan(frame["x0"][2])
    assert np.isnan(frame["x1"][0]) and frame["y1"].tolist()[1:] == [5, 6]
    assert frame["name"].tolist() == ["x.wav", "x.wav", "y.wav"] and frame["family"].tolist() == ["p", "p", "q"]
    assert ex.coinciding(np.array([1, 2]), np.array([2, 3])) == 1
    tracks = ex.points_frame(segments, np.array([1, 2]), level="track")
    assert tracks["end_s"].tolist() == [2.0, 1.0] and tracks["track_id"].tolist() == [1, 2]


def test_file_names_parse_each_distinct_path_once_in_row_order_and_leave_missing_paths_blank():
    paths = pd.Series(["music/a/x.wav", None, "music/b/x.wav", "music/a/x.wav", float("nan"), "y.flac", "music/b/x.wav"])
    assert ex.file_names(paths).tolist() == ["x.wav", "", "x.wav", "x.wav", "", "y.flac", "x.wav"]
    assert ex.file_names(pd.Series([], dtype=object)).tolist() == []


def test_colour_column_folds_the_long_tail_into_other_and_keeps_numbers():
    values = pd.Series([f"c{i}" for i in range(30)] + ["c0"] * 10)
    folded = ex.colour_column(values, max_categories=5)
    assert list(folded.categories) == ["c0", *folded.categories[1:5], "other"] and len(folded.categories) == 6
    assert (pd.Series(folded) == "other").sum() == 25
    assert ex.colour_column(pd.Series([1, 2, None])).dtype == np.float32
    assert list(ex.colour_column(pd.Series(["a", None])).categories) == ["a", "(missing)"]


def test_colours_are_counted_over_the_points_shown_and_can_be_chosen():
    # 50 points of 30 common values, 8 rare ones shown after a filter: all 8 get a colour, none is "other"
    values = pd.Series([f"common{i % 30}" for i in range(300)] + [f"rare{i}" for i in range(8)] * 2)
    keep = values.str.startswith("rare").to_numpy()
    folded = ex.colour_column(values, keep)
    shown = pd.Series(folded)[keep]
    assert set(shown) == {f"rare{i}" for i in range(8)} and list(folded.categories)[:8] == sorted(set(shown))
    assert ex.colour_values(values, keep) == sorted(set(shown))
    chosen = ex.colour_column(values, keep, chosen=["rare3", "rare5"])
    assert list(chosen.categories) == ["rare3", "rare5", "other"] and (pd.Series(chosen)[keep] == "other").sum() == 12
    # up to 20 values get a colour, noise and missing values are grey, the rest grey as "other"
    many = pd.Series([f"v{i:02d}" for i in range(25)] * 2 + ["noise", None])
    folded = ex.colour_column(many)
    assert list(folded.categories)[:20] == [f"v{i:02d}" for i in range(20)]
    assert list(folded.categories)[20:] == ["other", "noise", "(missing)"]
    colours = ex.colour_range(list(folded.categories))
    assert len(set(colours[:20])) == 20 and colours[20:] == [ex.GREY_VALUES[c] for c in ("other", "noise", "(missing)")]
    assert not set(colours[:20]) & set(ex.GREY_VALUES.values())


def test_views_difference_names_its_cause_and_a_level_switch_keeps_the_audio(two_tracks):
    frame = ex.linked_frame(two_tracks, [(np.array([1, 2]), np.zeros((2, 2), np.float32)),
                                         (np.array([3]), np.zeros((1, 2), np.float32))])
    assert "the two models were extracted on different files" in ex.views_difference(frame)
    assert "2 only in A and 1 only in B" in ex.views_difference(frame)
    frame = ex.linked_frame(two_tracks, [(np.array([1, 2, 3]), np.zeros((3, 2), np.float32)),
                                         (np.array([1, 3]), np.zeros((2, 2), np.float32))])
    assert "imported vectors keep their own segments" in ex.views_difference(frame)
    frame = ex.linked_frame(two_tracks, [(np.array([1, 2]), np.zeros((2, 2), np.float32))] * 2)
    assert ex.views_difference(frame) is None
    segments = two_tracks.segments_frame()  # segments 1, 2 of track 1; segment 3 of track 2
    assert ex.carry_selection(segments, [3, 2, 1], "segment", "track") == [2, 1]
    assert ex.carry_selection(segments, [2, 1], "track", "segment") == [3, 1]
    assert ex.carry_selection(segments, [2], "segment", "segment") == [2]
    assert count_label(1, "track") == "1 track" and count_label(1200, "segment") == "1,200 segments"


def test_top_tag_and_extra_colours_at_track_level(small_db):
    tags = ex.top_tag(np.array([10, 11]), np.array([[0.1, 0.9], [0.8, 0.2]]), ["soft", "loud"])
    assert tags.to_dict() == {10: "loud", 11: "soft"}
    with pytest.raises(ValueError):
        ex.top_tag(np.array([1]), np.zeros((1, 3)), ["a"])
    segments = Store(small_db)  # three segments per track: 19 and 20 of track 7, 22 of track 8
    scores = pd.Series([0.2, 0.9, 0.4], index=[19, 20, 22])
    assert ex.to_level(scores, segments, "track").to_dict() == {7: 0.9, 8: 0.4}
    labels = pd.Series(["a", "b", "b"], index=[19, 20, 22])
    assert ex.to_level(labels, segments, "track").to_dict() == {7: "a", 8: "b"}
    assert ex.to_level(scores, segments, "segment") is scores


def test_derived_colours_follow_the_drawn_points(small_db):
    store = Store(small_db)
    frame = store.segments_frame().set_index("segment_id")
    ids = frame.index.to_numpy()[::-1]
    own = np.isin(ids, store.vectors("toy")[0])  # the imported space's own segments have no tags and no toy vector
    number = frame.loc[ids, "path"].str.extract(r"_(\d+)\.wav$")[0].to_numpy()  # <family>_<t>.wav: tag t % 4
    title, values, description = ex.derived_colour(store, space="toy/taggram", ids=ids, level="segment", kind="top tag")
    assert title == "top tag (toy/taggram)" and description == ""
    assert values[own].tolist() == [TAGS[int(t) % len(TAGS)] for t in number[own]] and values[~own].isna().all()

    title, values, description = ex.derived_colour(store, space="toy", ids=ids, level="segment", kind="kmeans", k=3)
    assert title == "cluster" and "k-means, k=3" in description and description.endswith("model toy.")
    family = frame.loc[ids, "path"].str.extract(r"(bell|drum|flute)_")[0].to_numpy()
    assert pd.crosstab(family[own], values[own].to_numpy()).gt(0).sum(axis=1).eq(1).all()  # a family is one cluster
    assert values[own].nunique() == 3 and values[own].str.startswith("cluster ").all() and values[~own].isna().all()

    tracks = np.sort(frame["track_id"].unique())
    _, values, _ = ex.derived_colour(store, space="toy/taggram", ids=tracks, level="track", kind="top tag")
    assert values.notna().sum() == 12 and set(values.dropna()) == set(TAGS)
    with pytest.raises(ClusterError):
        ex.derived_colour(store, space="toy", ids=ids, level="segment", kind="spectral")


def test_tagged_spaces_projection_note_and_spec_buckets():
    spaces = pd.DataFrame({"space": ["tagger", "plain", "empty"], "tag_names": ['["a", "b"]', None, "[]"]})
    assert ex.tagged_spaces(spaces) == ["tagger"]
    projection = {"ids": np.arange(7), "seconds": 1.26, "cached": True,
                  "info": {"explained_variance": [0.5, 0.25], "trustworthiness": 0.9}}
    assert ex.projection_note(projection) == ("explained variance 50.0% + 25.0% · trustworthiness@10 0.900 on 7 points"
                                              " · computed in 1.3 s (stored)")
    sampled = {"ids": np.arange(150_000), "seconds": 90.0,
               "info": {"fit_sample": 50_000, "placed": 100_000, "trustworthiness": 0.95, "trust_sample": 5_000}}
    assert ex.projection_note(sampled) == ("fit on a random sample of 50,000 points, the other 100,000 placed into it"
                                           " · trustworthiness@10 0.950 on 5,000 points · computed in 90.0 s")
    assert [ex.mark_bucket(n) for n in (0, 1_999, 2_000, 19_999, 20_000, 10**6)] == [0, 0, 2_000, 2_000, 20_000, 20_000]
    assert ex.selections(2) == ["pick", "brush0", "brush1"] and ex.selections(2, "zoom") == ["pick"]


def test_disagreement_points_keep_what_every_model_holds_and_was_scored(two_tracks):
    segments = two_tracks
    maps = {"ids": np.array([1, 2, 3]),
            "maps": {"b": np.array([[9, 9], [8, 8], [7, 7]], np.float32), "a": np.array([[0, 0], [1, 1], [2, 2]], np.float32)}}
    scored = {"ids": np.array([3, 1]), "disagreement": np.array([0.5, 0.1])}  # a sample: segment 2 was not scored
    frame, disagreement = ex.disagreement_points(segments, maps, scored, models=("a", "b"), level="segment")
    assert frame["id"].tolist() == [1, 3] and frame["x0"].tolist() == [0, 2] and frame["y1"].tolist() == [9, 7]
    assert disagreement.tolist() == [0.1, 0.5]


def test_filters_by_values_range_and_name():
    frame = pd.DataFrame({"name": ["Bell.wav", "drum.wav", "bell2.wav"], "family": ["b", "d", None], "loud": [1, 5, 9]})
    assert ex.filter_mask(frame, "family", ["b", "(missing)"]).tolist() == [True, False, True]
    assert ex.filter_mask(frame, "loud", value_range=(2, 9)).tolist() == [False, True, True]
    assert ex.filter_mask(frame, name_contains="BELL").tolist() == [True, False, True]
    assert ex.filter_mask(frame, "family", []).all()


def test_stratified_sample_keeps_rare_strata_and_is_deterministic():
    strata = np.array(["big"] * 9_000 + ["mid"] * 990 + ["rare"] * 10)
    pos = ex.stratified_sample(strata, 1_000, seed=1)
    assert len(pos) == 1_000 and len(set(pos)) == 1_000 and (np.diff(pos) > 0).all()
    picked = pd.Series(strata[pos]).value_counts()
    assert picked["rare"] >= 1 and 890 <= picked["big"] <= 910
    assert np.array_equal(pos, ex.stratified_sample(strata, 1_000, seed=1))
    assert len(ex.stratified_sample(np.arange(50) % 50, 10)) == 10  # more strata than room
    assert ex.stratified_sample(strata[:5], 10).tolist() == [0, 1, 2, 3, 4]


def test_chart_data_says_when_it_samples_and_sends_few_columns():
    n = 5_000
    frame = pd.DataFrame({"id": np.arange(n), "track_id": np.arange(n) // 10, "idx": np.arange(n) % 10,
                          "x0": np.zeros(n, np.float32), "y0": np.zeros(n, np.float32), "name": "a.wav",
                          "start_s": 0.0, "path": "/a.wav", "family": "f"})
    colour = ex.colour_column(pd.Series(np.where(np.arange(n) < 10, "rare", "common")))
    data, note = ex.chart_data(frame, np.ones(n, bool), cap=1_000, strata="colour", colour=colour)
    assert len(data) == 1_000 and "stratified by colour" in note and "5,000 points" in note
    assert set(data.columns) == {"id", "track_id", "idx", "x0", "y0", "name", "start_s", "colour"}
    assert (data["colour"] == "rare").sum() >= 1
    keep = np.arange(n) < 100
    data, note = ex.chart_data(frame, keep, cap=1_000)
    assert len(data) == 100 and note == "100 of 5,000 points after filters"


def test_selected_ids_merges_clicks_and_boxes_in_order():
    data = pd.DataFrame({"id": [1, 2, 3, 4], "x0": [0, 1, 2, 3.0], "y0": [0, 1, 2, 3.0], "x1": [3, 2, 1, 0.0], "y1": [0, 0, 0, 0.0]})
    sel = {"pick": [{"id": 4}, {"id": 1}], "brush0": {"x0": [0.5, 2.5], "y0": [2.5, 0.5]}, "brush1": {}}
    assert ex.selected_ids(sel, data) == [4, 1, 2, 3]
    assert ex.selected_ids({"brush1": {"x1": [0, 1.5], "y1": [-1, 1]}}, data) == [3, 4]
    assert ex.selected_ids({"pick": {}, "brush0": {}}, data) == []
    assert ex.selected_ids(None, data) == []


def test_exports_hold_the_selection():
    table = pd.DataFrame({"id": [1, 2, 3], "name": ["a.wav", "a.wav", "b é.wav"], "start_s": [0, 3, 0.0],
                          "end_s": [3, 6, 3.0], "path": ["/m/a.wav", "/m/a.wav", "/m/b é.wav"],
                          "track_duration_s": [6.0, 6.0, None], "x_A": [0.5, 1, 2], "family": ["x", "x", "y"]})
    csv = pd.read_csv(io.BytesIO(ex.to_csv_bytes(table)))
    assert csv["x_A"].tolist() == [0.5, 1, 2] and csv["family"].tolist() == ["x", "x", "y"]
    parquet = pq.read_table(io.BytesIO(ex.to_parquet_bytes(table))).to_pandas()
    pd.testing.assert_frame_equal(parquet, table)


def test_space_parquet_bytes_is_core_export(small_db):
    table = pq.read_table(io.BytesIO(ex.space_parquet_bytes(Store(small_db), "toy")))
    assert table.num_rows == 36 and table.schema.field("vector").type.list_size == 16
    assert b"aeb:provenance" in table.schema.metadata


def test_linked_spec_highlights_through_conditions_on_shared_data():
    spec = ex.linked_spec(100, ["A", "B"], colour=["p", "q"], colour_title="family", trajectory=True)
    assert len(spec["hconcat"]) == 2 and "datasets" not in spec  # the page passes one table, read by both views
    assert [v["data"] for v in spec["hconcat"]] == [{"name": ex.DATASET}] * 2
    params = {p["name"]: p for p in spec["params"]}
    assert set(params) == {"pick", "track", "brush0", "brush1"} and len(params["pick"]["views"]) == 2
    points = spec["hconcat"][1]["layer"][1]
    state = points["transform"][0]
    assert state["as"] == "highlight" and "vlSelectionTest('brush0_store', datum)" in state["calculate"]  # A's box in B
    assert points["encoding"]["opacity"]["condition"][0]["test"] == "datum.highlight == 2"
    assert points["encoding"]["color"]["sort"] == ["p", "q"]
    assert spec["hconcat"][0]["layer"][0]["transform"] == [{"filter": {"param": "track", "empty": False}}]
    zoom = ex.linked_spec(100, ["A"], drag="zoom")
    assert {p["name"] for p in zoom["params"]} == {"pick", "zoom0"}  # the track selection only serves trajectories
    assert ex.colour_scale(pd.Series([1.0, 2.0])) == "numeric"
    assert ex.colour_scale(ex.colour_column(pd.Series(["b", "a", "b"]))) == ["b", "a"]


def test_clusters_in_embedding_space():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(40, 8)) + 6 * np.eye(8)[i] for i in range(3)])
    labels, description = cluster(x, "kmeans", k=3)
    assert len(set(labels[:40])) == 1 and len(set(labels)) == 3 and "k-means" in description
    labels, description = cluster(x, "hdbscan", min_cluster_size=10)
    assert len(set(labels) - {-1}) == 3 and "HDBSCAN" in description and "8-D PCA" in description
    with pytest.raises(ClusterError, match="k-means"):
        cluster(np.zeros((10_001, 2)), "hdbscan")


def test_clusters_are_cached_in_the_store(small_db):
    store = Store(small_db)
    first = cached_clusters(store, "toy", method="kmeans", k=3)
    store.put_cached("clusters", "unrelated", "0", [])  # the cache is keyed; other entries do not interfere
    again = cached_clusters(store, "toy", method="kmeans", k=3)
    assert np.array_equal(first["labels"], again["labels"]) and len(first["ids"]) == 36


# ---------------------------------------------------------------------- the page


def test_page_draws_two_linked_views_with_quality(page):
    assert [s.value for s in page.selectbox][:4] == ["mine", "pca", "toy", "pca"]
    text = texts(page)
    assert "explained variance" in text and "trustworthiness@10" in text
    assert "1 in both views" in text and "2 only in A and 35 only in B" in text  # the imported space's own segments
    assert "Nothing selected" in text


def test_clicked_segment_plays_and_unreachable_audio_says_why(page):
    page.selectbox[0].set_value("toy").run()
    at = select(page, {"pick": [{"id": 5}]})  # track 2, second segment
    assert at.subheader[0].value.startswith("▶ drum_01.wav")
    assert "1.00–2.00 s of" in texts(at)
    next(s for s in at.selectbox if s.label == "Model B").set_value("mine").run()
    frame = Store(_db(at)).segments_frame()
    gone_id = int(frame.loc[frame["path"] == "/nowhere/gone.wav", "segment_id"].iloc[0])
    at = select(at, {"pick": [{"id": gone_id}]})
    assert "Cannot play" in texts(at) or "🔇" in texts(at)


def _db(at: AppTest) -> str:
    import os

    return os.environ["AEB_DB"]


def test_box_selection_lists_every_point_with_a_counted_table(page):
    page.selectbox[0].set_value("toy").run()
    at = select(page, {"brush0": {"x0": [-1e9, 1e9], "y0": [-1e9, 1e9]}})
    assert "Selection: 36 segments from 12 tracks" in texts(at)
    assert "Players for the first 10 of 36 selected" in texts(at)
    assert len(at.dataframe[-1].value) == 36
    assert {"x_A_toy_pca", "y_B_toy_pca", "family"} <= set(at.dataframe[-1].value.columns)


def test_filters_and_colours(page):
    page.selectbox[0].set_value("toy").run()
    page.text_input[0].input("bell").run()
    assert "12 of 36 points after filters" in texts(page)
    page.text_input[0].input("").run()
    colour = next(s for s in page.selectbox if s.label == "Colour by")
    assert "top tag · toy/taggram" in colour.options and "clusters · HDBSCAN" in colour.options
    colour.set_value("top tag · toy/taggram").run()
    assert not page.exception
    colour = next(s for s in page.selectbox if s.label == "Colour by")
    colour.set_value("clusters · k-means").run()
    assert "k-means, k=8" in texts(page)
    colour = next(s for s in page.selectbox if s.label == "Colour by")
    colour.set_value("clusters · HDBSCAN").run()
    assert "HDBSCAN, min cluster size" in texts(page)
    column = next(s for s in page.selectbox if s.label == "Column")
    column.set_value("family").run()
    page.multiselect[0].set_value(["flute"]).run()
    assert "12 of 36 points after filters" in texts(page)


@pytest.mark.parametrize("lazy", [False, True], ids=["series", "function"])
def test_extra_colours_from_session_state(page, lazy):
    frame = Store(_db(page)).segments_frame()
    scores = pd.Series(np.linspace(0, 1, len(frame)), index=frame["segment_id"])
    page.session_state[ui.EXTRA_COLOURS_KEY] = {"query 'bell'": (lambda: scores) if lazy else scores}
    page.run()
    colour = next(s for s in page.selectbox if s.label == "Colour by")
    colour.set_value("from Search · query 'bell'").run()
    assert not page.exception
    assert isinstance(page.session_state[ui.EXTRA_COLOURS_KEY]["query 'bell'"], pd.Series)  # scored once, kept
    page.radio[0].set_value("track").run()  # track level takes each track's best segment
    assert not page.exception and "12 points" in texts(page)


def open_search(small_db, monkeypatch) -> AppTest:
    """The Search page on the small store, its "toy" space chosen."""
    monkeypatch.setenv("AEB_DB", str(small_db))
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "4_Search.py"), default_timeout=120)
    at.run()
    at.selectbox(key="search_space").select("toy").run()
    return at


def test_search_page_tag_filter_returns_exactly_k_tagged_results(small_db, monkeypatch):
    at = open_search(small_db, monkeypatch)
    next(s for s in at.selectbox if s.label == "Tag").select("calm").run()
    next(n for n in at.number_input if n.label == "Results").set_value(5).run()
    next(b for b in at.button if b.label == "Find similar segments").click().run()
    assert not at.exception, [e.value for e in at.exception]
    found = [m.value for m in at.markdown if "score **" in m.value]
    # the query is bell_00's first segment; "calm" tags tracks 0, 4 and 8, and its own track is excluded
    assert len(found) == 5 and all(("drum_04.wav" in f) or ("flute_08.wav" in f) for f in found), found


def test_switching_to_tracks_keeps_the_clicked_audio_and_more_like_this_opens_search(page):
    page.selectbox[0].set_value("toy").run()
    at = select(page, {"pick": [{"id": 5}]})  # drum_01.wav, its second segment
    assert at.subheader[0].value == "▶ drum_01.wav"
    at.radio[0].set_value("track").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value == "▶ drum_01.wav"  # its track, not track 5
    at.radio[0].set_value("segment").run()
    assert at.subheader[0].value == "▶ drum_01.wav"
    assert at.session_state[ui.PICKED_KEY] == 4  # the track's first segment, carried back
    more = next(b for b in at.button if b.label == "🔎 More like this")
    more.click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_search_opens_on_the_segment_more_like_this_names(small_db, monkeypatch):
    monkeypatch.setenv("AEB_DB", str(small_db))
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "4_Search.py"), default_timeout=120)
    at.query_params[ui.SEGMENT_PARAM] = "20"
    at.run()
    at.selectbox(key="search_space").select("toy").run()
    assert not at.exception, [e.value for e in at.exception]
    segment = next(s for s in at.selectbox if s.label == "Segment")
    assert segment.value == 20
    assert len(at.get("audio")) == 1 + 10  # searched at once: the query and its results play
    next(s for s in at.selectbox if s.label == "Label column").set_value("family").run()
    assert not at.exception, [e.value for e in at.exception]
    precision = next(m.value for m in at.markdown if m.value.startswith("**Precision@10"))
    family = Store(small_db).rows(np.array([20])).iloc[0]["family"]
    assert f"share the query's family (*{family}*)" in precision
    assert "family: **" in texts(at)  # each result shows its label


def test_chosen_values_get_the_colours_and_the_clicked_segment_is_drawn(page):
    import json

    page.selectbox[0].set_value("toy").run()
    next(s for s in page.selectbox if s.label == "Colour by").set_value("family").run()
    chosen = next(m for m in page.multiselect if m.label == "Values with a colour")
    assert chosen.options == ["bell", "drum", "flute"]
    chosen.set_value(["flute"]).run()
    assert not page.exception, [e.value for e in page.exception]
    spec = json.loads(page.get("vega_lite_chart")[0].proto.spec)
    scale = spec["hconcat"][0]["layer"][0]["encoding"]["color"]["scale"]
    assert scale["domain"] == ["flute", "other"] and scale["range"][1] == ex.GREY_VALUES["other"]
    at = select(page, {"pick": [{"id": 5}]})
    assert len(at.get("vega_lite_chart")) == 2  # the maps and the clicked segment's spectrogram and waveform


def test_k_occurrence_colour_and_the_hubs_to_listen_to(small_db):
    store = Store(small_db)
    ids = np.sort(store.vectors("toy")[0])
    title, values, description = ex.derived_colour(store, space="toy", ids=ids, level="segment", kind="k-occurrence",
                                                   k=4)
    assert title == "k-occurrence@4" and values.sum() == 4 * len(ids) and (values >= 0).all()
    assert "nearest neighbours in toy (cosine, own track excluded)" in description and "Skewness" in description
    found = store_k_occurrence(store, "toy", k=4)
    counts = pd.Series(found["counts"], index=found["ids"])
    top, anti = ex.hubs(store, found, n=3)
    assert top["k_occurrence"].tolist() == sorted(counts, reverse=True)[:3]
    assert top["id"].tolist() == counts.loc[top["id"]].index.tolist() and {"path", "start_s", "name"} <= set(top)
    assert (anti["k_occurrence"] == 0).all() and len(anti) == min(3, int((counts == 0).sum()))


def test_page_colours_by_k_occurrence_and_lists_hubs_with_players(page):
    colour = next(s for s in page.selectbox if s.label == "Colour by")
    colour.set_value("k-occurrence · hubs").run()
    assert not page.exception, [e.value for e in page.exception]
    next(s for s in page.selectbox if s.label == "Neighbours in the space of").set_value("toy").run()
    assert not page.exception, [e.value for e in page.exception]
    assert "Skewness" in texts(page) and "Hubs and anti-hubs of toy" in texts(page)
    assert len(page.get("audio")) >= 5  # the five hubs, and any anti-hubs


def test_tag_axes_read_a_taggers_scores_per_segment_and_as_track_means(small_db):
    from core import axes

    store = Store(small_db)
    stored = store.spaces()
    assert axes.tag_space("toy", stored) == axes.tag_space("toy/taggram", stored) == "toy/taggram"
    assert axes.tag_space("mine", stored) is None
    ids, scores = store.vectors("toy/taggram")
    segment = axes.tag_scores(store, "toy/taggram", "loud")
    assert segment.index.tolist() == ids.tolist() and segment.tolist() == scores[:, TAGS.index("loud")].tolist()
    tracks = axes.tag_scores(store, "toy/taggram", "loud", level="track")
    assert len(tracks) == 12 and set(tracks) == {0.0, 1.0}  # every segment of a track has the same tags here
    with pytest.raises(BadInput, match="toy/taggram has no tag 'quiet'"):
        axes.tag_scores(store, "toy/taggram", "quiet")
    kept, xy = axes.replace_axes(np.array([3, 1, 2]), np.array([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0]]),
                                 [pd.Series([10.0, 20.0], index=[1, 3]), None])
    assert kept.tolist() == [3, 1] and xy.tolist() == [[20.0, 5.0], [10.0, 6.0]]


def test_page_puts_a_tag_on_an_axis(page):
    space = next(s for s in page.selectbox if s.label == "Model A")
    space.set_value("toy").run()
    horizontal = next(s for s in page.selectbox if s.label == "Horizontal axis A")
    assert horizontal.options == ["the reduction", "a tag's score"]
    horizontal.set_value("tag").run()
    assert not page.exception, [e.value for e in page.exception]
    next(s for s in page.selectbox if s.key == "tag00").set_value("bright").run()
    assert not page.exception, [e.value for e in page.exception]
    spec = json.dumps(json.loads(page.get("vega_lite_chart")[0].proto.spec), ensure_ascii=False)
    assert "A: toy · x: tag 'bright' · y: PCA 2" in spec


def test_more_like_this_picks_a_track_then_its_segments_never_every_segment(small_db, monkeypatch):
    at = open_search(small_db, monkeypatch)
    next(t for t in at.text_input if t.label == "File name contains").input("DRUM").run()
    track = next(s for s in at.selectbox if s.label == "Track")
    assert track.options == ["drum_01.wav", "drum_04.wav", "drum_07.wav", "drum_10.wav"]
    tracks = Store(small_db).tracks_frame()
    track.set_value(int(tracks.loc[tracks["path"].str.endswith("drum_04.wav"), "track_id"].iloc[0])).run()
    segment = next(s for s in at.selectbox if s.label == "Segment")
    assert segment.options == ["0.0–1.0 s", "1.0–2.0 s", "2.0–3.0 s"]  # this track's, in time order, in this space
    next(b for b in at.button if b.label == "Find similar segments").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.value.startswith("Query: drum_04.wav · 0.0–1.0 s") for m in at.markdown)
