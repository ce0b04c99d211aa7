"""Projections: what each method reports, and that the store computes each once."""

from __future__ import annotations

import numpy as np
import pytest

from core.compare import trustworthiness
from core.reduce import ReduceError, cached_projection, canonical_params, project
from core.store import Provenance, Store, TrackRecord


def blobs(n_per: int = 40, dim: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n_per, dim)) + 8 * np.eye(dim)[i] for i in range(3)]).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "r.duckdb")
    s.ensure_grid(1.0, 1.0)
    s.prepare_space(Provenance("m", "m", 12, "1", "sha"))
    x = blobs()
    s.write_tracks([TrackRecord(f"/t{t}.wav", f"h{t}", 4.0, 22050, 1, "WAV", np.array([[0, 1], [1, 2], [2, 3], [3, 4.0]]),
                                {"m": x[4 * t: 4 * t + 4]}) for t in range(30)])
    return s


@pytest.mark.parametrize("method", ["pca", "std-pca"])
def test_pca_reports_explained_variance_and_separates_blobs(method):
    x = blobs()
    xy, info = project(x, method)
    assert xy.shape == (120, 2) and xy.dtype == np.float32
    assert len(info["explained_variance"]) == 2 and 0 < sum(info["explained_variance"]) <= 1
    assert trustworthiness(x, xy) > 0.8


def test_tsne_caps_perplexity_for_small_sets_and_keeps_neighbours():
    x = blobs(n_per=10)
    xy, info = project(x, "tsne", {"perplexity": 50})
    assert xy.shape == (30, 2) and info["params"]["perplexity"] < 10
    assert trustworthiness(x, xy) > 0.8


def test_degenerate_sizes_and_bad_methods():
    assert project(np.zeros((0, 4)), "umap")[0].shape == (0, 2)
    assert project(np.ones((2, 4)), "tsne")[0].shape == (2, 2)
    with pytest.raises(ReduceError, match="use one of"):
        canonical_params("mds")
    assert canonical_params("umap", {"n_neighbors": 5, "bogus": 1}) == {"n_neighbors": 5, "min_dist": 0.1, "metric": "cosine"}


def test_cached_projection_computes_once_per_data_version(store):
    announced = []
    first = cached_projection(store, "m", "pca", on_compute=announced.append)
    assert announced == [120] and not first["cached"] and first["info"]["trust_sample"] == 120
    again = cached_projection(store, "m", "pca", on_compute=announced.append)
    assert announced == [120] and again["cached"]
    assert np.array_equal(again["ids"], first["ids"]) and np.allclose(again["xy"], first["xy"])
    tracks = cached_projection(store, "m", "std-pca", level="track")
    assert len(tracks["ids"]) == 30
    store.write_tracks([TrackRecord("/new.wav", "hn", 1.0, 22050, 1, "WAV", np.array([[0, 1.0]]),
                                    {"m": blobs()[:1]})])
    assert not cached_projection(store, "m", "pca", on_compute=announced.append)["cached"]  # new data, new map
    assert announced == [120, 121]


@pytest.mark.slow
def test_umap_keeps_neighbours():
    """UMAP's numba compilation costs 25-80 s in a fresh process, so it is tested once, here."""
    x = blobs()
    xy, info = project(x, "umap", {"n_neighbors": 10})
    assert xy.shape == (120, 2) and info["params"]["n_neighbors"] == 10
    assert trustworthiness(x, xy) > 0.8


