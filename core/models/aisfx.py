"""aisfx: a CNN trained on sound-effects libraries (Ma & Lerch, ISMIR 2022).

The original package (``aisfx`` 0.1.2 on PyPI) ships its weights in its wheel
but needs essentia, an old librosa and an old numpy to run.  This module is
our own implementation of its default ("essentia") front end and of its
embedding network; only ``aisfx/models/checkpoint.pth`` is read from the
wheel, never its code.  ``../shared/reference/aisfx/README.md`` documents the
original step by step; the tests check this port against its outputs.

Front end (the original's, reproduced to about 1e-6):

1. Mono is the mean of the channels, 0.5·(L+R), *before* resampling.
2. Resampling to 44.1 kHz with libsamplerate ``sinc_medium`` (the
   ``samplerate`` package), ratio computed in float32, output cut to
   ``ceil(n·ratio) − 1`` samples.  soxr moves the embeddings by 6–7 %.
3. Frames of 2048 samples every 1024, frame ``k`` centred on sample
   ``1024·k``, zeros beyond the signal; ``ceil(n/1024) + 1`` frames.
4. Symmetric Hann window ``0.5 − 0.5·cos(2πn/2047)``, power spectrum.
5. 96 mel bands from essentia's ``MelBands`` design (:func:`mel_filterbank`).
6. ``log10(1 + 1e4·mel) / 9.457798957824707``.
7. Blocks of 100 frames (2.32 s) every 50 frames (1.16 s).  Block ``i``
   starts at frame ``50·i``; its centre lies at ``(50·i + 49.5)·1024/44100`` s.
   The original drops a partial last block, pads a lone block of 51–99 frames
   with zeros (silence) and refuses signals of 50 frames or fewer (≤ 1.138 s).

Steps 1-2 run on the CPU (libsamplerate has no GPU twin); steps 3-6 run in
torch on the model's device, in float64 as before, for each block from the
103,424 samples its frames span (:func:`frames_log_mel`): the same numbers
as a spectrogram of the whole signal cut into blocks.

Segment embedding, our rule (the original defines no pooling):

* A segment's row is the mean of the 512-D embeddings of the original's
  blocks whose centre lies in ``[start, end)``.  Blocks see the audio around
  the segment, exactly as the original computes them on the whole signal.
* A segment that holds no block centre (a clip of 1.138 s or less, a tail
  segment after the dropped partial block, a segment shorter than 1.16 s)
  gets one extra block of 100 frames centred on the frame nearest to the
  centre of the segment's part inside the audio; frames beyond the audio's
  ends are zeros, i.e. silence, as in the original's own padding.
* A long file comes in blocks of segments with context margins.  Each block
  is framed on the whole track's grid (frame ``k`` centred on the track's
  sample ``1024·k``, blocks every 50 frames from the track's start), so it
  gives the blocks a whole-file run gives, up to the resampler's rounding.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import re
from pathlib import Path

import numpy as np

from core.models import stages
from core.models.base import ModelEntry, ModelError, ModelUnavailable, batch_size, mean_by_segment, track_grid_start
from core.models.weights import cache_dir, cached_conversion, packaged_file, packaged_file_status, sha256_file

PACKAGE = "aisfx"
PACKAGE_VERSION = "0.1.2"
CHECKPOINT = "models/checkpoint.pth"
#: sha256 of ``aisfx-0.1.2-py2.py3-none-any.whl`` on PyPI.
WHEEL_SHA256 = "bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194"
#: sha256 of ``aisfx/models/checkpoint.pth`` inside that wheel.
CHECKPOINT_SHA256 = "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5"

SAMPLE_RATE = 44100
N_FFT = 2048
HOP = 1024
N_MELS = 96
BLOCK_FRAMES = 100
BLOCK_HOP = 50
LOG_SCALE = 1e4
#: The original's fixed divisor (``spec_norm='original'``), the same for every clip.
NORM_MAX = 9.457798957824707
DIM = 512

CATALOGUE = (
    ModelEntry(
        key="aisfx",
        family="aisfx",
        dim=DIM,
        sample_rate=SAMPLE_RATE,
        licence=(
            "CC BY 4.0: model weights © 2022 A.B. Ma and A. Lerch (aisfx 0.1.2, github.com/alisonbma/aisfx), "
            "used unmodified; our port of the code is MIT"
        ),
        weights=f"PyPI wheel {PACKAGE}=={PACKAGE_VERSION}: {PACKAGE}/{CHECKPOINT}",
        description=(
            "aisfx (Ma & Lerch, 'Representation Learning for the Automatic Indexing of Sound Effects "
            "Libraries', ISMIR 2022): a CNN trained on sound-effects libraries, 512-D, 2.32 s blocks "
            "every 1.16 s averaged per segment. Strong on environmental sounds, effects and one-shots. "
            "Weights by A.B. Ma and A. Lerch, licensed CC BY 4.0."
        ),
        suited_for=("general",),
        bf16_cosine=0.99993,  # bench/verify_bf16.py on 61 segments of the shared data (CPU)
    ),
)


def availability(entry: ModelEntry) -> tuple[bool, str]:
    """Whether the port can run here; the weights themselves may still be fetched on first use."""
    for module, why in (("torch", "runs the network"), ("samplerate", "reproduces the original's resampler")):
        if importlib.util.find_spec(module) is None:
            return False, f"{entry.key} needs the Python package '{module}', which {why}; run `pip install -r requirements.txt`."
    return packaged_file_status(PACKAGE, PACKAGE_VERSION, CHECKPOINT)


def resample_44k(audio: np.ndarray, sr: int) -> np.ndarray:
    """Resample as the original's essentia ``Resample`` does (libsamplerate ``sinc_medium``).

    The ratio is computed in float32 and the output is one sample shorter
    than ``ceil(n·ratio)``, as essentia's streaming resampler delivers it;
    both matter for bit-exactness with the original.

    Parameters
    ----------
    audio : np.ndarray [shape=(n,), dtype=float32]
    sr : int

    Returns
    -------
    np.ndarray [shape=(ceil(n·ratio) − 1,), dtype=float32]
        ``audio`` itself when ``sr`` is already 44.1 kHz.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if sr == SAMPLE_RATE:
        return audio
    import samplerate

    ratio = float(np.float32(SAMPLE_RATE) / np.float32(sr))
    n_out = math.ceil(len(audio) * ratio) - 1
    if n_out <= 0:
        return np.zeros(0, dtype=np.float32)
    return samplerate.resample(audio, ratio, "sinc_medium")[:n_out].astype(np.float32, copy=False)


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """essentia's ``MelBands`` weights for the original's settings (96 bands, 0–22050 Hz, htkMel, unit_sum).

    Unlike librosa's HTK filters, each triangle is linear in *mel*, not in Hz,
    and each band is scaled to sum to one.  The band edges are 98 points evenly
    spaced in mel from 0 to mel(22050), computed in float32 as essentia does;
    this rebuild matches essentia's stored matrix to 3e-8.

    Returns
    -------
    np.ndarray [shape=(96, 1025), dtype=float32]
    """

    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)

    f32 = np.float32
    n_bins = N_FFT // 2 + 1
    step = f32(f32(mel(SAMPLE_RATE / 2)) / f32(N_MELS + 1))
    edges_hz = hz(np.arange(N_MELS + 2, dtype=f32) * step).astype(f32)
    edges_mel = mel(edges_hz).astype(f32)
    bin_hz = np.arange(n_bins, dtype=f32) * (f32(SAMPLE_RATE / 2) / f32(n_bins - 1))
    bin_mel = mel(bin_hz).astype(f32)
    weights = np.zeros((N_MELS, n_bins), dtype=np.float64)
    for i in range(N_MELS):
        lo, mid, hi = edges_hz[i], edges_hz[i + 1], edges_hz[i + 2]
        m_lo, m_mid, m_hi = edges_mel[i], edges_mel[i + 1], edges_mel[i + 2]
        band = (bin_hz >= lo) & (bin_hz <= hi)
        rising = band & (bin_hz < mid)
        falling = band & (bin_hz >= mid)
        weights[i, rising] = (bin_mel[rising] - m_lo) / (m_mid - m_lo)
        weights[i, falling] = (m_hi - bin_mel[falling]) / (m_hi - m_mid)
        weights[i] /= weights[i].sum()
    return weights.astype(np.float32)


