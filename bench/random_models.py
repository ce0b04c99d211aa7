"""The real architectures with random weights, behind the real adapter classes, for benchmarks.

Where no weights can be fetched (the hub, GitHub, PyPI) a benchmark still
needs each model's true cost, and the bfloat16 check its true arithmetic;
neither depends on the weight values.  :func:`build` makes the architecture
of a catalogue entry with random weights (and non-trivial batch-norm
statistics, as a trained network has) and wraps it in the adapter the
pipeline uses, so front ends, batching and pooling are the real code.

    build("clap-htsat-unfused", "cuda")

Every entry can be built except the two larger CLAP checkpoints, whose
configurations are not on this machine.
"""

from __future__ import annotations

import numpy as np
import torch

from core.models import aisfx, clap, mert, musicnn, openl3
from core.models.base import ModelEntry, get_entry


def _busy_batch_norms(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Running statistics away from (0, 1), so that no layer is an identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return net


def clap_random(entry: ModelEntry, device: str) -> clap.ClapAdapter:
    """``laion/clap-htsat-unfused`` or ``-fused``: ``ClapConfig`` defaults (HTSAT-tiny, RoBERTa-base, 512-D),
    behind LAION's extractor settings (64 mels, 50 Hz to 14 kHz, repeat-padding; fusion for the fused one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, PreTrainedTokenizerFast

    fused = {"clap-htsat-unfused": False, "clap-htsat-fused": True}.get(entry.key)
    if fused is None:
        raise KeyError(f"{entry.key}: its configuration is not known here")
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(audio_config={"enable_fusion": fused})).eval().to(device)
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<pad>": 1}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    extractor = ClapFeatureExtractor(feature_size=64, frequency_min=50, frequency_max=14000,
                                     truncation="fusion" if fused else "rand_trunc", padding="repeatpad")
    processor = ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    return clap.ClapAdapter(entry, model, processor, "random", device)


def clap_unfused(device: str) -> clap.ClapAdapter:
    return clap_random(get_entry("clap-htsat-unfused"), device)


def mert_random(entry: ModelEntry, device: str) -> mert.MertAdapter:
    """MERT-v1-95M (``HubertConfig`` defaults: 7 conv layers with group norm, 768-D, 12 layers) or -330M
    (1024-D, 24 pre-norm layers), behind a 24 kHz normalising ``Wav2Vec2FeatureExtractor``."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    large = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                 do_stable_layer_norm=True, feat_extract_norm="layer")
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**(large if "330m" in entry.key else {}))).eval().to(device)
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=24000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True)
    return mert.MertAdapter(entry, model, extractor, "random", device)


def mert_95m(device: str) -> mert.MertAdapter:
    return mert_random(get_entry("mert-v1-95m"), device)


def musicnn_random(entry: ModelEntry, device: str) -> musicnn.MusicnnAdapter:
    """MusiCNN or VGG: the network of ``musicnn.load`` with random weights."""
    torch.manual_seed(0)
    MusiCNN, VGG, orient_signs = musicnn._networks()
    net = _busy_batch_norms(MusiCNN() if entry.params["arch"] == "musicnn" else VGG(), 1)
    orient_signs(net)
    tags = {f"{entry.key}/taggram": [f"tag{i}" for i in range(musicnn.N_TAGS)]}
    return musicnn.MusicnnAdapter(entry, net.eval().to(device), device, "random", tags)


def aisfx_random(entry: ModelEntry, device: str) -> aisfx.AisfxAdapter:
    """aisfx's embedding network with random weights."""
    torch.manual_seed(0)
    net = _busy_batch_norms(aisfx._network(), 2)
    return aisfx.AisfxAdapter(entry, net.eval().to(device), device, "random")


def openl3_random(entry: ModelEntry, device: str) -> openl3.OpenL3:
    """An OpenL3 entry's network with random Keras-layout weights (He-scaled kernels, busy batch norms)."""
    rng = np.random.default_rng(3)
    layers = []
    for kind, shapes in openl3._expected_layers():
        if kind == "conv":
            kernel, bias = shapes
            layers.append([rng.normal(0, np.sqrt(2 / np.prod(kernel[:3])), kernel), np.zeros(bias)])
        else:
            (c,) = shapes[0]
            layers.append([np.ones(c), np.zeros(c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
    return openl3.OpenL3(entry, [[a.astype(np.float32) for a in arrays] for arrays in layers], "random", device)


#: Family -> builder(entry, device).
BUILDERS = {"clap": clap_random, "mert": mert_random, "musicnn": musicnn_random, "aisfx": aisfx_random,
            "openl3": openl3_random}


def build(key: str, device: str):
    """The adapter of catalogue entry ``key`` with random weights on ``device``.

    Raises
    ------
    KeyError
        For a family without random weights here (the DSP baseline has none to draw) or an unknown configuration.
    """
    entry = get_entry(key)
    return BUILDERS[entry.family](entry, device)
