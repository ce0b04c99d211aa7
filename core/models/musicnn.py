"""MusiCNN and VGG music auto-taggers (Pons & Serra), ported to PyTorch.

The weights are the TensorFlow checkpoints shipped inside the ``musicnn==0.1.0``
wheel, read with :mod:`core.models.tf_checkpoint` and converted once to
safetensors.  The port was verified against the original package's outputs
(``../shared/reference/musicnn``); the details that decide whether the
numbers match are:

* batch norm comes *after* the ReLU and uses TensorFlow's epsilon 1e-3;
* TensorFlow ``SAME`` padding of an even kernel ``k`` puts ``(k - 1) // 2``
  frames before the data and the rest after;
* the back-end flattens max- and mean-pool interleaved
  (``[max_0, mean_0, max_1, mean_1, ...]``);
* VGG's pool5 is flattened in NHWC order (time, frequency, channel);
* kernels are transposed from TF's ``[kh, kw, in, out]``.

Front end (adapter version 2), as ``musicnn.extractor.batch_data`` on librosa 0.11:

1. The mono mix is resampled to 16 kHz with soxr HQ and fixed to
   ``ceil(n * 16000 / sr)`` samples (``librosa.load``).
2. Power mel spectrogram: 512-point STFT, hop 256, periodic Hann window,
   ``center=True`` with zero padding, 96 Slaney mel bands (0-8 kHz, Slaney
   area normalisation).  Frame ``t`` is centred at ``t * 16`` ms.
3. ``log10(10000 * mel + 1)`` **in float32**.  musicnn casts the mel to float16
   first; ``10000 * mel`` then overflows to ``inf`` wherever the mel power
   exceeds about 6.55, which happens on most real music (37 of 47 patches of
   the reference clips), and every such patch yields one constant taggram.
   This port deliberately does not copy that defect; it matches the
   original network fed a float32 log-mel.

Segments map to 187-frame patches (musicnn's 3 s input):

* The log-mel is computed once over the whole block of audio, so frames near a
  segment's edges see the neighbouring audio, as in the original.  A block of
  a long file is cut to start on the track's frame grid (frame ``t`` centred
  at the track's ``t * 16`` ms; 1 s is 62.5 frames), so its frames are the
  whole file's.
* A segment holds the frames whose centre lies in ``[start, end)``; a segment
  that reaches the end of the audio also holds the last frames, whose centres
  lie past its end.  The patch starts at the segment's first frame, so for
  the segment starting at 0 it is exactly musicnn's first patch.
* A segment holding ``n >= 187`` frames uses ``max(1, round(n / 187))``
  patches spread evenly from its first to its last frame, and its rows are
  the mean over them (a 3 s segment holds 187 or 188 frames: one patch; a
  10 s segment: three).
* A segment holding fewer than 187 frames (a clip shorter than about 2.98 s,
  the end of a track) is **repeat-padded**: its own frames are tiled until
  there are 187, the ``pad_short: repeat-pad`` rule of musicnn's training
  configuration.  (musicnn 0.1.0 itself raises ``UnboundLocalError`` on such
  clips.)  A segment holding no frame centre uses the nearest frame, tiled.

Spaces: the bare key is MusiCNN's 200-D penultimate layer (batch-normalised
dense layer) or VGG's 256-D flattened pool5; ``KEY/taggram`` holds the 50
sigmoid tag scores, named by musicnn's ``MSD_LABELS`` / ``MTT_LABELS``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import math

import numpy as np

from core.audio import resample
from core.models import tf_checkpoint, weights
from core.models.base import ModelEntry, ModelError, ModelUnavailable, from_table, track_grid_start

PACKAGE = "musicnn"
PACKAGE_VERSION = "0.1.0"
#: sha256 of ``musicnn-0.1.0-py3-none-any.whl`` on PyPI.
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 256
N_MELS = 96
#: musicnn's input length: ``librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1``.
PATCH_FRAMES = 187
#: Patches per forward pass; bounds memory on long blocks.
BATCH_PATCHES = 8
#: TensorFlow's default batch-norm epsilon (torch's is 1e-5).
BN_EPS = 1e-3
N_TAGS = 50

CATALOGUE: tuple[ModelEntry, ...] = from_table(
    "musicnn",
    # checkpoint: folder in the wheel; labels: musicnn's list of tag names
    ("key", "arch", "checkpoint", "labels", "dim", "description"),
    (
        ("musicnn-msd", "musicnn", "MSD_musicnn", "MSD_LABELS", 200,
         "MusiCNN auto-tagger trained on the Million Song Dataset (50 Last.fm tags); 200-D penultimate layer "
         "on 3 s patches. Suggested for music collections."),
        ("musicnn-mtt", "musicnn", "MTT_musicnn", "MTT_LABELS", 200,
         "MusiCNN auto-tagger trained on MagnaTagATune (50 tags: instruments, moods, genres); 200-D penultimate "
         "layer on 3 s patches."),
        ("vgg-msd", "vgg", "MSD_vgg", "MSD_LABELS", 256,
         "VGG-like auto-tagger trained on the Million Song Dataset (50 Last.fm tags); 256-D flattened pool5 "
         "on 3 s patches."),
        ("vgg-mtt", "vgg", "MTT_vgg", "MTT_LABELS", 256,
         "VGG-like auto-tagger trained on MagnaTagATune (50 tags); 256-D flattened pool5 on 3 s patches."),
    ),
    sample_rate=SAMPLE_RATE,
    licence="ISC (musicnn 0.1.0, weights by J. Pons and X. Serra)",
    weights=f"PyPI wheel {PACKAGE}=={PACKAGE_VERSION} (TensorFlow checkpoint {{checkpoint}}), read without TensorFlow",
    outputs={"taggram": N_TAGS},
    suited_for=("music",),
    capabilities=("tags",),
)


def availability(entry: ModelEntry) -> tuple[bool, str]:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False, f"{entry.key} needs PyTorch; install it with `pip install -r requirements.txt`."
    relpath = f"{entry.params['checkpoint']}/.index"
    return weights.packaged_file_status(PACKAGE, PACKAGE_VERSION, relpath)


# --------------------------------------------------------------------------- front end

def log_mel(y: np.ndarray, sr: int, skip: int = 0) -> np.ndarray:
    """musicnn's log-mel spectrogram, computed in float32.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono audio at rate ``sr``.
    sr : int
    skip : int
        Samples at 16 kHz dropped before framing (to reach a track's frame grid).

    Returns
    -------
    np.ndarray [shape=(1 + m // 256, 96), dtype=float32]
        ``m = ceil(n * 16000 / sr) - skip``; frame ``t`` is centred at ``t * 256 / 16000`` s after the skip.
    """
    import librosa

    y16 = resample(np.asarray(y, dtype=np.float32), sr, SAMPLE_RATE)[skip:]
    mel = librosa.feature.melspectrogram(
        y=y16, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, center=True, pad_mode="constant",
        power=2.0,
    ).T.astype(np.float32, copy=False)
    return np.log10(np.float32(10000) * mel + np.float32(1))


def segment_patches(segments: np.ndarray, n_frames: int, duration_s: float) -> list[np.ndarray]:
    """The frame indices of the 187-frame patches of each segment (rules in the module docstring).

    Parameters
    ----------
    segments : np.ndarray [shape=(n, 2)]
        Start and end in seconds.
    n_frames : int
        Frames of the block's log-mel.
    duration_s : float
        Length of the block; a segment ending at or after it holds the last frames.

    Returns
    -------
    list of np.ndarray [shape=(p, 187), dtype=int]
        For each segment, ``p >= 1`` patches of frame indices into the log-mel.
    """
    frame_rate = SAMPLE_RATE / HOP
    tol = 1e-6  # seconds given as exact frame times must not round up to the next frame
    patches = []
    for start_s, end_s in np.asarray(segments, dtype=np.float64).reshape(-1, 2):
        first = min(max(0, math.ceil(start_s * frame_rate - tol)), n_frames - 1)
        stop = n_frames if end_s >= duration_s - tol else min(n_frames, math.ceil(end_s * frame_rate - tol))
        n = max(1, stop - first)
        if n < PATCH_FRAMES:
            patches.append((first + np.arange(PATCH_FRAMES) % n)[None, :])
            continue
        p = max(1, round(n / PATCH_FRAMES))
        starts = first + np.rint(np.linspace(0, n - PATCH_FRAMES, p)).astype(int)
        patches.append(starts[:, None] + np.arange(PATCH_FRAMES)[None, :])
    return patches


# --------------------------------------------------------------------------- networks

def _networks():
    """The two architectures, defined lazily so that the catalogue never imports torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def bn2d(c):
        return nn.BatchNorm2d(c, eps=BN_EPS)

    def bn1d(c):
        return nn.BatchNorm1d(c, eps=BN_EPS)

    def pooled_block(conv, bn, h, pool):
        """``pool(bn(relu(conv(h))))`` with the pooling done first, on the conv output.

        ReLU and inference batch norm act per channel and are monotone, so they
        commute with max-pooling: increasing channels take the max, channels whose
        batch-norm scale is negative take the min.  :func:`orient_signs` negated
        those channels' kernels, so one max-pool gives ``sign * min`` for them.
        The result is the same numbers as the original order (negation and
        monotone maps are exact in floating point), while ReLU and batch norm run
        on the pooled map, up to 96 times smaller than the conv output.
        """
        sign = conv.sign.view(1, -1, 1, 1)
        return bn(F.relu(pool(conv(h)) * sign))

    def max_over_freq(h):
        return h.amax(dim=3, keepdim=True)

    def orient_signs(network):
        """Negate the kernels of channels whose following batch norm has a negative scale (see ``pooled_block``)."""
        for conv, bn in network.pooled_pairs():
            sign = torch.where(bn.weight < 0, -1.0, 1.0)
            with torch.no_grad():
                conv.weight.mul_(sign.view(-1, 1, 1, 1))
                conv.bias.mul_(sign)
            conv.register_buffer("sign", sign, persistent=False)

    class MusiCNN(nn.Module):
        """Pons & Serra's musically motivated CNN (``build_musicnn`` with '7774timbraltemporal').

        Feature maps are kept as (batch, channels, time): TF's (batch, time,
        features, 1) with the features as channels.
        """

        def __init__(self, midend_filters: int = 64, backend_units: int = 200, n_tags: int = N_TAGS):
            super().__init__()
            self.bn_input = bn2d(1)
            self.timbral = nn.ModuleList([nn.Conv2d(1, 204, (7, int(0.4 * N_MELS))),
                                          nn.Conv2d(1, 204, (7, int(0.7 * N_MELS)))])
            self.bn_timbral = nn.ModuleList([bn2d(204), bn2d(204)])
            self.temporal = nn.ModuleList([nn.Conv2d(1, 51, (k, 1)) for k in (128, 64, 32)])
            self.bn_temporal = nn.ModuleList([bn2d(51) for _ in range(3)])
            frontend_dim = 2 * 204 + 3 * 51
            self.midend = nn.ModuleList([nn.Conv1d(frontend_dim, midend_filters, 7),
                                         nn.Conv1d(midend_filters, midend_filters, 7),
                                         nn.Conv1d(midend_filters, midend_filters, 7)])
            self.bn_midend = nn.ModuleList([bn1d(midend_filters) for _ in range(3)])
            pooled = 2 * (frontend_dim + 3 * midend_filters)
            self.bn_pool = bn1d(pooled)
            self.dense = nn.Linear(pooled, backend_units)
            self.bn_dense = bn1d(backend_units)
            self.out = nn.Linear(backend_units, n_tags)

        def pooled_pairs(self):
            return list(zip(self.timbral, self.bn_timbral)) + list(zip(self.temporal, self.bn_temporal))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            """x: (batch, 187, 96) log-mel -> every output of the original graph, (batch, time, dim) for frame features."""
            x = self.bn_input(x[:, None])
            padded = F.pad(x, (0, 0, 3, 3))
            timbral = [pooled_block(conv, bn, padded, max_over_freq)[..., 0]
                       for conv, bn in zip(self.timbral, self.bn_timbral)]
            temporal = []
            for conv, bn in zip(self.temporal, self.bn_temporal):
                k = conv.kernel_size[0]
                same = F.pad(x, (0, 0, (k - 1) // 2, k - 1 - (k - 1) // 2))
                temporal.append(pooled_block(conv, bn, same, max_over_freq)[..., 0])
            front = torch.cat(timbral + temporal, dim=1)
            layers = [front]
            h = front
            for i, (conv, bn) in enumerate(zip(self.midend, self.bn_midend)):
                y = bn(F.relu(conv(F.pad(h, (3, 3)))))
                h = y if i == 0 else y + h
                layers.append(h)
            features = torch.cat(layers, dim=1)
            max_pool = features.amax(dim=2)
            mean_pool = features.mean(dim=2)
            flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
            penultimate = self.bn_dense(F.relu(self.dense(self.bn_pool(flat))))
            logits = self.out(penultimate)
            return {
                "timbral": torch.cat(timbral, dim=1).transpose(1, 2),
                "temporal": torch.cat(temporal, dim=1).transpose(1, 2),
                "cnn1": layers[1].transpose(1, 2),
                "cnn2": layers[2].transpose(1, 2),
                "cnn3": layers[3].transpose(1, 2),
                "mean_pool": mean_pool,
                "max_pool": max_pool,
                "penultimate": penultimate,
                "embedding": penultimate,
                "logits": logits,
                "taggram": torch.sigmoid(logits),
            }

    class VGG(nn.Module):
        """The VGG-like baseline of musicnn (five 3x3 conv blocks); pool outputs are NHWC like TF's."""

        pools = ((4, 1, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (4, 4, 4, 4))

        def __init__(self, filters: int = 128, n_tags: int = N_TAGS):
            super().__init__()
            self.bn_input = bn2d(1)
            self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5)])
            self.bns = nn.ModuleList([bn2d(filters) for _ in range(5)])
            self.out = nn.Linear(2 * 1 * filters, n_tags)

        def pooled_pairs(self):
            return list(zip(self.convs, self.bns))

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            """x: (batch, 187, 96) log-mel -> pool1..pool5 (NHWC), pool5_flat, logits, taggram."""
            h = self.bn_input(x[:, None])
            outputs = {}
            for i, (conv, bn, (kh, kw, sh, sw)) in enumerate(zip(self.convs, self.bns, self.pools)):
                h = pooled_block(conv, bn, h, functools.partial(F.max_pool2d, kernel_size=(kh, kw), stride=(sh, sw)))
                outputs[f"pool{i + 1}"] = h.permute(0, 2, 3, 1)
            flat = outputs["pool5"].flatten(1)
            logits = self.out(flat)
            outputs.update(pool5_flat=flat, embedding=flat, logits=logits, taggram=torch.sigmoid(logits))
            return outputs

    return MusiCNN, VGG, orient_signs


# --------------------------------------------------------------------------- weights

def _bn(tf: dict, index: int, prefix: str) -> dict:
    name = "batch_normalization" if index == 0 else f"batch_normalization_{index}"
    return {
        f"{prefix}.weight": tf[f"{name}/gamma"],
        f"{prefix}.bias": tf[f"{name}/beta"],
        f"{prefix}.running_mean": tf[f"{name}/moving_mean"],
        f"{prefix}.running_var": tf[f"{name}/moving_variance"],
    }


def _conv2d(tf: dict, name: str, prefix: str) -> dict:
    return {f"{prefix}.weight": tf[f"{name}/kernel"].transpose(3, 2, 0, 1), f"{prefix}.bias": tf[f"{name}/bias"]}


def _musicnn_state(tf: dict) -> dict:
    """TF variable names of ``build_musicnn`` (creation order) -> the torch module's state dict."""
    state = _bn(tf, 0, "bn_input")
    for i in range(2):
        state |= _conv2d(tf, "conv2d" if i == 0 else f"conv2d_{i}", f"timbral.{i}") | _bn(tf, 1 + i, f"bn_timbral.{i}")
    for i in range(3):
        state |= _conv2d(tf, f"conv2d_{2 + i}", f"temporal.{i}") | _bn(tf, 3 + i, f"bn_temporal.{i}")
    for i in range(3):
        kernel = tf[f"conv2d_{5 + i}/kernel"]  # [7, features, 1, filters] over the whole feature axis
        state[f"midend.{i}.weight"] = kernel[:, :, 0, :].transpose(2, 1, 0)
        state[f"midend.{i}.bias"] = tf[f"conv2d_{5 + i}/bias"]
        state |= _bn(tf, 6 + i, f"bn_midend.{i}")
    state |= _bn(tf, 9, "bn_pool") | _bn(tf, 10, "bn_dense")
    state |= {"dense.weight": tf["dense/kernel"].T, "dense.bias": tf["dense/bias"],
              "out.weight": tf["dense_1/kernel"].T, "out.bias": tf["dense_1/bias"]}
    return state


def _vgg_state(tf: dict) -> dict:
    state = _bn(tf, 0, "bn_input")
    for i in range(5):
        state |= _conv2d(tf, f"{i + 1}CNN", f"convs.{i}") | _bn(tf, 1 + i, f"bns.{i}")
    state |= {"out.weight": tf["dense/kernel"].T, "out.bias": tf["dense/bias"]}
    return state


def _checkpoint_files(checkpoint: str):
    try:
        index = weights.packaged_file(PACKAGE, PACKAGE_VERSION, f"{checkpoint}/.index", WHEEL_SHA256)
        data = weights.packaged_file(PACKAGE, PACKAGE_VERSION, f"{checkpoint}/.data-00000-of-00001", WHEEL_SHA256)
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"The {checkpoint} weights are missing: {exc}") from None
    return index, data


def tag_labels(name: str) -> list[str]:
    """musicnn's tag names (``MSD_LABELS`` or ``MTT_LABELS``), read from its source without importing it."""
    path = weights.packaged_file(PACKAGE, PACKAGE_VERSION, "configuration.py", WHEEL_SHA256)
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            labels = ast.literal_eval(node.value)
            if len(labels) == N_TAGS:
                return [str(label) for label in labels]
    raise ModelError(f"{path} defines no list {name} of {N_TAGS} tag names.")


def load_network(entry: ModelEntry, device: str = "cpu"):
    """Build the torch network of an entry with its converted weights.

    Returns
    -------
    network : torch.nn.Module
        In eval mode on ``device``; ``network(x)`` maps log-mel patches
        (batch, 187, 96) to a dict of named outputs.
    weights_sha256 : str
        sha256 of the checkpoint's data file.
    """
    import torch

    checkpoint = entry.params["checkpoint"]
    index, data = _checkpoint_files(checkpoint)
    data_sha = weights.sha256_file(data)
    source_sha = hashlib.sha256((weights.sha256_file(index) + data_sha).encode()).hexdigest()
    to_state = _musicnn_state if entry.params["arch"] == "musicnn" else _vgg_state
    prefix = str(index)[: -len(".index")]

    def convert() -> dict:
        tf = tf_checkpoint.load_checkpoint(prefix)
        try:
            state = to_state(tf)
        except KeyError as exc:
            raise ModelError(f"{index} lacks the variable {exc.args[0]!r} of a {entry.params['arch']} model.") from None
        return {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for name, value in state.items()}

    state = weights.cached_conversion(f"musicnn-{checkpoint}", source_sha, convert)
    MusiCNN, VGG, orient_signs = _networks()
    network = MusiCNN() if entry.params["arch"] == "musicnn" else VGG()
    try:
        network.load_state_dict(state, strict=False)
        expected = {k for k in network.state_dict() if not k.endswith("num_batches_tracked")}
        if expected != set(state):
            raise RuntimeError(f"differing tensors {sorted(expected ^ set(state))[:3]}")
    except RuntimeError as exc:
        raise ModelError(f"{index} does not have the layout of {checkpoint}: {str(exc).splitlines()[0]}") from None
    orient_signs(network)
    if entry.params["arch"] == "vgg":
        # oneDNN's 3x3 convolutions and pooling run about twice as fast on NHWC
        # tensors; MusiCNN's single-input-channel convolutions gain nothing.
        network = network.to(memory_format=torch.channels_last)
    return network.eval().to(device), data_sha


# --------------------------------------------------------------------------- adapter

@dataclasses.dataclass
class MusicnnAdapter:
    entry: ModelEntry
    network: object
    device: str
    weights_sha256: str
    tag_names: dict[str, list[str]]
    version: str = "2"  # 2: blocks of long files framed on the track's grid

    def forward(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """Run log-mel patches through the network in batches.

        Parameters
        ----------
        patches : np.ndarray [shape=(p, 187, 96), dtype=float32]

        Returns
        -------
        dict[str, np.ndarray [shape=(p, dim), dtype=float32]]
            ``embedding`` and ``taggram``.
        """
        import torch

        out = {"embedding": [], "taggram": []}
        with torch.inference_mode():
            for i in range(0, len(patches), BATCH_PATCHES):
                x = torch.from_numpy(np.ascontiguousarray(patches[i:i + BATCH_PATCHES], dtype=np.float32))
                result = self.network(x.to(self.device))
                for name in out:
                    out[name].append(result[name].float().cpu().numpy())
        return {name: np.concatenate(parts) for name, parts in out.items()}

    def embed(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """Rows for the segments; ``offset_s`` is where ``audio[0]`` lies in the track (module docstring)."""
        segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
        key = self.entry.key
        if len(segments) == 0:
            return {space: np.zeros((0, dim), dtype=np.float32) for space, dim in self.entry.spaces.items()}
        _, skip = track_grid_start(offset_s, SAMPLE_RATE, HOP)
        spec = log_mel(audio, sr, skip)
        skip_s = skip / SAMPLE_RATE
        groups = segment_patches(segments - skip_s, len(spec), len(audio) / sr - skip_s)
        outputs = self.forward(spec[np.concatenate(groups)])
        bounds = np.cumsum([0] + [len(g) for g in groups])
        rows = {}
        for name, space in (("embedding", key), ("taggram", f"{key}/taggram")):
            values = outputs[name]
            rows[space] = np.stack([values[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])]).astype(np.float32)
        return rows


def load(entry: ModelEntry, device: str = "cpu") -> MusicnnAdapter:
    """Load a MusiCNN/VGG adapter, converting the TF checkpoint on first use.

    Raises
    ------
    ModelUnavailable
        If the musicnn wheel is neither installed nor downloadable.
    ModelError
        If a checkpoint file is truncated, corrupted or of another layout.
    """
    network, data_sha = load_network(entry, device)
    labels = tag_labels(entry.params["labels"])
    return MusicnnAdapter(entry, network, device, data_sha, {f"{entry.key}/taggram": labels})