#: Samples one block of 100 frames spans: frame ``k`` covers ``[1024·k − 1024, 1024·k + 1024)``.
BLOCK_SAMPLES = (BLOCK_FRAMES + 1) * HOP


@functools.lru_cache(maxsize=None)
def _filters_and_window(device: str):
    """The filter bank (transposed) and the symmetric Hann window, as float64 tensors on a device."""
    import torch

    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / (N_FFT - 1))
    filters = np.ascontiguousarray(mel_filterbank().astype(np.float64).T)
    return torch.from_numpy(filters).to(device), torch.from_numpy(window).to(device)


def frames_log_mel(spans):
    """The original's normalised log-mel frames of stretches of 44.1 kHz audio, framed from each one's first sample.

    Steps 3-6 of the module docstring, in float64 from the windowing to the
    logarithm and then rounded to float32.

    Parameters
    ----------
    spans : torch.Tensor [shape=(b, n)]
        ``n >= 2048``; frame ``t`` is ``spans[:, 1024·t : 1024·t + 2048]``.

    Returns
    -------
    torch.Tensor [shape=(b, 1 + (n − 2048) // 1024, 96), dtype=float32]
        Values ≥ 0; 0 is digital silence.
    """
    import torch

    filters, window = _filters_and_window(str(spans.device))
    frames = spans.to(torch.float64).unfold(-1, N_FFT, HOP) * window
    power = torch.view_as_real(torch.fft.rfft(frames, dim=-1)).square().sum(-1)
    return (torch.log10(1.0 + LOG_SCALE * torch.matmul(power, filters)) / NORM_MAX).to(torch.float32)


