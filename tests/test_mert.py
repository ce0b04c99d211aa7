"""MERT adapter: a tiny HuBERT saved as a MERT-style folder (``model_type: mert_model``).

The folder is what ``m-a-p/MERT-v1-95M`` looks like to our loader: a config
with MERT's own model type and switches, a ``Wav2Vec2FeatureExtractor`` at
24 kHz, and MERT's convolutional feature encoder (strides 5·2⁶ = 320, so 75
frames per second), with a few channels and two transformer layers.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from core.models import base, hf, mert, stages
from core.models.base import ModelError, ModelUnavailable
from core.models.weights import sha256_file

SR = 22050
LAYERS = 2


def _save_tiny_mert(folder, **switches):
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(hidden_size=16, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=24,
                          conv_dim=[8] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    HubertModel(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    fields = json.loads((folder / "config.json").read_text())
    fields.update(model_type="mert_model", architectures=["MERTModel"], auto_map={"AutoModel": "modeling_MERT.MERTModel"},
                  feature_extractor_cqt=False, feature_extractor_cqt_bins=336, deepnorm=False, attention_relax=-1.0,
                  sample_rate=24000)
    fields.update(switches)
    (folder / "config.json").write_text(json.dumps(fields))
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return _save_tiny_mert(tmp_path_factory.mktemp("tiny-mert") / "model")


@pytest.fixture(scope="module")
def adapter(tiny_folder):
    return base.load_model(f"mert:{tiny_folder}", device="cpu")


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(3)
    t = np.arange(10 * SR) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 4) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


def _layer_adapter(adapter, layer):
    entry = dataclasses.replace(adapter.entry, params={**adapter.entry.params, "layer": layer})
    return mert.MertAdapter(entry, adapter.model, adapter.processor, adapter.weights_sha256, "cpu")


def test_catalogue_has_every_layer():
    keys = [e.key for e in mert.CATALOGUE]
    expected = (["mert-v1-95m"] + [f"mert-v1-95m-l{n}" for n in range(13)]
                + ["mert-v1-330m"] + [f"mert-v1-330m-l{n}" for n in range(25)])
    assert keys == expected
    by_key = {e.key: e for e in mert.CATALOGUE}
    assert by_key["mert-v1-95m-l6"].params == {"hub_id": "m-a-p/MERT-v1-95M", "layer": 6, "item_mib": 120}
    assert by_key["mert-v1-330m"].params["hub_id"] == "m-a-p/MERT-v1-330M"
    assert {e.dim for e in mert.CATALOGUE if "95m" in e.key} == {768}
    assert {e.dim for e in mert.CATALOGUE if "330m" in e.key} == {1024}
    assert {e.sample_rate for e in mert.CATALOGUE} == {24000}


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
    assert set(rows) == {adapter.entry.key}
    vectors = rows[adapter.entry.key]
    assert vectors.shape == (5, 16) and vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_array_equal(vectors, adapter.embed(audio, SR, segments)[adapter.entry.key])
    assert not np.allclose(vectors[0], vectors[2])


def test_layer_selection_and_the_default_mean(adapter, audio):
    segment = np.array([[1.0, 4.0]])
    chunks, _ = hf.segment_chunks("t", audio, SR, segment, 24000, 5 * 24000, 400)
    frame_means = adapter.hidden_states(chunks[0][None])[0].mean(axis=1)  # (layers + 1, dim)
    per_layer = [_layer_adapter(adapter, n).embed(audio, SR, segment)[adapter.entry.key][0] for n in range(LAYERS + 1)]
    for n, row in enumerate(per_layer):
        np.testing.assert_allclose(row, frame_means[n], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(adapter.embed(audio, SR, segment)[adapter.entry.key][0],
                               np.mean(per_layer, axis=0), rtol=1e-5, atol=1e-6)
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
    folder = _save_tiny_mert(tmp_path / switch, **{switch: True})
    with pytest.raises(ModelError, match=f"enables {switch}, which HubertModel does not implement"):
        mert.load(mert.generic_entry(str(folder)), "cpu")


def test_refuses_other_model_types():
    with pytest.raises(ModelError, match="'wav2vec2' checkpoint, not MERT or HuBERT"):
        mert.hubert_config({"model_type": "wav2vec2"}, "somewhere")


def test_refuses_a_layer_the_checkpoint_lacks(adapter, tiny_folder):
    entry = dataclasses.replace(adapter.entry, params={**adapter.entry.params, "layer": LAYERS + 1})
    with pytest.raises(ModelError, match="has hidden states 0..2, not 3"):
        mert.load(entry, "cpu")


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
