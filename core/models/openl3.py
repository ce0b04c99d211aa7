"""OpenL3 (Cramer et al., ICASSP 2019): our torch port of openl3 0.4.x's audio network.

The ``openl3`` package cannot be installed on a modern stack (TensorFlow,
``imp``, weights fetched at build time), so this module re-implements what
``openl3.get_audio_embedding(..., center=True, frontend="kapre")`` computes
in release 0.4.2 and reads the official Keras-2 weight files with h5py.
Every step that moves the numbers follows ``../shared/reference/openl3``:

* resampling to 48 kHz with resampy 0.2.x's ``kaiser_best`` filter (openl3
  pins ``resampy<0.3``; the filter of resampy >= 0.3 moves embeddings by up
  to 7 %).  The 0.2.x table is regenerated from its design parameters and
  run through a compiled copy of 0.2.x's interpolation loop, in its order of
  operations: the output equals openl3's to the last bit on the reference
  clips, which matters (below);
* ``center=True`` framing: 0.5 s of zeros before the audio, the end padded to
  whole hops, one 1 s window per hop;
* kapre 0.4.1's frontend as openl3 0.4 configures it: a non-centred STFT with
  ``pad_end`` (mel: 2048-point, 199 frames, Slaney mel and norm; linear:
  512-point, 197 frames), magnitude, ``10 log10``, minus the window's
  maximum, floored at -80 dB;
* the network with Keras' batch-norm epsilon (1e-3) and the final max-pool
  per representation and size, flattened in NHWC order.

The decibels are of the magnitude, not the power, so the floor sits at 1e-8
of the window's peak magnitude: far below float32 rounding (1e-7).  Cells
60-80 dB down therefore hold TensorFlow's float32 rounding noise, and the
network sees them at full weight.  The frontend reproduces that arithmetic
(see :func:`frontend`); an exact float64 STFT, or another float32 FFT, moves
the embeddings by up to 1 % of their range.

Segments of the shared grid are the mean of the window embeddings whose
centres (openl3's timestamps) fall in the segment.  Only the windows some
segment needs are computed, so a block with context margins costs no more
than its segments.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np

from core.models import stages
from core.models.base import ModelEntry, ModelError, ModelUnavailable, batch_size, from_table, mean_by_segment
from core.models.weights import cache_dir, installed_package_dir, reachable, sha256_file

#: openl3's model rate, window length (1 s) and default hop.
SAMPLE_RATE = 48000
WINDOW = SAMPLE_RATE
DEFAULT_HOP_S = 0.1

#: Suffix of the weight files on the ``models`` branch (openl3 0.4.x).
WEIGHTS_VERSION = "v0_4_0"
WEIGHTS_URL = "https://github.com/marl/openl3/raw/models/{name}.gz"
WEIGHTS_ENV = "OPENL3_WEIGHTS_DIR"

#: resampy 0.2.x ``kaiser_best``: zero crossings, Kaiser beta and roll-off as
#: documented in resampy 0.2.2's filters.py; 2**9 table entries per crossing,
#: as in the ``kaiser_best.npz`` it shipped.
_KAISER_BEST_02 = dict(num_zeros=64, precision=9, beta=14.769656459379492, rolloff=0.9475937167399596)

#: STFT size and number of frames per 1 s window for each input representation.
REPRESENTATIONS = {
    "mel128": dict(n_fft=2048, n_mels=128, frames=199),
    "mel256": dict(n_fft=2048, n_mels=256, frames=199),
    "linear": dict(n_fft=512, n_mels=None, frames=197),
}
STFT_HOP = 242

#: (out_channels) of the seven 3x3 convolutions; a 2x2 max-pool follows the
#: 2nd, 4th and 6th.  The last one is ``audio_embedding_layer`` (no BN/ReLU).
_CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)

#: Windows per forward pass on a CPU, and per spectrogram part: large enough
#: to keep the convolutions busy, small enough that the first 64-channel
#: activation stays near 100 MB.
BATCH_WINDOWS = 8

_TABLE: tuple[ModelEntry, ...] = from_table(
    "openl3",
    ("key", "input_repr", "content_type", "embedding_size", "hop_s"),
    (
        ("openl3-mel128-music-512", "mel128", "music", 512, 0.1),
        ("openl3-mel128-music-6144", "mel128", "music", 6144, 0.1),
        ("openl3-mel128-env-512", "mel128", "env", 512, 0.1),
        ("openl3-mel128-env-6144", "mel128", "env", 6144, 0.1),
        ("openl3-mel256-music-512", "mel256", "music", 512, 0.1),
        ("openl3-mel256-music-6144", "mel256", "music", 6144, 0.1),
        ("openl3-mel256-env-512", "mel256", "env", 512, 0.1),
        ("openl3-mel256-env-6144", "mel256", "env", 6144, 0.1),
        ("openl3-linear-music-512", "linear", "music", 512, 0.1),
        ("openl3-linear-music-6144", "linear", "music", 6144, 0.1),
        ("openl3-linear-env-512", "linear", "env", 512, 0.1),
        ("openl3-linear-env-6144", "linear", "env", 6144, 0.1),
        ("openl3-mel128-music-512-hop0.5", "mel128", "music", 512, 0.5),
        ("openl3-mel128-env-512-hop0.5", "mel128", "env", 512, 0.5),
    ),
    facts={
        "content_type": {
            "music": dict(trained_on="music", suited_for=("music",)),
            "env": dict(trained_on="environmental sound", suited_for=("general",)),
        },
        "embedding_size": {
            512: dict(dim=512, pooling="global max over the last feature map"),
            6144: dict(dim=6144, pooling="max-pooled to a 4x3 (frequency x time) grid"),
        },
        "hop_s": {
            0.1: dict(speed=""),
            0.5: dict(speed=" Windows every 0.5 s instead of openl3's 0.1 s: about 5x faster, "
                            "with fewer windows per segment."),
        },
    },
    sample_rate=SAMPLE_RATE,
    # openl3 reads and mixes in float64; a float32 mix of a stereo file rounds
    # away a bit that the quiet cells of the frontend would show.
    input_dtype="float64",
    licence="MIT (marl/openl3, which distributes the weights with its code)",
    weights=f"marl/openl3 models branch: openl3_audio_{{input_repr}}_{{content_type}}-{WEIGHTS_VERSION}.h5",
    description="OpenL3 audio embedding trained on {trained_on} videos (AudioSet, look-listen-learn), {input_repr} "
                "input, {embedding_size}-D ({pooling}); 1 s windows averaged over each segment.{speed}",
)

#: Lowest per-segment cosine of bfloat16 to float32 vectors, by key: bench/verify_bf16.py with the architecture's
#: random weights on shared clips, on this CPU (61 segments) and on an H200 (42 segments); the lower.  The other
#: keys were not measured and run in float32.
_BF16_COSINE = {"openl3-mel128-music-512": 0.99998}

CATALOGUE: tuple[ModelEntry, ...] = tuple(dataclasses.replace(e, bf16_cosine=_BF16_COSINE.get(e.key)) for e in _TABLE)


# --------------------------------------------------------------------------- weights


def weight_file_name(input_repr: str, content_type: str) -> str:
    """The official file name, as on the ``models`` branch and in ``OPENL3_WEIGHTS_DIR``."""
    return f"openl3_audio_{input_repr}_{content_type}-{WEIGHTS_VERSION}.h5"


def _download_path(input_repr: str, content_type: str) -> Path:
    return cache_dir() / "openl3" / weight_file_name(input_repr, content_type)


def local_weights(input_repr: str, content_type: str) -> Path | None:
    """The weight file already on this machine, in the documented order of precedence.

    ``OPENL3_WEIGHTS_DIR`` first, then the folder of an installed ``openl3``
    package (found without importing it; it names the files without the
    version suffix), then an earlier download in ``cache/openl3``.
    """
    candidates = []
    folder = os.environ.get(WEIGHTS_ENV)
    if folder:
        candidates.append(Path(folder).expanduser() / weight_file_name(input_repr, content_type))
    package = installed_package_dir("openl3")
    if package is not None:
        candidates.append(package / f"openl3_audio_{input_repr}_{content_type}.h5")
    candidates.append(_download_path(input_repr, content_type))
    return next((path for path in candidates if path.is_file()), None)


def availability(entry: ModelEntry) -> tuple[bool, str]:
    """Available when the weight file is here, or its server can be reached to fetch it."""
    input_repr, content_type = entry.params["input_repr"], entry.params["content_type"]
    name = weight_file_name(input_repr, content_type)
    if local_weights(input_repr, content_type) is not None:
        return True, ""
    if reachable(WEIGHTS_URL.format(name=name)):
        return True, f"{name} is downloaded from GitHub (marl/openl3) on first use."
    return False, (
        f"The OpenL3 weights {name} are not on this machine and cannot be downloaded now; "
        f"connect to the internet once, or put the file in a folder named by {WEIGHTS_ENV}."
    )


def fetch_weights(input_repr: str, content_type: str) -> Path:
    """The weight file, downloading and checking the official gzip on first use.

    Raises
    ------
    ModelUnavailable
        If no local file exists and the download fails.
    ModelError
        If the download is not a valid gzip of an OpenL3 weight file.
    """
    found = local_weights(input_repr, content_type)
    if found is not None:
        return found
    target = _download_path(input_repr, content_type)
    url = WEIGHTS_URL.format(name=target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".gz.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ModelUnavailable(
            f"The OpenL3 weights {target.name} could not be downloaded from {url} ({exc}); "
            f"connect to the internet once, or put the file in a folder named by {WEIGHTS_ENV}."
        ) from None
    unpacked = target.with_name(target.name + ".part")
    try:
        with gzip.open(part, "rb") as src, open(unpacked, "wb") as out:
            shutil.copyfileobj(src, out)
        read_weights(unpacked)
    except (OSError, EOFError, ModelError) as exc:
        unpacked.unlink(missing_ok=True)
        raise ModelError(f"The download {url} is not a valid OpenL3 weight file ({exc}); it was discarded.") from None
    finally:
        part.unlink(missing_ok=True)
    unpacked.replace(target)
    return target


def _expected_layers() -> list[tuple[str, list[tuple[int, ...]]]]:
    """Kind and array shapes of the 16 weighted layers, in network order."""
    layers = [("batch_norm", [(1,)] * 4)]
    c_in = 1
    for i, c_out in enumerate(_CONV_CHANNELS):
        layers.append(("conv", [(3, 3, c_in, c_out), (c_out,)]))
        if i < len(_CONV_CHANNELS) - 1:
            layers.append(("batch_norm", [(c_out,)] * 4))
        c_in = c_out
    return layers


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_weights(path: str | Path) -> list[list[np.ndarray]]:
    """Read an OpenL3 audio weight file in the legacy Keras-2 HDF5 layout.

    Keras' legacy loader matches weighted layers by position, not by name:
    layers are taken in the order of the root attribute ``layer_names``,
    skipping those whose ``weight_names`` is empty.

    Returns
    -------
    list of 16 lists of np.ndarray
        ``[kernel (3, 3, in, out), bias (out,)]`` per convolution and
        ``[gamma, beta, moving_mean, moving_variance]`` per batch norm.

    Raises
    ------
    ModelError
        Naming the file, if it is not readable HDF5 or its layout or shapes
        are not those of an OpenL3 audio network.
    """
    import h5py

    path = Path(path)
    names: list[str] = []
    layers: list[list[np.ndarray]] = []
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" not in f.attrs:
                raise ModelError(f"{path} is not a Keras weight file: it has no 'layer_names' attribute.")
            for layer in map(_text, f.attrs["layer_names"]):
                weight_names = [_text(w) for w in f[layer].attrs.get("weight_names", [])]
                if weight_names:
                    names.append(layer)
                    layers.append([np.asarray(f[layer][w][()], dtype=np.float32) for w in weight_names])
    except ModelError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelError(
            f"{path} cannot be read as an OpenL3 weight file ({exc}); delete it and fetch it again."
        ) from None

    expected = [shapes for _, shapes in _expected_layers()]
    if len(layers) != len(expected):
        raise ModelError(
            f"{path} does not hold an OpenL3 audio network: it has {len(layers)} weighted layers "
            f"({sum(map(len, layers))} arrays), expected {len(expected)} (48 arrays)."
        )
    for name, arrays, shapes in zip(names, layers, expected):
        found = [a.shape for a in arrays]
        if found != shapes:
            raise ModelError(
                f"{path} does not hold an OpenL3 audio network: layer {name!r} has arrays of shapes {found}, "
                f"expected {shapes}."
            )
    return layers


# --------------------------------------------------------------------------- signal path


@functools.lru_cache(maxsize=None)
def _kaiser_best_02() -> tuple[np.ndarray, int]:
    """resampy 0.2.x's ``kaiser_best`` half-window (read-only) and its table precision.

    Regenerated from the design parameters; equal to the ``kaiser_best.npz``
    shipped in resampy 0.2.2 to within 3e-16, which leaves resampled signals
    equal to 1e-14 of their sum.
    """
    import resampy
    import scipy.signal

    p = _KAISER_BEST_02
    half_window, precision, _ = resampy.filters.sinc_window(
        num_zeros=p["num_zeros"],
        precision=p["precision"],
        window=lambda n: scipy.signal.get_window(("kaiser", p["beta"]), n, fftbins=False),
        rolloff=p["rolloff"],
    )
    half_window.setflags(write=False)
    return half_window, precision


@functools.lru_cache(maxsize=None)
def _interpolate_02():
    """resampy 0.2.x's band-limited interpolation loop, compiled by numba, resumable mid-track.

    Written out again rather than taken from resampy >= 0.3, whose loop
    computes each output time as a product where 0.2.x accumulates it, and
    sums in another order: those differ from openl3 in the last bits of 0.1 %
    of the samples, and the quiet cells of the frontend (see module notes)
    turn that into errors of up to 3e-3 of the embedding range.

    ``x[0]`` is the track's input sample ``start`` and ``y[0]`` its output
    sample ``first``; the time register is advanced ``first`` times first, so
    a block of a long file gets the very samples a whole-track run gives
    (filter taps past the block's ends are cut, as at a track's ends).
    """
    import numba

    @numba.njit(nogil=True, cache=False)
    def interpolate(x, y, sample_ratio, interp_win, interp_delta, num_table, start, first):
        scale = min(1.0, sample_ratio)
        time_increment = 1.0 / sample_ratio
        index_step = int(scale * num_table)
        time_register = 0.0
        for _ in range(first):
            time_register += time_increment
        nwin = interp_win.shape[0]
        n_orig = x.shape[0]
        for t in range(y.shape[0]):
            whole = int(time_register)
            n = whole - start
            frac = scale * (time_register - whole)
            index_frac = frac * num_table
            offset = int(index_frac)
            eta = index_frac - offset
            for i in range(max(0, min(n + 1, (nwin - offset) // index_step))):
                j = offset + i * index_step
                y[t] += (interp_win[j] + eta * interp_delta[j]) * x[n - i]
            frac = scale - frac
            index_frac = frac * num_table
            offset = int(index_frac)
            eta = index_frac - offset
            for k in range(max(0, min(n_orig - n - 1, (nwin - offset) // index_step))):
                j = offset + k * index_step
                y[t] += (interp_win[j] + eta * interp_delta[j]) * x[n + k + 1]
            time_register += time_increment

    return interpolate


def resample(audio: np.ndarray, sr: int, start: int = 0) -> tuple[np.ndarray, int]:
    """Resample to 48 kHz as openl3 0.4.2 does (resampy 0.2.x ``kaiser_best``, float64).

    Parameters
    ----------
    audio : np.ndarray [shape=(n,)]
        The whole track, or a block of it.
    sr : int
    start : int
        Index of ``audio[0]`` in the track, for a block of a long file.

    Returns
    -------
    y : np.ndarray [dtype=float64]
        For a whole track, ``int(n * 48000 / sr)`` samples (resampy 0.2.x's
        length).  For a block, the track's 48 kHz samples from ``first`` to
        ``int((start + n) * 48000 / sr)``, as a whole-track run computes them
        except within the filter's reach (1.5 ms) of the block's ends.
    first : int
        Index of ``y[0]`` in the track's 48 kHz signal: ``ceil(start * 48000 / sr)``.
    """
    audio = np.ascontiguousarray(audio, dtype=np.float64)
    if sr == SAMPLE_RATE:
        return audio.copy(), start
    ratio = float(SAMPLE_RATE) / sr
    first = -(-start * SAMPLE_RATE // sr)
    half_window, precision = _kaiser_best_02()
    if ratio < 1:
        half_window = half_window * ratio
    delta = np.zeros_like(half_window)
    delta[:-1] = np.diff(half_window)
    out = np.zeros(max(0, int((start + len(audio)) * ratio) - first), dtype=np.float64)
    if len(out):
        _interpolate_02()(audio, out, ratio, half_window, delta, precision, start, first)
    return out, first


def window_count(n_samples: int, hop_s: float = DEFAULT_HOP_S) -> int:
    """Number of windows openl3 frames from ``n_samples`` at 48 kHz with ``center=True``."""
    hop = int(hop_s * SAMPLE_RATE)
    length = n_samples + WINDOW // 2
    if length <= WINDOW:
        return 1
    return 1 + int(np.ceil((length - WINDOW) / hop))


def frame_windows(audio48: np.ndarray, indices: np.ndarray, hop_s: float = DEFAULT_HOP_S,
                  first: int = 0) -> np.ndarray:
    """Cut openl3's ``center=True`` windows, centred at ``index * hop_s`` seconds of the track.

    Parameters
    ----------
    audio48 : np.ndarray [shape=(n,)]
        Audio at 48 kHz.
    indices : np.ndarray [shape=(k,), dtype=int]
        Window numbers, ``0 <= index < window_count(first + n, hop_s)``.
    hop_s : float
        Window hop in seconds.
    first : int
        Index of ``audio48[0]`` in the track (see :func:`resample`).

    Returns
    -------
    np.ndarray [shape=(k, 48000), dtype=float32]
        Samples outside the audio are zeros, as openl3's padding makes them.
    """
    hop = int(hop_s * SAMPLE_RATE)
    indices = np.asarray(indices, dtype=np.int64)
    windows = np.zeros((len(indices), WINDOW), dtype=np.float32)
    for row, index in enumerate(indices):
        start = index * hop - WINDOW // 2 - first
        lo, hi = max(start, 0), min(start + WINDOW, len(audio48))
        if hi > lo:
            windows[row, lo - start : hi - start] = audio48[lo:hi]
    return windows


@functools.lru_cache(maxsize=None)
def _mel_filterbank(n_mels: int) -> np.ndarray:
    import librosa

    fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=2048, n_mels=n_mels, fmin=0.0, fmax=SAMPLE_RATE / 2,
                             htk=False, norm="slaney", dtype=np.float32)
    return np.ascontiguousarray(fb.T)


_F32 = np.float32


def _eigen_cos(x: np.ndarray) -> np.ndarray:
    """Cosine as TensorFlow computes it in float32 on x86 without FMA (Eigen's vectorised ``pcos``).

    A Cody-Waite reduction by pi/2 in four float32 steps, then the minimax
    polynomials of the quadrant.  ``np.cos`` differs in the last bit of some
    window values, and those bits reach the quiet STFT cells.
    """
    x = np.asarray(x, dtype=_F32)
    r = np.abs(x)
    shifted = r * _F32(0.636619746685028076171875) + _F32(12582912.0)  # round(x·2/pi) in the low bits
    quadrant = shifted.view(np.int32) & np.int32(0x7FFFFF)
    y = shifted - _F32(12582912.0)
    for c in (-1.5703125, -4.83989715576171875e-4, 1.62865035235881805419921875e-7,
              5.5644315544167710640977020375430583953857421875e-11):
        r = y * _F32(c) + r
    r2 = r * r
    cos_poly = _F32(2.4372266125283204019069671630859375e-5)
    for c in (-1.38865201734006404876708984375e-3, 4.1666619479656219482421875e-2, -0.5, 1.0):
        cos_poly = cos_poly * r2 + _F32(c)
    sin_poly = _F32(-1.959234114083702898469196984621021329076029360294342041015625e-4)
    for c in (8.33268736556168516937947998712843400426208972930908203125e-3,
              -0.16666662039822982555037356178213166445493698120117187500):
        sin_poly = sin_poly * r2 + _F32(c)
    sin_poly = (sin_poly * r2) * r + r
    out = np.where((quadrant & 1) == 0, cos_poly, sin_poly).astype(_F32)
    return np.where(((quadrant + 1) >> 1) & 1, -out, out).astype(_F32)


def _eigen_log(x: np.ndarray) -> np.ndarray:
    """Natural log as TensorFlow computes it in float32 (Eigen's ``plog``), for positive normal x.

    The exponent is split off, the mantissa brought to [sqrt(1/2), sqrt(2)),
    and ``log(1 + f)`` evaluated by Eigen's rational approximation.
    """
    a = np.ascontiguousarray(x, dtype=_F32)
    bits = a.view(np.uint32)
    e = ((bits >> 23) & 0xFF).astype(_F32) - _F32(126)
    m = ((bits & np.uint32(0x807FFFFF)) | np.uint32(0x3F000000)).view(_F32)
    small = m < _F32(0.707106781186547524)
    f = (m - _F32(1)) + np.where(small, m, _F32(0)).astype(_F32)
    e -= small.astype(_F32)
    p = f * _F32(0.18256296349849254) + _F32(1.0000000190281063)
    p = (f * p + _F32(1.0000000190281136)) * f
    q = f * _F32(0.049616247954120038) + _F32(0.59923249590823520)
    q = f * q + _F32(1.4999999999999927)
    q = f * q + _F32(1.0)
    return (e * _F32(0.6931471805599453) + p / q).astype(_F32)


@functools.lru_cache(maxsize=None)
def _hann(n: int) -> np.ndarray:
    """``tf.signal.hann_window(n, periodic=True)``: float32 argument, Eigen's cosine."""
    window = _F32(0.5) - _F32(0.5) * _eigen_cos((_F32(2 * np.pi) * np.arange(n, dtype=_F32)) / _F32(n))
    window.setflags(write=False)
    return window


#: kapre's ``10 * (log(x) / log(10))`` after TensorFlow's graph optimiser has
#: folded it into one float32 constant, which is what the reference carries.
_DB_PER_NEPER = _F32(10) / _F32(np.log(10))


def frontend(windows, input_repr: str):
    """kapre 0.4.1's spectrogram as openl3 0.4 builds it, in decibels relative to the window's peak.

    Computed as TensorFlow 2.x computes it on a CPU, operation by operation
    in float32, because quiet cells carry its rounding (module notes): the
    Hann window with Eigen's cosine, the real FFT with pocketfft (the
    algorithm of TensorFlow's DUCC FFT; torch's MKL FFT rounds differently),
    the magnitude as ``sqrt(re² + im²)``, Eigen's logarithm and the folded
    decibel constant.  On openl3's own 48 kHz audio this agrees with the
    reference to 2e-5 dB in every cell, and 88-99 % of cells are bit-identical.

    Parameters
    ----------
    windows : np.ndarray [shape=(k, 48000), dtype=float32]
    input_repr : {"mel128", "mel256", "linear"}

    Returns
    -------
    np.ndarray [shape=(k, 1, F, T), dtype=float32]
        ``F, T`` = (128, 199), (256, 199) or (257, 197); values in [-80, 0].
    """
    import scipy.fft

    spec = REPRESENTATIONS[input_repr]
    n_fft, n_frames = spec["n_fft"], spec["frames"]
    x = np.asarray(windows, dtype=_F32)
    if spec["n_mels"] is not None:
        # tf.signal.stft(pad_end=True): frames start every 242 samples until the
        # signal ends; the last ones run into zeros.
        x = np.pad(x, ((0, 0), (0, (n_frames - 1) * STFT_HOP + n_fft - x.shape[-1])))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft, axis=-1)[:, ::STFT_HOP][:, :n_frames]
    spectrum = scipy.fft.rfft(frames * _hann(n_fft), axis=-1)
    magnitude = np.sqrt(spectrum.real * spectrum.real + spectrum.imag * spectrum.imag)  # (k, T, bins)
    if spec["n_mels"] is not None:
        magnitude = magnitude @ _mel_filterbank(spec["n_mels"])
    db = _eigen_log(np.maximum(magnitude.transpose(0, 2, 1), _F32(1e-10))) * _DB_PER_NEPER
    db -= db.max(axis=(1, 2), keepdims=True)
    return np.maximum(db, _F32(-80.0))[:, None]


def _network(layers: list[list[np.ndarray]]):
    """The OpenL3 audio CNN with the given Keras weights, in eval mode.

    The returned module maps (k, 1, F, T) to the last feature map
    (k, 512, F', 24), F' = 16 for mel128 and 32 otherwise.
    """
    import torch
    from torch import nn

    modules: list[nn.Module] = [nn.BatchNorm2d(1, eps=1e-3)]
    c_in = 1
    for i, c_out in enumerate(_CONV_CHANNELS):
        modules.append(nn.Conv2d(c_in, c_out, 3, padding=1))
        if i < len(_CONV_CHANNELS) - 1:
            modules += [nn.BatchNorm2d(c_out, eps=1e-3), nn.ReLU()]
        if i in (1, 3, 5):
            modules.append(nn.MaxPool2d(2, 2))
        c_in = c_out
    net = nn.Sequential(*modules)
    weighted = [m for m in net if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.no_grad():
        for module, arrays in zip(weighted, layers, strict=True):
            tensors = [torch.from_numpy(a) for a in arrays]
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(tensors[0].permute(3, 2, 0, 1))
                module.bias.copy_(tensors[1])
            else:
                module.weight.copy_(tensors[0])
                module.bias.copy_(tensors[1])
                module.running_mean.copy_(tensors[2])
                module.running_var.copy_(tensors[3])
    return net.eval()


def pool_embedding(feature_map, input_repr: str, size: int):
    """openl3's final ``MaxPooling2D`` + ``Flatten`` for an embedding size.

    Parameters
    ----------
    feature_map : torch.Tensor [shape=(k, 512, F', 24)]

    Returns
    -------
    torch.Tensor [shape=(k, size)]
        512: global max.  6144: max over a 4 (frequency) x 3 (time) grid of
        blocks, flattened in Keras' NHWC order (``(f*3 + t)*512 + channel``).
    """
    import torch

    if size == 512:
        return feature_map.amax(dim=(2, 3))
    f_block = 4 if input_repr == "mel128" else 8
    grid = torch.nn.functional.max_pool2d(feature_map, kernel_size=(f_block, 8))
    return grid.permute(0, 2, 3, 1).reshape(len(feature_map), -1)


# --------------------------------------------------------------------------- adapter


class OpenL3:
    """A loaded OpenL3 audio model; one catalogue entry's representation, content and size.

    In the staged form (:mod:`core.models.stages`) its items are the
    spectrograms of windows: :func:`frontend` must round as TensorFlow's
    float32 CPU arithmetic does (pocketfft, Eigen's cosine and logarithm),
    which no GPU FFT reproduces, so it runs in the CPU stage beside the
    resampler, and the device runs the network alone.

    Parameters
    ----------
    entry : ModelEntry
    layers : list of list of np.ndarray
        The Keras weights of the network (:func:`read_weights`).
    weights_sha256 : str
    device : str
    weights_path : Path, optional
        The file the weights came from.
    """

    version = "2"
    tag_names: dict[str, list[str]] = {}
    equal_lengths = False

    def __init__(self, entry: ModelEntry, layers: list[list[np.ndarray]], weights_sha256: str, device: str = "cpu",
                 weights_path: str | Path | None = None):
        import torch

        self.entry = entry
        self.input_repr = entry.params["input_repr"]
        self.size = entry.params["embedding_size"]
        self.hop_s = entry.params["hop_s"]
        self.device = torch.device(device)
        self.weights_path = None if weights_path is None else Path(weights_path)
        self.weights_sha256 = weights_sha256
        # channels-last convolutions run about 20 % faster on CPU (oneDNN).
        self.net = _network(layers).to(self.device, memory_format=torch.channels_last)
        self.batch_size = batch_size(device, cpu=BATCH_WINDOWS, cuda=512, item_mib=30)
        self.preparer = OpenL3Preparer(entry.key, self.input_repr, self.hop_s)

    def frontend(self, inputs, lengths=None):
        """The spectrograms as the network takes them (channels-last float32); :func:`frontend` made them."""
        import torch

        return inputs.to(torch.float32).contiguous(memory_format=torch.channels_last)

    def network(self, features) -> dict:
        """Each window's embedding, pooled for the entry's size."""
        return {"embedding": pool_embedding(self.net(features), self.input_repr, self.size)}

    def embed(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> dict[str, np.ndarray]:
        """Mean of the window embeddings whose centres lie in each segment.

        Windows are framed as openl3 frames the whole track (``center=True``
        from the track's start), so windows near a segment's edge see the
        neighbouring audio, and a block of a long file gives the numbers a
        whole-track run gives.  A segment that holds no window centre
        (shorter than the hop, or past the last window) takes the window whose
        centre is nearest to the segment's midpoint.

        Parameters
        ----------
        audio : np.ndarray [shape=(n,), dtype=float64]
            float32 works too, but for multi-channel files only a float64
            mix is openl3's (the entry's ``input_dtype``).
        sr : int
        segments : np.ndarray [shape=(m, 2), dtype=float64]
            Relative to ``audio[0]``.
        offset_s : float
            Where ``audio[0]`` lies in the track, for a block of a long file.

        Returns
        -------
        dict[str, np.ndarray [shape=(m, size), dtype=float32]]
        """
        return stages.embed(self, audio, sr, segments, offset_s)


@dataclasses.dataclass(frozen=True)
class OpenL3Preparer:
    """OpenL3's CPU stage: resampy 0.2 to 48 kHz, the windows some segment needs, and their spectrograms."""

    key: str
    input_repr: str
    hop_s: float

    def spectrograms(self, audio48: np.ndarray, indices: np.ndarray, first: int = 0) -> Iterator[stages.Part]:
        """The spectrograms of windows ``indices`` (see :func:`frame_windows`), :data:`BATCH_WINDOWS` at a time.

        Yields
        ------
        np.ndarray [shape=(k, 1, F, T), dtype=float32], None
        """
        for start in range(0, len(indices), BATCH_WINDOWS):
            windows = frame_windows(audio48, indices[start : start + BATCH_WINDOWS], self.hop_s, first)
            yield frontend(windows, self.input_repr), None

    def __call__(self, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0) -> stages.Prepared:
        segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2) + offset_s
        audio48, first = resample(audio, sr, int(round(offset_s * sr)))
        n_windows = window_count(first + len(audio48), self.hop_s)
        centres = np.arange(n_windows) * self.hop_s
        lo = np.searchsorted(centres, segments[:, 0], side="left")
        hi = np.searchsorted(centres, segments[:, 1], side="left")
        empty = hi <= lo
        nearest = np.clip(np.rint(segments.mean(axis=1) / self.hop_s), 0, n_windows - 1).astype(np.int64)
        needed = np.unique(np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)] + [nearest[empty]]))
        plan = (centres[needed], segments, empty, np.searchsorted(needed, nearest[empty]))
        return stages.Prepared(len(needed), self.spectrograms(audio48, needed, first), plan)

    def finish(self, plan, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each segment's row: the mean of its windows, else its nearest window."""
        centres, segments, empty, nearest = plan
        values = outputs["embedding"]
        means, _ = mean_by_segment(centres, values, segments)
        means[empty] = values[nearest]
        return {self.key: means}


def load(entry: ModelEntry, device: str = "cpu") -> OpenL3:
    """Load an OpenL3 catalogue entry, fetching its weight file on first use.

    Raises
    ------
    ModelUnavailable
        If the weights are not here and cannot be downloaded.
    ModelError
        If the weight file is broken or not an OpenL3 audio network.
    """
    path = fetch_weights(entry.params["input_repr"], entry.params["content_type"])
    return OpenL3(entry, read_weights(path), sha256_file(path), device, path)