def log_mel(audio_44k: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The original's normalised log-mel spectrogram of a whole 44.1 kHz signal (:func:`frames_log_mel`).

    Parameters
    ----------
    audio_44k : np.ndarray [shape=(n,), dtype=float32]
    chunk : int
        Frames transformed at once, to bound memory on long signals.

    Returns
    -------
    np.ndarray [shape=(ceil(n/1024) + 1, 96), dtype=float32]
        Frame ``k`` is centred on sample ``1024·k``; values are ≥ 0 and 0 is
        digital silence.
    """
    import torch

    n = len(audio_44k)
    n_frames = -(-n // HOP) + 1
    padded = np.zeros(HOP * (n_frames + 1), dtype=np.float32)
    padded[HOP : HOP + n] = audio_44k
    out = np.empty((n_frames, N_MELS), dtype=np.float32)
    with torch.inference_mode():
        for a in range(0, n_frames, chunk):
            b = min(a + chunk, n_frames)
            out[a:b] = frames_log_mel(torch.from_numpy(padded[a * HOP : (b + 1) * HOP])[None])[0].numpy()
    return out


def original_block_starts(n_frames: int) -> np.ndarray:
    """First frame of each block the original cuts from ``n_frames`` frames.

    Returns
    -------
    np.ndarray [shape=(n_blocks,), dtype=int64]
        ``50·i``; empty for 50 frames or fewer, where the original refuses the signal.
    """
    if n_frames <= BLOCK_HOP:
        return np.zeros(0, dtype=np.int64)
    n_blocks = (n_frames - BLOCK_FRAMES) // BLOCK_HOP + 1 if n_frames >= BLOCK_FRAMES else 1
    return np.arange(n_blocks, dtype=np.int64) * BLOCK_HOP


def block_centres(starts: np.ndarray) -> np.ndarray:
    """Centre in seconds of blocks starting at the given frames: ``(start + 49.5)·1024/44100``."""
    return (np.asarray(starts, dtype=np.float64) + (BLOCK_FRAMES - 1) / 2) * HOP / SAMPLE_RATE


def _network():
    """The original's ``EmbeddingNet('max', 3, 1, 64)``, with its state-dict names."""
    from torch import nn

    class ConvBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, pool: bool):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

        def forward(self, x):
            x = self.bn1(self.conv1(x)).relu()
            x = self.bn2(self.conv2(x)).relu()
            return self.pool(x)

    class EmbeddingNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_block1 = ConvBlock(1, 64, True)
            self.conv_block2 = ConvBlock(64, 128, True)
            self.conv_block3 = ConvBlock(128, 256, True)
            self.conv_block4 = ConvBlock(256, 512, False)

        def forward(self, blocks):
            """(B, 100 frames, 96 mels) -> (B, 512): mean over frequency, then max over time."""
            x = blocks.unsqueeze(1)
            for conv_block in (self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4):
                x = conv_block(x)
            return x.mean(dim=3).amax(dim=2)

    return EmbeddingNet()