@pytest.mark.slow
def test_large_sets_are_fit_on_a_sample_and_the_rest_placed():
    x = blobs(n_per=200)  # 600 points in 3 blobs
    blob = np.repeat(np.arange(3), 200)
    steps = []
    xy, info = project(x, "tsne", sample_above=400, fit_sample=200, progress=lambda *a: steps.append(a))
    assert xy.shape == (600, 2) and np.isfinite(xy).all()
    assert info["fit_sample"] == 200 and info["placed"] == 400
    fitted = np.sort(np.random.default_rng(42).choice(600, 200, replace=False))  # the seed's sample
    placed = np.setdiff1d(np.arange(600), fitted)
    nearest_fitted = fitted[np.argmin(((xy[placed, None] - xy[None, fitted]) ** 2).sum(-1), axis=1)]
    assert np.mean(blob[nearest_fitted] == blob[placed]) > 0.98  # each point lands among its own kind
    assert trustworthiness(x, xy) > 0.85
    fit_steps = [s for s in steps if s[2].startswith("fitting")]
    place_steps = [s for s in steps if s[2].startswith("placing")]
    assert fit_steps[0][:2] == (0, 200) and fit_steps[-1][:2] == (200, 200) and len(fit_steps) > 3  # per iterations
    assert [d for d, _, _ in fit_steps] == sorted(d for d, _, _ in fit_steps)
    assert place_steps[-1][:2] == (400, 400)


def test_cli_project_says_the_map_was_fit_on_a_sample(store, monkeypatch, capsys):
    import json

    from core import cli, reduce

    monkeypatch.setattr(reduce, "SAMPLE_ABOVE", 100)
    monkeypatch.setattr(reduce, "FIT_SAMPLE", 60)
    assert cli.main(["project", "--model", "m", "--method", "tsne", "--db", str(store.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 120 and out["fit_sample"] == 60 and out["placed"] == 60 and out["trustworthiness"] > 0.8
    again = cached_projection(store, "m", "tsne")
    assert again["cached"] and again["info"]["fit_sample"] == 60  # stored with the map, for the screen to say
    assert cli.main(["project", "--model", "m", "--method", "tsne", "--db", str(store.path)]) == 0
    assert "fit on a sample of 60 and the other 60 placed" in capsys.readouterr().out


def test_cli_project_sampling_settings_refit_a_map_fit_otherwise_and_reuse_one_fit_alike(store, capsys):
    import json

    from core import cli, reduce

    def run(*flags):
        assert cli.main(["project", "--model", "m", "--method", "tsne", "--db", str(store.path), "--json", *flags]) == 0
        return json.loads(capsys.readouterr().out)

    assert "fit_sample" not in run()  # 120 points: under the default threshold, fit on all
    out = run("--sample-above", "50", "--fit-sample", "4e1")
    assert (out["cached"], out["fit_sample"], out["placed"]) == (False, 40, 80)
    assert run("--sample-above", "1_00", "--fit-sample", "40")["cached"]  # 120 > 100: the same 40-point fit will do
    assert run()["fit_sample"] == 40  # without settings any stored map is used: the app shows what was computed
    full = run("--sample-above", "1000")
    assert not full["cached"] and "fit_sample" not in full and run()["cached"]
    assert cli.main(["project", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())  # the help gives the defaults the code uses
    assert f"(default {reduce.SAMPLE_ABOVE:,})" in shown and f"(default {reduce.FIT_SAMPLE:,})" in shown


@pytest.mark.slow
def test_umap_places_the_points_it_was_not_fit_on():
    x = blobs(n_per=100)
    xy, info = project(x, "umap", {"n_neighbors": 10}, sample_above=200, fit_sample=150)
    assert info["fit_sample"] == 150 and info["placed"] == 150
    assert trustworthiness(x, xy) > 0.8


def test_progress_lines_give_each_steps_time_left():
    from core.progress import describe

    assert describe(0, 50_000, "fitting UMAP on 50,000 points", 0.0) == "fitting UMAP on 50,000 points: 0 of 50,000"
    assert describe(100, 1_000, "placing", 0.5) == "placing: 100 of 1,000"  # under a second: no rate yet
    assert describe(100, 1_000, "placing", 10.0) == "placing: 100 of 1,000, about 2 min left"  # 90 s
    assert describe(500, 1_000, "placing", 20.0) == "placing: 500 of 1,000, about 20 s left"
    assert describe(1_000, 1_000, "placing", 20.0) == "placing: 1,000 of 1,000"
