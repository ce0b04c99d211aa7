"""Prompt axes: a tiny CLAP checkpoint (``_save_tiny_clap``) embeds the audio and the prompts through the real code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics.pairwise import cosine_similarity
from streamlit.testing.v1 import AppTest

from core import axes, spaces
from core.extract import extract
from core.models import base
from core.store import Store
from tests.conftest import PROJECT_ROOT, tone
from tests.test_clap import _save_tiny_clap

SR = 22050


@pytest.fixture(scope="module")
def clap_store(tmp_path_factory):
    """Four 6 s files (two tones, two noises) in a tiny CLAP's space: two segments each on the 3 s grid."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(1)
    for i in range(4):
        y = tone(300.0 * (i + 1), 6.0) if i % 2 else 0.3 * rng.standard_normal(6 * SR).astype(np.float32)
        sf.write(folder / f"clip{i}.wav", y, SR)
    model = _save_tiny_clap(tmp_path_factory.mktemp("tiny-clap") / "model")
    key = f"clap:{model}"
    adapter = base.load_model(key, device="cpu")
    db = tmp_path_factory.mktemp("db") / "clap.duckdb"
    report = extract([folder], [key], db=db, adapters=[adapter])
    assert report.stored == 4 and not report.failures
    return db, adapter


def test_only_a_text_audio_models_own_space_takes_prompts(clap_store):
    _, adapter = clap_store
    key = adapter.entry.key
    assert axes.text_model(key) == key
    assert axes.text_model("dsp") is None and axes.text_model("mert-v1-95m/l6") is None
    assert axes.text_model("imported-vectors") is None


@pytest.mark.parametrize("level", ["segment", "track"])
def test_axis_values_are_the_cosine_to_the_prompt_embedding(clap_store, level):
    db, adapter = clap_store
    store = Store(db)
    key = adapter.entry.key
    loaded = spaces.load(store, key, level)
    ids, raw = spaces.read_vectors(store, key, level)
    assert loaded.vectors.shape == (8 if level == "segment" else 4, adapter.entry.dim)
    dog, rain = adapter.embed_text(["dog bark", "rain on window"])
    expected = cosine_similarity(raw, dog[None]).ravel()
    np.testing.assert_allclose(axes.prompt_scores(loaded.vectors, dog), expected, atol=1e-5)
    difference = expected - cosine_similarity(raw, rain[None]).ravel()
    np.testing.assert_allclose(axes.prompt_scores(loaded.vectors, dog, rain), difference, atol=1e-5)
    assert np.ptp(expected) > 0  # the prompt tells the points apart
    with pytest.raises(base.BadInput, match="does not fit a 24-D space"):
        axes.prompt_scores(loaded.vectors, dog[:5])


def test_explore_offers_prompt_axes_for_a_text_space_and_draws_them(clap_store, monkeypatch):
    db, adapter = clap_store
    monkeypatch.setenv("AEB_DB", str(db))
    at = AppTest.from_file(str(PROJECT_ROOT / "pages/2_Explore.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    horizontal = next(s for s in at.selectbox if s.label == "Horizontal axis A")
    assert horizontal.options == ["the reduction", "similarity to a prompt", "prompt A − prompt B"]
    horizontal.set_value("prompt difference").run()
    prompts = [t for t in at.text_input if t.key in ("prompt00", "minus00")]
    prompts[0].input("dog bark").run()
    prompts = [t for t in at.text_input if t.key in ("prompt00", "minus00")]
    prompts[1].input("rain on window").run()
    assert not at.exception, [e.value for e in at.exception]
    spec = json.dumps(json.loads(at.get("vega_lite_chart")[0].proto.spec), ensure_ascii=False)
    assert f"A: {adapter.entry.key} · x: cos('dog bark') − cos('rain on window') · y: PCA 2" in spec
    assert any("axes: cosine to each prompt" in c.value for c in at.caption)