def _check_layout(tensors: dict, where: str) -> None:
    expected = {name: tuple(t.shape) for name, t in _network().state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelError(f"{where} lacks the tensor {missing[0]!r}; it is not an aisfx {PACKAGE_VERSION} checkpoint.")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ModelError(
                f"{where} holds {name!r} with shape {tuple(tensors[name].shape)}, expected {shape}; "
                f"it is not an aisfx {PACKAGE_VERSION} checkpoint."
            )


def read_checkpoint(path: str | Path, sha256: str | None = CHECKPOINT_SHA256) -> dict:
    """The embedding network's tensors from the original checkpoint, loaded without executing pickled code.

    The checkpoint pickles ``(state_dict, ds_dict)``, where ``ds_dict`` holds
    numpy int64 scalars; ``torch.load(weights_only=True)`` accepts it once
    numpy's scalar reconstructor and dtypes are allowed explicitly.

    Parameters
    ----------
    path : str or Path
    sha256 : str or None
        Expected digest of the file; ``None`` skips the check.

    Returns
    -------
    dict[str, torch.Tensor]
        The ``embedding_net.*`` tensors with that prefix removed.

    Raises
    ------
    ModelError
        Naming the file, if its digest differs, it cannot be unpickled, or
        its tensors do not fit the network.
    """
    import torch
    from numpy._core.multiarray import scalar

    path = Path(path)
    if sha256 is not None:
        digest = sha256_file(path)
        if digest != sha256:
            raise ModelError(
                f"{path} has sha256 {digest[:16]}…, expected {sha256[:16]}…; reinstall "
                f"{PACKAGE}=={PACKAGE_VERSION} with `pip install --no-deps --force-reinstall {PACKAGE}=={PACKAGE_VERSION}`."
            )
    # The wheel's checkpoint was pickled under numpy 1.x, which named the reconstructor numpy.core.
    allowed = [(scalar, "numpy.core.multiarray.scalar"), scalar, np.dtype, np.dtypes.Int64DType]
    try:
        with torch.serialization.safe_globals(allowed):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        refused = re.search(r"GLOBAL (\S+)", str(exc))
        lines = str(exc).strip().splitlines()
        reason = f"it pickles {refused.group(1)}, which is not plain data" if refused else (lines[0] if lines else type(exc).__name__)
        raise ModelError(f"{path} is not a readable aisfx checkpoint ({reason[:200]}).") from None
    if not (isinstance(content, tuple) and len(content) == 2 and isinstance(content[0], dict)):
        raise ModelError(f"{path} does not hold the (state_dict, ds_dict) pair of an aisfx checkpoint.")
    prefix = "embedding_net."
    tensors = {k[len(prefix) :]: v for k, v in content[0].items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    _check_layout(tensors, str(path))
    return tensors


@dataclasses.dataclass
class AisfxAdapter:
    """The loaded network plus the segment rule of the module docstring, in the staged form (:mod:`core.models.stages`).

    Items are blocks: the 103,424 samples at 44.1 kHz that a block's 100
    frames span, zeros beyond the audio (which give the original's silent
    frames); :meth:`frontend` computes their log-mel on ``device``.
    """

    entry: ModelEntry
    net: object
    device: str
    weights_sha256: str = CHECKPOINT_SHA256
    version: str = "2"  # 2: blocks of long files framed on the track's grid
    tag_names: dict = dataclasses.field(default_factory=dict)
    equal_lengths: bool = False

    def __post_init__(self):
        self.batch_size = batch_size(self.device, cpu=16, cuda=1024, item_mib=16)
        self.preparer = AisfxPreparer(self.entry.key)

    def frontend(self, inputs, lengths=None):
        """Normalised log-mel blocks [shape=(b, 100, 96), dtype=float32] of block spans."""
        return frames_log_mel(inputs)

    def network(self, features) -> dict:
        """The 512-D embedding of each block."""
        return {"embedding": self.net(features)}

    def embed(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """One row per segment: the mean of its blocks (see the module docstring).

        Parameters
        ----------
        audio : np.ndarray [shape=(n_samples,), dtype=float32]
            Mono, at ``sr``: the whole track, or a block of it.
        sr : int
        segments : np.ndarray [shape=(n, 2), dtype=float64]
            Start and end in seconds relative to ``audio[0]``.
        offset_s : float
            Where ``audio[0]`` lies in the track.

        Returns
        -------
        dict[str, np.ndarray [shape=(n, 512), dtype=float32]]
            Under the key ``"aisfx"``.
        """
        return stages.embed(self, audio, sr, segments, offset_s)


@dataclasses.dataclass(frozen=True)
class AisfxPreparer:
    """aisfx's CPU stage: libsamplerate to 44.1 kHz, the track's frame grid, and one item per block."""

    key: str

    def __call__(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> stages.Prepared:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"aisfx expects mono audio of shape (n_samples,), got {audio.shape}")
        segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2) + offset_s
        # Start on the track's frame grid: drop the samples before its next frame centre.
        first_frame, skip = track_grid_start(offset_s, SAMPLE_RATE, HOP)
        y = resample_44k(audio, sr)[skip:]
        starts = original_block_starts(first_frame - (-len(y) // HOP) + 1)
        starts = starts[starts >= first_frame]
        centres = block_centres(starts)
        in_any = np.zeros(len(starts), dtype=bool)
        for start_s, end_s in segments:
            in_any |= (centres >= start_s) & (centres < end_s)
        used = centres[in_any]
        empty = np.searchsorted(used, segments[:, 1], "left") <= np.searchsorted(used, segments[:, 0], "left")
        inside = np.clip(segments[empty], offset_s, offset_s + len(audio) / sr)
        middle_frame = inside.mean(axis=1) * SAMPLE_RATE / HOP
        extra = np.floor(middle_frame - (BLOCK_FRAMES - 1) / 2 + 0.5).astype(np.int64)
        local = np.concatenate([starts[in_any], extra]) - first_frame
        return stages.Prepared(len(local), stages.single_part(block_spans(y, local)), (used, segments, empty))

    def finish(self, plan, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each segment's row: the mean of the blocks centred in it, else its extra block."""
        used, segments, empty = plan
        values = outputs.get("embedding", np.zeros((0, DIM), np.float32))
        rows, _ = mean_by_segment(used, values[: len(used)], segments)
        rows[empty] = values[len(used) :]
        return {self.key: rows}


def block_spans(y: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The samples of the blocks starting at the given frames of ``y`` (frame ``k`` centred on ``y[1024·k]``).

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32]
    starts : np.ndarray [shape=(k,), dtype=int]
        May be negative or run past the end.

    Returns
    -------
    np.ndarray [shape=(k, 103424), dtype=float32]
        Block ``i`` holds ``y[1024·starts[i] − 1024 : 1024·starts[i] + 102400]``, zeros beyond ``y``.
    """
    spans = np.zeros((len(starts), BLOCK_SAMPLES), dtype=np.float32)
    for row, start in zip(spans, np.asarray(starts, dtype=np.int64) * HOP - HOP):
        lo, hi = max(int(start), 0), min(int(start) + BLOCK_SAMPLES, len(y))
        if hi > lo:
            row[lo - start : hi - start] = y[lo:hi]
    return spans


def load(entry: ModelEntry, device: str) -> AisfxAdapter:
    """Load the network, converting the wheel's checkpoint to safetensors in ``cache/weights`` once.

    Raises
    ------
    ModelUnavailable
        If the wheel is neither installed nor downloadable.
    ModelError
        If the checkpoint or its conversion is broken.
    """
    def convert() -> dict:
        path = packaged_file(PACKAGE, PACKAGE_VERSION, CHECKPOINT, wheel_sha256=WHEEL_SHA256)
        return read_checkpoint(path, CHECKPOINT_SHA256)

    tensors = cached_conversion(f"{entry.key}-embedding", CHECKPOINT_SHA256, convert)
    _check_layout(tensors, f"the converted aisfx weights in {cache_dir() / 'weights'}")
    net = _network()
    net.load_state_dict(tensors)
    try:
        net.eval().to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ModelUnavailable(f"{entry.key} cannot run on device {device!r} ({exc}); set AEB_DEVICE=cpu.") from None
    return AisfxAdapter(entry=entry, net=net, device=device)
