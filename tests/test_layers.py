"""Layers in one pass and layer by layer: a tiny MERT checkpoint (``save_tiny_mert``) through the real pipeline.

Each test counts the network's forward calls with a hook, so "one pass"
is checked on the model itself rather than inferred from timings.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from core import cli
from core.analyses import layered_models, store_layers
from core.extract import extract, read_metadata_csv
from core.models import base, mert
from core.store import Store
from tests.conftest import TINY_MERT_LAYERS, tone
from tests.test_mert import adapter, tiny_folder  # noqa: F401  (the tiny MERT fixtures, shared)

SR = 22050
N_FILES = 8


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Eight 4 s files in two kinds (tones, noise), four sources, with a CSV of labels."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_FILES):
        kind = "tone" if i % 2 else "noise"
        y = tone(220.0 * (1 + i), 4.0) if kind == "tone" else 0.3 * rng.standard_normal(4 * SR).astype(np.float32)
        sf.write(folder / f"clip{i}.wav", y, SR)
        rows.append({"path": f"clip{i}.wav", "kind": kind, "source": f"s{i // 2}"})
    pd.DataFrame(rows).to_csv(folder / "meta.csv", index=False)
    return folder


class Forwards:
    """Counts the forward calls of a torch module while the block runs."""

    def __init__(self, module):
        self.module, self.calls = module, 0

    def __enter__(self):
        self.handle = self.module.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _layer_keys(adapter) -> list[str]:
    return [adapter.entry.layer_spaces[n] for n in range(TINY_MERT_LAYERS + 1)]


def test_every_layer_costs_the_forward_passes_of_one(adapter, collection, tmp_path):
    with Forwards(adapter.model) as one:
        extract([collection], [adapter.entry.key], db=tmp_path / "one.duckdb", adapters=[adapter], layers=(1,))
    with Forwards(adapter.model) as every:
        report = extract([collection], [adapter.entry.key], db=tmp_path / "all.duckdb", adapters=[adapter],
                         layers="all")
    assert report.stored == N_FILES and not report.failures
    assert one.calls == every.calls > 0
    everything = Store(tmp_path / "all.duckdb")
    assert list(everything.spaces()["space"]) == sorted([adapter.entry.key, *_layer_keys(adapter)])
    assert set(everything.spaces()["n"]) == {N_FILES}  # one 4 s file is one segment on the 3 s grid
    layer_1 = adapter.entry.layer_spaces[1]
    np.testing.assert_array_equal(everything.vectors(layer_1)[1], Store(tmp_path / "one.duckdb").vectors(layer_1)[1])


def test_resuming_adds_the_missing_layers_only(adapter, collection, tmp_path):
    db = tmp_path / "resume.duckdb"
    extract([collection], [adapter.entry.key], db=db, adapters=[adapter], layers=(1,))
    store = Store(db)
    version = store.data_version(adapter.entry.layer_spaces[1])
    with Forwards(adapter.model) as more:
        report = extract([collection], [adapter.entry.key], db=db, adapters=[adapter], layers="all")
    assert more.calls > 0 and report.stored == N_FILES and report.skipped == 0
    assert store.data_version(adapter.entry.layer_spaces[1]) == version  # stored once, not rewritten
    assert set(store.info()["embeddings"]) == {adapter.entry.key, *_layer_keys(adapter)}
    with Forwards(adapter.model) as again:
        report = extract([collection], [f"{adapter.entry.key}#l2"], db=db, adapters=[adapter])
    assert again.calls == 0 and report.skipped == N_FILES


def test_stored_legacy_keys_stay_and_are_found_by_both_spellings(adapter, collection, tmp_path):
    """A store made when layers were catalogue keys of their own holds ``mert-v1-95m-l1``; it is reused, not renamed."""
    entry = dataclasses.replace(mert.CATALOGUE[0], dim=adapter.entry.dim, layers=tuple(range(TINY_MERT_LAYERS + 1)))
    as_95m = mert.MertAdapter(entry, adapter.model, adapter.processor, adapter.weights_sha256, "cpu")
    db = tmp_path / "legacy.duckdb"
    extract([collection], ["mert-v1-95m"], db=db, adapters=[as_95m], layers=(1,))
    store = Store(db)
    with store.connect() as con:
        con.execute("UPDATE spaces SET space = 'mert-v1-95m-l1', model = 'mert-v1-95m-l1' WHERE space = 'mert-v1-95m/l1'")
    with Forwards(adapter.model) as forwards:
        extract([collection], ["mert-v1-95m-l1", "mert-v1-95m/l2"], db=db, adapters=[as_95m])
    assert forwards.calls > 0
    assert set(store.info()["embeddings"]) == {"mert-v1-95m", "mert-v1-95m-l1", "mert-v1-95m/l2"}
    assert layered_models(store) == {"mert-v1-95m": {1: "mert-v1-95m-l1", 2: "mert-v1-95m/l2"}}
    for spelling in ("mert-v1-95m/l1", "mert-v1-95m-l1"):
        assert cli.main(["project", "--model", spelling, "--method", "pca", "--db", str(db)]) == 0


def test_the_command_line_takes_layers_and_refuses_what_cannot_be_done(tiny_folder, collection, tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    key = f"mert:{tiny_folder}"
    assert cli.main(["extract", str(collection), "--model", key, "--layers", "0-1", "--db", str(db)]) == 0
    assert set(Store(db).info()["embeddings"]) == {key, f"{key}#l0", f"{key}#l1"}
    capsys.readouterr()
    for argv, reason in [
        (["--model", key, "--layers", "5"], f"{key} has hidden states 0-2, not 5"),
        (["--model", f"{key}#l7"], "has no output 'l7'; it has layers 0-2 as lN"),
        (["--model", "dsp", "--layers", "all"], "none of dsp has hidden layers"),
        (["--model", key, "--layers", "1-"], "Cannot read the layers '1-'"),
    ]:
        assert cli.main(["extract", str(collection), *argv, "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert reason in err and len(err.strip().splitlines()) == 1
    assert set(Store(db).info()["embeddings"]) == {key, f"{key}#l0", f"{key}#l1"}  # nothing was written


@pytest.fixture(scope="module")
def layered_store(adapter, collection, tmp_path_factory):
    db = tmp_path_factory.mktemp("layered") / "store.duckdb"
    metadata = read_metadata_csv(collection / "meta.csv", [collection])
    extract([collection], [adapter.entry.key, "dsp"], db=db, adapters=[adapter, base.load_model("dsp")],
            layers="all", metadata=metadata)
    return db


def test_layer_figures_shapes_and_cka_of_a_layer_with_itself(adapter, layered_store):
    store = Store(layered_store)
    found = store_layers(store, adapter.entry.key, label="kind", k=3, against=["dsp"])
    n_layers = TINY_MERT_LAYERS + 1
    assert found["layers"] == list(range(n_layers)) and found["spaces"] == _layer_keys(adapter)
    cka = np.array(found["cka"])
    assert cka.shape == (n_layers, n_layers)
    np.testing.assert_allclose(np.diag(cka), 1.0, atol=1e-9)
    np.testing.assert_allclose(cka, cka.T)
    assert len(found["knn_acc"]) == len(found["ci95"]) == len(found["against"]["dsp"]) == n_layers
    for accuracy, (low, high) in zip(found["knn_acc"], found["ci95"]):
        assert 0.0 <= low <= accuracy <= high <= 1.0
    assert found["n"] == N_FILES and not found["cached"]
    assert store_layers(store, adapter.entry.key, label="kind", k=3, against=["dsp"])["cached"]
    with pytest.raises(base.BadInput, match="No layer spaces of 'dsp' are stored"):
        store_layers(store, "dsp")


def test_metrics_command_adds_a_top_level_layers_object(adapter, layered_store, capsys):
    key = adapter.entry.key
    argv = ["metrics", "--model", key, "--label", "kind", "--group", "source", "-k", "3", "--layers", "--json",
            "--db", str(layered_store)]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["dsp", key, "pairs", "info", "layers"]
    layers = out["layers"][key]
    assert layers["layers"] == [0, 1, 2] and list(layers["against"]) == ["dsp"] and layers["group"] == "source"
    assert set(out[key]["linear_probe"]) == {"accuracy", "macro_f1", "n", "of", "folds"}
    assert cli.main([a for a in argv if a != "--json"]) == 0
    assert f"{key}, layer by layer" in capsys.readouterr().out
    assert cli.main(["metrics", "--model", "dsp", "--layers", "--db", str(layered_store)]) == 2
    assert "has stored layer spaces" in capsys.readouterr().err


def test_compare_page_shows_the_layers_and_a_click_opens_one_in_explore(adapter, layered_store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PROJECT_ROOT

    monkeypatch.setenv("AEB_DB", str(layered_store))
    at = AppTest.from_file(str(PROJECT_ROOT / "streamlit_app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/3_Compare.py").run()  # k = 10 is more than the 8 items minus their own track: choose 3
    next(s for s in at.slider if s.label == "k (neighbours)").set_value(3).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Layer by layer" in [h.value for h in at.header]
    assert next(s for s in at.selectbox if s.label == "Model with layers").value == adapter.entry.key
    assert any("k-NN accuracy per layer" in i.value for i in at.info)  # no label chosen yet
    next(s for s in at.selectbox if s.label == "Label column").set_value("kind").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("k-NN accuracy per layer" in i.value for i in at.info)
    assert next(m for m in at.multiselect if m.label == "Each layer's CKA against").value == ["dsp"]
    assert any("Click a layer's point to open its map in Explore" in c.value for c in at.caption)

    next(t for t in at.toggle if t.label == "Linear probe").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "linear_probe" in at.dataframe[0].value.columns
    assert any(c.value.startswith("Linear probe: standardised logistic regression, 3 folds") for c in at.caption)

    at.session_state["layers-accuracy"] = {"selection": {"layer": [{"layer": 1}]}}  # what a click on layer 1 sends
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["explore_open_space"] == adapter.entry.layer_spaces[1]
    assert at.title[0].value == "🗺️ Explore"
    assert next(s for s in at.selectbox if s.label == "Model A").value == adapter.entry.layer_spaces[1]
