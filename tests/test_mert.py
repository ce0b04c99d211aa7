"""MERT adapter: a tiny HuBERT saved as a MERT-style folder (``model_type: mert_model``, see ``save_tiny_mert``)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from core.models import base, hf, mert, stages
from core.models.base import ModelError, ModelUnavailable
from core.models.weights import sha256_file
from tests.conftest import TINY_MERT_LAYERS as LAYERS
from tests.conftest import save_tiny_mert

SR = 22050


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_mert(tmp_path_factory.mktemp("tiny-mert") / "model")


@pytest.fixture(scope="module")
def adapter(tiny_folder):
    return base.load_model(f"mert:{tiny_folder}", device="cpu")


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(3)
    t = np.arange(10 * SR) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 4) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


def test_catalogue_lists_each_model_once_with_its_layers_as_data():
    by_key = {e.key: e for e in mert.CATALOGUE}
    assert list(by_key) == ["mert-v1-95m", "mert-v1-330m"]
    small, large = by_key["mert-v1-95m"], by_key["mert-v1-330m"]
    assert small.params == {"hub_id": "m-a-p/MERT-v1-95M", "item_mib": 120}
    assert large.params["hub_id"] == "m-a-p/MERT-v1-330M"
    assert small.layers == tuple(range(13)) and large.layers == tuple(range(25))
    assert small.capabilities == large.capabilities == {"layers"}
    assert (small.dim, large.dim) == (768, 1024)
    assert {e.sample_rate for e in mert.CATALOGUE} == {24000}
    assert small.layer_spaces[6] == "mert-v1-95m/l6" and large.layer_spaces[24] == "mert-v1-330m/l24"
    assert small.default_spaces == {"mert-v1-95m": 768}
    assert list(small.spaces) == ["mert-v1-95m", *[f"mert-v1-95m/l{n}" for n in range(13)]]


def test_loads_a_mert_folder_as_hubert(adapter, tiny_folder):
    assert type(adapter.model).__name__ == "HubertModel"
    assert adapter.entry.dim == 16
    assert adapter.rate == 24000
    assert adapter.min_samples == 400
    assert adapter.weights_sha256 == sha256_file(tiny_folder / "model.safetensors")


def test_75_frames_per_second_and_every_hidden_state(adapter):
    rng = np.random.default_rng(0)
    one = adapter.hidden_states(rng.standard_normal((1, 24000)).astype(np.float32))
    five = adapter.hidden_states(rng.standard_normal((2, 5 * 24000)).astype(np.float32))
    assert one.shape == (1, LAYERS + 1, 74, 16)
    assert five.shape == (2, LAYERS + 1, 374, 16)
    assert np.all(np.isfinite(five))


def test_segments_give_deterministic_rows(adapter, audio):
    segments = np.array([[0.0, 3.0], [3.0, 6.0], [6.0, 9.0], [5.0, 5.0], [9.5, 12.0]])
    rows = adapter.embed(audio, SR, segments)
    assert list(rows) == list(adapter.entry.spaces) == [adapter.entry.key] + [
        f"{adapter.entry.key}#l{n}" for n in range(LAYERS + 1)]
    vectors = rows[adapter.entry.key]
    assert vectors.shape == (5, 16) and vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_array_equal(vectors, adapter.embed(audio, SR, segments)[adapter.entry.key])
    assert not np.allclose(vectors[0], vectors[2])


def test_every_layer_and_the_default_mean_from_one_pass(adapter, audio):
    segment = np.array([[1.0, 4.0]])
    chunks, _ = hf.segment_chunks("t", audio, SR, segment, 24000, 5 * 24000, 400)
    frame_means = adapter.hidden_states(chunks[0][None])[0].mean(axis=1)  # (layers + 1, dim)
    rows = adapter.embed(audio, SR, segment)
    per_layer = [rows[adapter.entry.layer_spaces[n]][0] for n in range(LAYERS + 1)]
    for n, row in enumerate(per_layer):
        np.testing.assert_allclose(row, frame_means[n], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rows[adapter.entry.key][0], np.mean(per_layer, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(per_layer[0], per_layer[-1])


def test_long_segments_are_split_into_equal_passes(adapter, audio):
    segment = np.array([[0.0, 8.0]])
    chunks, owner = hf.segment_chunks("t", audio, SR, segment, 24000, 5 * 24000, 400)
    assert [len(c) for c in chunks] == [96000, 96000] and owner.tolist() == [0, 0]
    states = adapter.hidden_states(np.stack(chunks))  # (2, layers + 1, frames, dim)
    expected = states.mean(axis=(0, 2)).mean(axis=0)
    np.testing.assert_allclose(adapter.embed(audio, SR, segment)[adapter.entry.key][0], expected, rtol=1e-5, atol=1e-6)


def test_rows_do_not_depend_on_the_batch(adapter, audio):
    segments = np.array([[0.0, 3.0], [3.0, 6.0], [6.0, 9.0], [2.0, 9.0]])
    together = adapter.embed(audio, SR, segments)[adapter.entry.key]
    alone = np.concatenate([adapter.embed(audio, SR, s[None])[adapter.entry.key] for s in segments])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_mert_v1_weight_layout_loads_identically(tmp_path, tiny_folder, adapter, audio):
    """MERT-v1 ships pytorch_model.bin with the positional convolution as weight_g/weight_v."""
    import torch
    from safetensors.torch import load_file

    folder = shutil.copytree(tiny_folder, tmp_path / "legacy")
    renamed = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
               for k, v in load_file(folder / "model.safetensors").items()}
    assert any(k.endswith("weight_g") for k in renamed)
    (folder / "model.safetensors").unlink()
    torch.save(renamed, folder / "pytorch_model.bin")
    legacy = mert.load(mert.generic_entry(str(folder)), "cpu")
    assert legacy.weights_sha256 == sha256_file(folder / "pytorch_model.bin")
    segment = np.array([[0.0, 3.0]])
    np.testing.assert_array_equal(legacy.embed(audio, SR, segment)[legacy.entry.key],
                                  adapter.embed(audio, SR, segment)[adapter.entry.key])

    data = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="legacy/pytorch_model.bin"):
        mert.load(mert.generic_entry(str(folder)), "cpu")


@pytest.mark.parametrize("switch", ["feature_extractor_cqt", "deepnorm"])
def test_refuses_checkpoints_that_are_not_hubert(tmp_path, switch):
    folder = save_tiny_mert(tmp_path / switch, **{switch: True})
    with pytest.raises(ModelError, match=f"enables {switch}, which HubertModel does not implement"):
        mert.load(mert.generic_entry(str(folder)), "cpu")


def test_refuses_other_model_types():
    with pytest.raises(ModelError, match="'wav2vec2' checkpoint, not MERT or HuBERT"):
        mert.hubert_config({"model_type": "wav2vec2"}, "somewhere")


def test_a_generic_key_reads_its_layers_from_the_config_and_refuses_others(adapter, tiny_folder):
    key = f"mert:{tiny_folder}"
    assert base.get_entry(f"{key}#l2").layers == (0, 1, 2)
    assert base.split_key(f"{key}#l2") == (key, "l2")
    with pytest.raises(ModelError, match="has no output 'l3'; it has layers 0-2 as lN"):
        base.get_entry(f"{key}#l3")
    with pytest.raises(ModelError, match="has hidden states 0-2, not 3-4"):
        base.spaces_to_fill(adapter.entry, layers=(1, 3, 4))


def test_hub_id_not_in_cache_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = mert.CATALOGUE[0]
    ok, reason = mert.availability(entry)
    assert not ok and "m-a-p/MERT-v1-95M weights are not in the local Hugging Face cache" in reason
    with pytest.raises(ModelUnavailable, match="point HF_HOME at a cache that has them"):
        mert.load(entry, "cpu")


@pytest.mark.integration
def test_torch_normalisation_agrees_with_the_feature_extractor(adapter, shared_data):
    """The checkpoint's Wav2Vec2FeatureExtractor is the reference, on passes of real clips."""
    import pandas as pd
    import torch

    from core.audio import load, segment_grid

    meta = pd.read_csv(shared_data / "esc50_subset" / "metadata.csv").head(4)
    for rel in meta["path"]:
        y, sr = load(shared_data / "esc50_subset" / rel)
        prepared = adapter.preparer(y, sr, np.vstack([segment_grid(len(y) / sr), [[0.0, len(y) / sr]]]))
        for inputs, lengths in prepared.parts:
            for length in np.unique(lengths):
                passes = list(inputs[lengths == length, :length])
                reference = adapter.processor(passes, sampling_rate=24000, return_tensors="np")["input_values"]
                ours = adapter.frontend(torch.from_numpy(np.stack(passes)), torch.from_numpy(lengths[lengths == length]))
                np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-5)


def test_passes_of_different_lengths_never_share_a_batch(adapter, audio):
    import torch

    with pytest.raises(ModelError, match="one length"):
        adapter.frontend(torch.zeros((2, 24000)), torch.tensor([24000, 12000]))
    prepared = adapter.preparer(audio, SR, np.array([[0.0, 3.0], [3.0, 4.5], [4.5, 7.5]]))
    (part,) = prepared.parts
    shapes = [(rows.tolist(), inputs.shape) for rows, inputs, _ in stages.batches(adapter, part)]
    assert shapes == [([1], (1, 36000)), ([0, 2], (2, 72000))]
