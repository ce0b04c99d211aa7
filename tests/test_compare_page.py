"""The Compare page and the ``metrics`` command, on a demo store holding two models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import cli
from core.analyses import store_metrics
from core.compare import CompareError
from core.demo import build
from core.extract import extract, read_metadata_csv
from core.store import Store
from tests.conftest import PROJECT_ROOT, import_noisy_copy

PAGE = str(PROJECT_ROOT / "pages/3_Compare.py")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """The demo collection in dsp, plus a perturbed copy of dsp imported as a second model."""
    folder = tmp_path_factory.mktemp("demo")
    csv = build(folder)
    db = tmp_path_factory.mktemp("db") / "demo.duckdb"
    extract([folder], ["dsp"], db=db, metadata=read_metadata_csv(csv, [folder]))
    import_noisy_copy(db)
    return db


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_on_an_empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("AEB_DB", str(tmp_path / "empty.duckdb"))
    at = run_page()
    assert "Nothing to compare yet" in at.info[0].value


def test_page_maps_disagreement_and_metrics(two_models, monkeypatch):
    monkeypatch.setenv("AEB_DB", str(two_models))
    at = run_page()
    assert at.multiselect[0].value == ["dsp", "noisy"]
    text = " ".join(c.value for c in at.caption)
    assert "294 segments are held by every chosen model" in text
    assert "1 − Jaccard@10 between dsp and noisy" in text
    assert len(at.get("vega_lite_chart")) == 2  # the linked maps and the CKA heat map
    table = at.dataframe[0].value
    assert list(table.index) == ["dsp (baseline)", "noisy"]
    assert "hubness" in table.columns and "trustworthiness" in table.columns
    assert "Why a group column matters" in text

    at.session_state["compare-2"] = {"selection": {"pick": [{"id": 5}]}}  # what a click on segment 5 sends
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.subheader[0].value.startswith("▶ ")
    assert len(at.get("audio")) == 1 + 2 * 10  # the clicked segment and its neighbours in each model
    assert any("nearest neighbours in each model" in c.value for c in at.caption)

    label = next(s for s in at.selectbox if s.label == "Label column")
    label.set_value("family").run()
    group = next(s for s in at.selectbox if s.label == "Group column")
    group.set_value("family").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert {"knn_acc_k1", "knn_acc_k10", "macro_f1", "silhouette", "nmi", "ari"} <= set(table.columns)
    # every neighbour shares no family with the query: 1-NN accuracy on family must be 0
    assert table.loc["dsp (baseline)", "knn_acc_k1"] == 0.0
    explained = " ".join(m.value for m in at.markdown)
    assert "knn_acc" in explained and "cka" in explained
    assert list(table.columns[:3]) == ["knn_acc_k1", "knn_acc_k1 95% CI", "knn_acc_k10"]  # accuracy first
    assert table.loc["noisy", "knn_acc_k10 95% CI"].startswith("[")
    assert "**Chance** for *family*: 0.1" in explained and "whole groups of family" in explained
    assert next(s for s in at.selectbox if s.key == "per-label-model").value == "dsp"
    # maps, the clicked segment's preview and its 2 × 10 neighbours' (compact), per-label accuracy, confusion, CKA
    assert len(at.get("vega_lite_chart")) == 1 + 1 + 20 + 3
    assert "family: **" in " ".join(m.value for m in at.markdown)  # the label column beside each neighbour


def test_metrics_command_prints_the_design_shape(two_models, capsys):
    rc = cli.main(["metrics", "--model", "noisy", "--label", "family", "--db", str(two_models), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["dsp", "noisy", "pairs", "info"]
    assert {"knn_acc_k1", "knn_acc_k10", "macro_f1", "silhouette", "nmi", "ari", "hubness",
            "trustworthiness"} <= set(out["dsp"])
    assert set(out["pairs"]["dsp|noisy"]) == {"cka", "jaccard_at_k"}
    assert 0 < out["pairs"]["dsp|noisy"]["cka"] < 1
    assert out["info"]["n"] == 294 and out["info"]["sampled"] is None and out["info"]["level"] == "segment"
    from core.demo import FAMILIES
    assert set(out["dsp"]["per_class"]) == set(FAMILIES) and all(0 <= v <= 1 for v in out["dsp"]["per_class"].values())
    for metric in ("knn_acc_k1", "knn_acc_k10", "macro_f1"):
        low, high = out["dsp"]["ci95"][metric]
        assert low <= out["dsp"][metric] <= high
    assert 0 < out["dsp"]["chance"] <= out["dsp"]["majority"] <= 1
    assert out["info"]["resampled"] == "items" and out["info"]["n_resamples"] == 1000

    rc = cli.main(["metrics", "--model", "noisy", "--level", "track", "-k", "3", "--db", str(two_models), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["info"]["n"] == 144 and out["info"]["k"] == 3 and "knn_acc_k1" not in out["dsp"]


@pytest.mark.parametrize("argv, reason", [
    (["--model", "nope"], "No embeddings for 'nope'"),
    (["--model", "noisy", "--label", "colour"], "No metadata column 'colour'"),
    (["--model", "noisy", "--group", "colour"], "No metadata column 'colour'"),
])
def test_metrics_command_refuses_unknown_names(two_models, capsys, argv, reason):
    assert cli.main(["metrics", *argv, "--db", str(two_models)]) == 2
    err = capsys.readouterr().err
    assert reason in err and len(err.strip().splitlines()) == 1


def test_metrics_are_cached_until_the_data_changes(two_models):
    store = Store(two_models)
    first = store_metrics(store, ["dsp", "noisy"], label="family", k=5)
    second = store_metrics(store, ["dsp", "noisy"], label="family", k=5)
    assert not first["info"]["cached"] and second["info"]["cached"]
    assert second["dsp"]["knn_acc_k5"] == first["dsp"]["knn_acc_k5"]
    store.bump_metadata_version()
    assert not store_metrics(store, ["dsp", "noisy"], label="family", k=5)["info"]["cached"]


def test_disagreement_is_stored_and_neighbours_skip_the_own_track(two_models):
    from core import spaces
    from core.analyses import store_disagreement
    from core.compare import point_neighbours

    store = Store(two_models)
    first = store_disagreement(store, "dsp", "noisy", k=5)
    assert not first["cached"] and store_disagreement(store, "dsp", "noisy", k=5)["cached"]
    assert len(first["ids"]) == 294 and first["sampled"] is None
    assert all(0.0 <= v <= 1.0 for v in first["disagreement"])
    with pytest.raises(CompareError, match="two different models"):
        store_disagreement(store, "dsp", "dsp")

    space = spaces.load(store, "dsp")
    query = int(space.ids[0])
    ids, sims = point_neighbours(space.ids, space.track_ids, space.vectors, query, k=5)
    assert len(ids) == 5 and (np.diff(sims) <= 0).all()
    own = space.track_ids[0]
    assert not np.isin(ids, space.ids[space.track_ids == own]).any()


def test_large_collections_are_sampled_and_say_so(two_models):
    from core.analyses import store_disagreement

    store = Store(two_models)
    table = store_metrics(store, ["dsp", "noisy"], k=5, method=None, max_points=100)
    assert table["info"]["sampled"] == 100 and table["info"]["n"] == 294 and "trustworthiness" not in table["dsp"]
    scored = store_disagreement(store, "dsp", "noisy", k=5, max_points=100)
    assert scored["sampled"] == 100 and len(scored["disagreement"]) == 100 and scored["n"] == 294


def test_cli_says_why_a_missing_model_cannot_be_made_and_prints_the_grid(two_models, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["search", "--model", "clap-htsat-unfused", "--text", "a dog", "--db", str(two_models)]) == 2
    err = capsys.readouterr().err
    assert "none can be made here" in err and "Hugging Face cache" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["info", "--db", str(two_models)]) == 0
    out = capsys.readouterr().out
    assert "144 tracks, 294 segments, grid 3 s windows every 3 s" in out and "{" not in out


def test_linear_probe_and_k_occurrence_are_cached_per_model_until_the_data_changes(two_models):
    from core.analyses import store_k_occurrence, store_linear_probe

    store = Store(two_models)
    probe = store_linear_probe(store, "dsp", label="family")
    assert not probe["cached"] and (probe["n"], probe["of"], probe["folds"]) == (294, 294, 3)
    assert 0.5 < probe["accuracy"] <= 1.0  # eight synthetic families are far apart in dsp
    again = store_linear_probe(store, "dsp", label="family")
    assert again["cached"] and again["accuracy"] == probe["accuracy"]
    store.bump_metadata_version()
    assert not store_linear_probe(store, "dsp", label="family")["cached"]

    found = store_k_occurrence(store, "dsp", k=5)
    assert not found["cached"] and len(found["ids"]) == len(found["counts"]) == 294 and found["sampled"] is None
    assert sum(found["counts"]) == 5 * 294
    table = store_metrics(store, ["dsp"], k=5, method=None)
    assert found["skewness"] == pytest.approx(table["dsp"]["hubness"])
    assert store_k_occurrence(store, "dsp", k=5)["cached"]
