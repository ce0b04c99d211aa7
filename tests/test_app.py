"""AppTest drives every page headless, with an empty store and with a filled one."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from core.demo import build
from core.extract import extract, read_metadata_csv
from core.store import Store
from tests.conftest import PROJECT_ROOT

PAGES = ["streamlit_app.py", "pages/1_Extract.py", "pages/2_Explore.py", "pages/3_Compare.py", "pages/4_Search.py"]


@pytest.fixture
def empty_db(tmp_path, monkeypatch):
    db = tmp_path / "empty.duckdb"
    monkeypatch.setenv("AEB_DB", str(db))
    return db


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    csv = build(folder)
    db = tmp_path_factory.mktemp("db") / "demo.duckdb"
    report = extract([folder], ["dsp"], db=db, metadata=read_metadata_csv(csv, [folder]))
    assert report.stored == 144 and not report.failures
    return db


def run(page: str) -> AppTest:
    at = AppTest.from_file(str(PROJECT_ROOT / page), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("page", PAGES)
def test_pages_render_on_an_empty_store(empty_db, page):
    at = run(page)
    text = " ".join(m.value for m in [*at.markdown, *at.info, *at.caption])
    if page == "pages/2_Explore.py":
        assert "Nothing to explore yet" in text
    if page == "streamlit_app.py":
        assert any(b.label == "Load the demo collection" for b in at.button)


def test_home_summarises_a_filled_store(demo_db, monkeypatch):
    monkeypatch.setenv("AEB_DB", str(demo_db))
    at = run("streamlit_app.py")
    assert [m.value for m in at.metric][:2] == ["144", "294"]


def test_extract_page_runs_a_folder_and_lists_its_failures(tmp_path, monkeypatch):
    from tests.conftest import tone
    import soundfile as sf

    folder = tmp_path / "mine"
    folder.mkdir()
    sf.write(folder / "a.wav", tone(440, 4.0), 22050)
    (folder / "broken.wav").write_text("not audio")
    db = tmp_path / "x.duckdb"
    monkeypatch.setenv("AEB_DB", str(db))
    at = run("pages/1_Extract.py")
    at.text_input[0].input(str(folder)).run()
    assert "dsp (128-D)" in at.multiselect[0].options
    at.multiselect[0].set_value(["dsp"]).run()
    at.button[0].click().run()
    assert not at.exception
    failures = at.dataframe[-1].value
    assert list(failures["path"]) == [str(folder / "broken.wav")]
    assert "not a readable audio file" in failures["message"].iloc[0]


def test_explore_colours_and_plays_a_clicked_segment(demo_db, monkeypatch):
    monkeypatch.setenv("AEB_DB", str(demo_db))
    at = run("pages/2_Explore.py")
    assert at.selectbox[0].value == "dsp"
    next(s for s in at.selectbox if s.label == "Colour by").set_value("family").run()
    assert not at.exception
    assert any("294" in c.value for c in at.caption)


def test_extract_page_refuses_a_missing_csv_and_reports_rows_matched(tmp_path, monkeypatch):
    from tests.conftest import tone
    import soundfile as sf

    folder = tmp_path / "mine"
    folder.mkdir()
    sf.write(folder / "a.wav", tone(440, 4.0), 22050)
    monkeypatch.setenv("AEB_DB", str(tmp_path / "x.duckdb"))
    at = run("pages/1_Extract.py")
    at.text_input[0].input(str(folder)).run()
    at.text_input[1].input(str(tmp_path / "missing.csv")).run()
    at.multiselect[0].set_value(["dsp"]).run()
    assert any("missing.csv: no such file" in e.value for e in at.error)
    run_button = next(b for b in at.button if b.label == "Run extraction")
    assert run_button.disabled
    (tmp_path / "meta.csv").write_text("path,label\nelsewhere.wav,cat\n")
    at.text_input[1].input(str(tmp_path / "meta.csv")).run()
    assert not at.error
    run_button = next(b for b in at.button if b.label == "Run extraction")
    assert not run_button.disabled
    run_button.click().run()
    assert not at.exception
    assert any("0 of 1 CSV rows matched" in w.value for w in at.warning)


def test_extract_page_runs_with_workers_a_batch_size_and_bf16_asked(tmp_path, monkeypatch):
    from core.store import Store
    from tests.conftest import tone_files

    folder = tone_files(tmp_path / "mine", 3, 4.0)
    (folder / "broken.wav").write_text("not audio")
    db = tmp_path / "x.duckdb"
    monkeypatch.setenv("AEB_DB", str(db))
    at = run("pages/1_Extract.py")
    at.text_input[0].input(str(folder)).run()
    at.multiselect[0].set_value(["dsp"]).run()
    assert "cpu" in next(s for s in at.selectbox if s.label == "Device").options
    next(n for n in at.number_input if n.label == "Worker processes").set_value(2)
    next(n for n in at.number_input if n.label == "Batch size").set_value(3)
    next(r for r in at.radio if r.label == "Precision").set_value("bf16").run()
    assert any("run in fp32 all the same" in c.value and "dsp" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Run extraction").click().run()
    assert not at.exception
    store = Store(db)
    assert store.info()["tracks"] == 3 and store.space("dsp")["adapter_version"] == "1"  # dsp is not cleared for bf16
    assert list(at.dataframe[-1].value["path"]) == [str(folder / "broken.wav")]


def test_explore_lists_points_on_one_spot_with_players_when_no_zoom_can_split_them(tmp_path, monkeypatch):
    """25 silent segments share one vector, hence one spot on every map: no zoom can draw them apart, so above
    the drawing cap the page lists them, a page of players at a time."""
    import numpy as np
    import soundfile as sf

    from core.exchange import vector_column
    from core.reduce import canonical_params
    from core.store import Provenance

    sf.write(tmp_path / "silence.wav", np.zeros(25 * 22050, dtype=np.float32), 22050)
    rows = pa.table({"path": [str(tmp_path / "silence.wav")] * 25, "start_s": np.arange(25.0),
                     "end_s": np.arange(25.0) + 1}).append_column("vector", vector_column(np.ones((25, 8), np.float32)))
    store = Store(tmp_path / "heap.duckdb")
    store.add_imported(Provenance("heap", "heap", 8, "1", "", source="imported"), rows)
    ids, _ = store.vectors("heap")
    for method in ("pca", "std-pca"):
        store.put_projection("heap", "segment", method, json.dumps(canonical_params(method), sort_keys=True),
                             store.data_version("heap"), ids, np.zeros((25, 2), np.float32), 0.0, {"params": {}})
    monkeypatch.setenv("AEB_DB", str(tmp_path / "heap.duckdb"))
    monkeypatch.setenv("AEB_DRAW_CAP", "10")
    at = run("pages/2_Explore.py")
    assert [h.value for h in at.subheader] == ["25 points on one spot"]
    assert len(at.get("audio")) == 10  # the first page of players
    next(n for n in at.number_input if n.label == "Page").set_value(3).run()
    assert not at.exception
    assert len(at.get("audio")) == 5


def test_explore_counts_every_point_as_density_above_the_drawing_cap(demo_db, monkeypatch):
    monkeypatch.setenv("AEB_DB", str(demo_db))
    monkeypatch.setenv("AEB_DRAW_CAP", "50")
    at = run("pages/2_Explore.py")
    assert any("more than the 50 drawn" in c.value for c in at.caption)
    maps = at.get("vega_lite_chart")[-1].proto  # the linked maps, below the overview
    layers = [view["layer"] for view in json.loads(maps.spec)["hconcat"]]
    assert [view[0]["data"]["name"] for view in layers] == ["density", "density"]  # under each view's points
    assert [view[0]["transform"] for view in layers] == [[{"filter": "datum.view == 0"}], [{"filter": "datum.view == 1"}]]
    datasets = {d.name: pa.ipc.open_stream(d.data.data).read_pandas() for d in maps.datasets}
    assert len(datasets["points"]) == 50
    counted = datasets["density"].groupby("view")["count"].sum()
    assert list(counted) == [Store(demo_db).info()["segments"]] * 2  # every point, in each view
    zoom_in = next(b for b in at.button if b.label == "Zoom in")
    assert zoom_in.disabled  # no box dragged yet
    next(s for s in at.selectbox if s.label == "Colour by").set_value("family").run()
    assert not at.exception
    assert any("more than the 50 drawn" in c.value for c in at.caption)


def test_a_box_dragged_on_map_b_zooms_both_maps_to_the_points_inside_it_in_b(demo_db, monkeypatch):
    """A cluster that only map B separates can be zoomed into there: the region is B's box, in B's coordinates."""
    import numpy as np

    from core.reduce import cached_projection

    monkeypatch.setenv("AEB_DB", str(demo_db))
    monkeypatch.setenv("AEB_DRAW_CAP", "50")
    at = run("pages/2_Explore.py")
    assert next(b for b in at.button if b.label == "Zoom to the box").disabled  # nothing dragged on the maps yet
    projection = cached_projection(Store(demo_db), "dsp", "std-pca")  # map B, as the page stored it
    ids, xy = np.asarray(projection["ids"]), np.asarray(projection["xy"], dtype=np.float64)
    (x_lo, y_lo), (x_hi, y_hi) = np.quantile(xy, 0.25, axis=0), np.quantile(xy, 0.75, axis=0)
    inside = ids[(xy[:, 0] >= x_lo) & (xy[:, 0] <= x_hi) & (xy[:, 1] >= y_lo) & (xy[:, 1] <= y_hi)]
    assert 0 < len(inside) < len(ids)
    at.session_state["map-2-select-segment-0"] = {"selection": {"pick": [], "brush0": {}, "brush1": {
        "x1": [float(x_hi), float(x_lo)], "y1": [float(y_lo), float(y_hi)]}}}  # dragged right to left
    at.run()
    next(b for b in at.button if b.label == "Zoom to the box").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value == f"whole map › zoom 1 (B) — {len(inside):,} points in this region" for c in at.caption)
    maps = at.get("vega_lite_chart")[-1].proto
    drawn = {d.name: pa.ipc.open_stream(d.data.data).read_pandas() for d in maps.datasets}["points"]
    assert set(drawn["id"]) <= set(inside.tolist()) and len(drawn) == min(len(inside), 50)
    next(b for b in at.button if b.label.endswith("Back")).click().run()
    assert not any("zoom 1" in c.value for c in at.caption)
