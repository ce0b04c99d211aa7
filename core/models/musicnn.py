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

* The frames are those of the whole block of audio, so frames near a
  segment's edges see the neighbouring audio, as in the original.  Step 1
  runs on the CPU (soxr has no GPU twin); steps 2-3 run in torch on the
  model's device, for each patch from the 48,128 samples its frames span
  (:func:`mel_frames`), with librosa's arithmetic.  A block of
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
from core.models import stages, tf_checkpoint, weights
from core.models.base import ModelEntry, ModelError, ModelUnavailable, batch_size, from_table, track_grid_start

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
#: TensorFlow's default batch-norm epsilon (torch's is 1e-5).
BN_EPS = 1e-3
N_TAGS = 50

CATALOGUE: tuple[ModelEntry, ...] = from_table(
    "musicnn",
    # checkpoint: folder in the wheel; labels: musicnn's list of tag names;
    # bf16_cosine: bench/verify_bf16.py on 61 segments of the shared data (CPU)
    ("key", "arch", "checkpoint", "labels", "dim", "bf16_cosine", "description"),
    (
        ("musicnn-msd", "musicnn", "MSD_musicnn", "MSD_LABELS", 200, 0.99952,
         "MusiCNN auto-tagger trained on the Million Song Dataset (50 Last.fm tags); 200-D penultimate layer "
         "on 3 s patches. Suggested for music collections."),
        ("musicnn-mtt", "musicnn", "MTT_musicnn", "MTT_LABELS", 200, 0.99990,
         "MusiCNN auto-tagger trained on MagnaTagATune (50 tags: instruments, moods, genres); 200-D penultimate "
         "layer on 3 s patches."),
        ("vgg-msd", "vgg", "MSD_vgg", "MSD_LABELS", 256, 0.99924,
         "VGG-like auto-tagger trained on the Million Song Dataset (50 Last.fm tags); 256-D flattened pool5 "
         "on 3 s patches."),
        ("vgg-mtt", "vgg", "MTT_vgg", "MTT_LABELS", 256, 0.98310,
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

#: Samples a patch of 187 frames spans: frame ``t`` covers ``[256·t − 256, 256·t + 256)``.
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP + N_FFT


@functools.lru_cache(maxsize=None)
def _filters_and_window(device: str):
    """librosa's 96 Slaney mel filters (float32, transposed) and its periodic Hann window (float64), on a device."""
    import librosa
    import scipy.signal
    import torch

    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, dtype=np.float32).T
    window = scipy.signal.get_window("hann", N_FFT, fftbins=True)
    return torch.from_numpy(np.ascontiguousarray(filters)).to(device), torch.from_numpy(window).to(device)


def mel_frames(spans):
    """musicnn's log-mel frames of stretches of 16 kHz audio, each framed from its first sample (no centring).

    librosa's arithmetic: the 512-point STFT of the periodic-Hann-windowed
    frames taken in float64 (a float32 one moves quiet cells), the power of
    its complex64 rounding in float32, 96 Slaney mel bands, and
    ``log10(10000 · mel + 1)`` in float32.

    Parameters
    ----------
    spans : torch.Tensor [shape=(b, n)]
        ``n >= 512``; frame ``t`` is ``spans[:, 256·t : 256·t + 512]``.

    Returns
    -------
    torch.Tensor [shape=(b, 1 + (n − 512) // 256, 96), dtype=float32]
    """
    import torch

    filters, window = _filters_and_window(str(spans.device))
    spectrum = torch.stft(spans.to(torch.float64), N_FFT, HOP, window=window, center=False, return_complex=True)
    power = torch.view_as_real(spectrum.to(torch.complex64)).square().sum(-1)
    mel = torch.matmul(power.transpose(1, 2), filters)
    return torch.log10(10000.0 * mel + 1.0)


def log_mel(y: np.ndarray, sr: int, skip: int = 0) -> np.ndarray:
    """musicnn's log-mel spectrogram of a whole signal (the frames the patches are cut from), in float32.

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
    import torch

    y16 = resample(np.asarray(y, dtype=np.float32), sr, SAMPLE_RATE)[skip:]
    centred = np.pad(y16, N_FFT // 2)  # center=True with zeros, as musicnn calls librosa
    with torch.inference_mode():
        return mel_frames(torch.from_numpy(centred)[None])[0].numpy()


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
    """A loaded MusiCNN or VGG tagger in the staged form (:mod:`core.models.stages`).

    Items are patches: the 48,128 samples at 16 kHz that a patch's 187
    frames span, and the number of distinct frames it holds (187, or fewer
    for a repeat-padded short segment); :meth:`frontend` computes their
    log-mel on ``device`` and tiles the short ones.  ``net`` is the network,
    mapping log-mel patches to every output of the original graph.
    """

    entry: ModelEntry
    net: object
    device: str
    weights_sha256: str
    tag_names: dict[str, list[str]]
    version: str = "2"  # 2: blocks of long files framed on the track's grid
    equal_lengths: bool = False

    def __post_init__(self):
        self.batch_size = batch_size(self.device, cpu=8, cuda=1024, item_mib=24)
        self.preparer = MusicnnPreparer(self.entry.key, self.entry.dim)

    def frontend(self, inputs, lengths):
        """Log-mel patches [shape=(b, 187, 96)] of patch spans, short ones tiled from their ``lengths`` frames."""
        import torch

        patches = mel_frames(inputs)
        for n in torch.unique(lengths).tolist() if lengths is not None else ():
            if n < PATCH_FRAMES:
                rows = torch.nonzero(lengths == n).flatten().to(patches.device, non_blocking=True)
                tiled = torch.arange(PATCH_FRAMES, device=patches.device) % n
                patches[rows] = patches[rows][:, tiled]
        return patches

    def network(self, features) -> dict:
        """The 200-D penultimate layer (MusiCNN) or flattened pool5 (VGG), and the taggram, of log-mel patches."""
        out = self.net(features)
        return {"embedding": out["embedding"], "taggram": out["taggram"]}

    def embed(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """Rows for the segments; ``offset_s`` is where ``audio[0]`` lies in the track (module docstring)."""
        return stages.embed(self, audio, sr, segments, offset_s)


@dataclasses.dataclass(frozen=True)
class MusicnnPreparer:
    """musicnn's CPU stage: soxr to 16 kHz, the track's frame grid, and one item per patch (module docstring)."""

    key: str
    dim: int

    def __call__(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> stages.Prepared:
        segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
        if len(segments) == 0:
            return stages.Prepared(0, [], np.zeros(0, dtype=np.int64))
        _, skip = track_grid_start(offset_s, SAMPLE_RATE, HOP)
        y16 = resample(np.asarray(audio, dtype=np.float32), sr, SAMPLE_RATE)[skip:]
        skip_s = skip / SAMPLE_RATE
        groups = segment_patches(segments - skip_s, 1 + len(y16) // HOP, len(audio) / sr - skip_s)
        frames = np.concatenate(groups)
        first, count = frames[:, 0], frames.max(axis=1) - frames[:, 0] + 1
        # patch frame t covers samples [256·t − 256, 256·t + 256) of y16, zeros outside (center=True)
        padded = np.zeros(HOP * (first.max() + 1) + PATCH_SAMPLES, dtype=np.float32)
        padded[N_FFT // 2 : N_FFT // 2 + len(y16)] = y16[: len(padded) - N_FFT // 2]
        spans = np.lib.stride_tricks.sliding_window_view(padded, PATCH_SAMPLES)[first * HOP]
        bounds = np.cumsum([0] + [len(g) for g in groups])
        return stages.Prepared(len(frames), stages.single_part(spans, count.astype(np.int64)), bounds)

    def finish(self, bounds, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each segment's rows: the mean over its patches of the embedding and of the taggram."""
        rows = {}
        for name, space, dim in (("embedding", self.key, self.dim), ("taggram", f"{self.key}/taggram", N_TAGS)):
            if len(bounds) < 2:
                rows[space] = np.zeros((0, dim), dtype=np.float32)
                continue
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
    net, data_sha = load_network(entry, device)
    labels = tag_labels(entry.params["labels"])
    return MusicnnAdapter(entry, net, device, data_sha, {f"{entry.key}/taggram": labels})
