"""CLAP adapter: a tiny ClapModel saved with its processor, loaded as a real checkpoint is.

The hub cannot be reached in CI, so the tests build a ``ClapConfig`` model of
a few thousand weights with an in-memory tokenizer, save it with
``save_pretrained`` and load it through the same ``from_pretrained`` path,
both as a local folder (``clap:PATH``) and from a Hugging Face cache layout.
The audio window (10 s at 48 kHz, 1001 mel frames) is the real one.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.models import base, clap, hf, stages
from core.models.base import ModelError, ModelUnavailable
from core.models.weights import sha256_file

SR = 22050


def _save_tiny_clap(folder, fused: bool = False, seed: int = 0):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, PreTrainedTokenizerFast

    words = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *"a the dog bark rain on window solo trumpet piano".split()]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    config = ClapConfig(
        text_config=dict(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=20, max_position_embeddings=40, pad_token_id=1),
        audio_config=dict(depths=[1, 1], hidden_size=16, num_attention_heads=[2, 2], patch_embeds_hidden_size=8,
                          window_size=8, enable_fusion=fused),
        projection_dim=24,
    )
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as a trained model has
        model.audio_model.audio_encoder.batch_norm.running_mean.uniform_(-40.0, -20.0)
        model.audio_model.audio_encoder.batch_norm.running_var.uniform_(50.0, 150.0)
    # LAION's processor settings (fmin 50 Hz, repeat-padding); the fused checkpoints use truncation "fusion"
    extractor = ClapFeatureExtractor(feature_size=64, frequency_min=50, frequency_max=14000, padding="repeatpad",
                                     truncation="fusion" if fused else "rand_trunc")
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return _save_tiny_clap(tmp_path_factory.mktemp("tiny-clap") / "model")


@pytest.fixture(scope="module")
def adapter(tiny_folder):
    return base.load_model(f"clap:{tiny_folder}", device="cpu")


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(7)
    t = np.arange(13 * SR) / SR
    y = 0.3 * np.sin(2 * np.pi * 440 * t) * (t < 6) + 0.1 * rng.standard_normal(t.size)
    return y.astype(np.float32)


def test_catalogue_matches_the_issue():
    hubs = {e.key: e.params["hub_id"] for e in clap.CATALOGUE}
    assert hubs == {
        "clap-htsat-unfused": "laion/clap-htsat-unfused",
        "clap-htsat-fused": "laion/clap-htsat-fused",
        "clap-music-speech": "laion/larger_clap_music_and_speech",
        "clap-music": "laion/larger_clap_music",
    }
    for entry in clap.CATALOGUE:
        assert (entry.family, entry.dim, entry.sample_rate) == ("clap", 512, 48000)
        assert entry.capabilities == {"text"}


def test_generic_key_reads_the_checkpoint(adapter, tiny_folder):
    assert adapter.entry.key == f"clap:{tiny_folder}"
    assert adapter.entry.dim == 24
    assert clap.availability(adapter.entry) == (True, "")
    assert adapter.weights_sha256 == sha256_file(tiny_folder / "model.safetensors")
    assert adapter.window == 480_000


def test_segments_give_unit_deterministic_rows(adapter, audio):
    segments = np.array([[0.0, 3.0], [3.0, 6.0], [6.0, 9.0], [4.0, 4.0], [20.0, 23.0]])
    first = adapter.embed(audio, SR, segments)
    second = adapter.embed(audio, SR, segments)
    rows = first[adapter.entry.key]
    assert set(first) == {adapter.entry.key}
    assert rows.shape == (5, 24) and rows.dtype == np.float32
    assert np.all(np.isfinite(rows))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(rows, second[adapter.entry.key])
    # tone and noise differ: the rows are not one constant vector
    assert rows[0] @ rows[2] < 0.9999


def test_rows_do_not_depend_on_the_batch(adapter, audio):
    segments = np.array([[0.0, 3.0], [3.0, 6.0], [6.0, 9.0]])
    together = adapter.embed(audio, SR, segments)[adapter.entry.key]
    batch = adapter.batch_size
    try:
        adapter.batch_size = 1
        alone = np.concatenate([adapter.embed(audio, SR, s[None])[adapter.entry.key] for s in segments[::-1]])[::-1]
    finally:
        adapter.batch_size = batch
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_inputs_never_exceed_the_window(adapter, audio):
    segments = np.array([[0.0, 12.5], [1.0, 1.0], [12.99, 30.0]])
    chunks, owner = adapter.chunks(audio, SR, segments)
    lengths = [len(c) for c in chunks]
    assert owner.tolist() == [0, 0, 1, 2]
    assert lengths[:2] == [300_000, 300_000]  # 12.5 s split into two equal chunks, never one random crop
    assert lengths[2:] == [clap.MIN_SAMPLES, clap.MIN_SAMPLES]  # a point and a segment past the end widen to one window


def test_long_segment_is_the_mean_of_its_chunks(adapter, audio):
    rows = adapter.embed(audio, SR, np.array([[0.0, 12.0], [0.0, 6.0], [6.0, 12.0]]))[adapter.entry.key]
    mean = rows[1] + rows[2]
    np.testing.assert_allclose(rows[0], mean / np.linalg.norm(mean), atol=1e-5)


def test_text_embeddings(adapter):
    rows = adapter.embed_text(["dog bark", "rain on the window", "solo trumpet"])
    assert rows.shape == (3, 24) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    hits = adapter._text_row.cache_info().hits
    np.testing.assert_array_equal(adapter.embed_text(["solo trumpet"])[0], rows[2])  # alone == among others
    assert adapter._text_row.cache_info().hits == hits + 1
    assert not np.allclose(rows[0], rows[1])
    assert adapter.embed_text([]).shape == (0, 24)


def test_fused_checkpoint_ignores_the_extractors_random_is_longer(tmp_path, audio):
    folder = _save_tiny_clap(tmp_path / "fused", fused=True, seed=1)
    model = clap.load(clap.generic_entry(str(folder)), "cpu")
    segments = np.array([[0.0, 3.0], [3.0, 6.0], [6.0, 9.0]])
    together = model.embed(audio, SR, segments)[model.entry.key]
    model.batch_size = 1
    alone = np.concatenate([model.embed(audio, SR, s[None])[model.entry.key] for s in segments])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_hub_id_not_in_cache_is_unavailable_in_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = clap.CATALOGUE[0]
    ok, reason = clap.availability(entry)
    assert not ok
    assert reason == (
        "clap-htsat-unfused: the laion/clap-htsat-unfused weights are not in the local Hugging Face cache and "
        "the hub cannot be reached; connect once or point HF_HOME at a cache that has them."
    )
    with pytest.raises(ModelUnavailable) as err:
        clap.load(entry, "cpu")
    assert str(err.value) == reason


def test_hub_id_loads_from_a_cache_offline(tmp_path, monkeypatch, tiny_folder, audio, adapter):
    """HF_HOME pointing at a cache that has the checkpoint is enough, with no network."""
    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-clap"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_folder, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = clap.generic_entry("someone/tiny-clap")
    assert entry.dim == 24
    assert clap.availability(entry) == (True, "")
    cached = clap.load(entry, "cpu")
    assert cached.weights_sha256 == adapter.weights_sha256
    segment = np.array([[0.0, 3.0]])
    np.testing.assert_array_equal(cached.embed(audio, SR, segment)[entry.key], adapter.embed(audio, SR, segment)[adapter.entry.key])


def test_broken_weight_files_are_named(tmp_path, tiny_folder):
    torn = shutil.copytree(tiny_folder, tmp_path / "torn")
    data = (torn / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="torn/model.safetensors"):
        clap.load(clap.generic_entry(str(torn)), "cpu")

    from safetensors.torch import load_file, save_file

    partial = shutil.copytree(tiny_folder, tmp_path / "partial")
    tensors = {k: v for k, v in load_file(partial / "model.safetensors").items() if not k.startswith("audio_projection")}
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"partial/model.safetensors lacks 4 weight"):
        clap.load(clap.generic_entry(str(partial)), "cpu")

    reshaped = shutil.copytree(tiny_folder, tmp_path / "reshaped")
    config = json.loads((reshaped / "config.json").read_text())
    config["projection_dim"] = 20
    (reshaped / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="reshaped/model.safetensors"):
        clap.load(clap.generic_entry(str(reshaped)), "cpu")


def test_folder_without_weights_is_unavailable(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    ok, reason = hf.availability("clap:x", str(tmp_path))
    assert not ok and "no model.safetensors or pytorch_model.bin" in reason


def _shared_chunks(shared_data, n_clips: int = 4):
    """48 kHz chunks of real clips on the 3 s grid, plus the shortest input the adapter makes."""
    import pandas as pd

    from core.audio import load, segment_grid

    preparer = clap.ClapPreparer("t", 24, 480_000)
    chunks = []
    for name in ("esc50_subset", "librosa_examples"):
        meta = pd.read_csv(shared_data / name / "metadata.csv").head(n_clips)
        for rel in meta["path"]:
            y, sr = load(shared_data / name / rel, duration_s=20.0)
            chunks += preparer.chunks(y, sr, np.vstack([segment_grid(len(y) / sr), [[1.0, 1.0]]]))[0]
    return chunks


@pytest.mark.integration
@pytest.mark.parametrize("fused", [False, True])
def test_torch_log_mel_agrees_with_the_feature_extractor(shared_data, fused):
    """The processor is the reference: 1e-4 of the features' range on real clips (measured: 1e-7)."""
    import torch
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor(feature_size=64, frequency_min=50, frequency_max=14000, padding="repeatpad",
                                     truncation="fusion" if fused else "rand_trunc")
    chunks = _shared_chunks(shared_data)
    assert {len(c) for c in chunks} >= {144_000, clap.MIN_SAMPLES}
    reference = extractor(chunks, sampling_rate=48_000, return_tensors="np")["input_features"]
    inputs, lengths = stages.pad_ragged(chunks)
    ours = clap.log_mel(torch.from_numpy(inputs), torch.from_numpy(lengths), clap.MelSettings.of(extractor, "cpu"))
    assert ours.shape == reference.shape == (len(chunks), 4 if fused else 1, 1001, 64)
    assert np.abs(ours.numpy() - reference).max() <= 1e-4 * (reference.max() - reference.min())


@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
def test_every_padding_rule_of_the_extractor(padding, audio):
    import torch
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor(feature_size=64, frequency_min=50, frequency_max=14000, padding=padding,
                                     truncation="rand_trunc")
    chunks = [audio[:70_001], audio[5000:5000 + clap.MIN_SAMPLES], audio[: 160_000]]
    reference = extractor(chunks, sampling_rate=48_000, return_tensors="np")["input_features"]
    inputs, lengths = stages.pad_ragged(chunks)
    ours = clap.log_mel(torch.from_numpy(inputs), torch.from_numpy(lengths), clap.MelSettings.of(extractor, "cpu"))
    assert np.abs(ours.numpy() - reference).max() <= 1e-4 * (reference.max() - reference.min())


def test_text_only_keeps_the_text_tower_alone_and_gives_the_same_text_rows(tiny_folder, adapter):
    tower = base.load_model(f"clap:{tiny_folder}", device="cpu")
    full = sum(p.numel() for p in tower.model.parameters())
    tower.text_only()
    assert sum(p.numel() for p in tower.model.parameters()) < full
    assert tower.model.audio_model is None
    np.testing.assert_allclose(tower.embed_text(["a dog barking"]), adapter.embed_text(["a dog barking"]), atol=1e-6)
    with pytest.raises(ModelError, match="text queries only"):
        tower.embed(np.zeros(48_000, np.float32), 48_000, np.array([[0.0, 1.0]]))
