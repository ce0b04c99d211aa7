"""Audio input: decoding, the mono mix, the shared segment grid, and a default resampler.

Everything a model sees passes through here, so the rules that decide which
audio a segment holds live in one place:

* Decoding is libsndfile's (via ``soundfile``): WAV (PCM 8/16/24/32-bit,
  float, A-law, mu-law, MP3 inside a WAV container), FLAC, OGG/Vorbis/Opus,
  AIFF and MP3, 1 to 8 channels, any sample rate.
* The mono mix is the mean over channels, at the file's own rate.  Resampling
  is left to each model adapter because faithful ports need their original's
  resampler; :func:`resample` offers soxr (as librosa does) to the others.
* Long files are read in blocks of whole segments with context margins, so
  memory stays bounded: a 3-hour file never sits in memory at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

#: File name endings that folder imports pick up.  A file given explicitly is
#: always tried, whatever its name.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64", ".caf"}
)

#: Default segment grid: 3 s windows with a 3 s hop (no overlap).
DEFAULT_WINDOW_S = 3.0
DEFAULT_HOP_S = 3.0

#: Sample rates outside this range are refused as implausible (corrupt headers).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000

#: Longest stretch decoded at once by :func:`iter_blocks` (seconds of audio).
BLOCK_S = 300.0

#: Context decoded on each side of a block, so that models whose frames
#: reach past a segment's edge see the real neighbouring audio.
CONTEXT_S = 2.0


class AudioError(Exception):
    """A file cannot be used; the message is one line naming the problem."""


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What the header says, checked for sanity."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def info(path: str | Path) -> AudioInfo:
    """Read and validate a file's header without decoding the audio.

    Raises
    ------
    AudioError
        For missing, empty, non-audio or implausible files.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError("file not found")
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        meta = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"not a readable audio file ({_first_line(exc)})") from None
    if not MIN_SAMPLE_RATE <= meta.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(f"implausible sample rate {meta.samplerate} Hz")
    if meta.channels < 1:
        raise AudioError("no audio channels")
    if meta.frames <= 0:
        raise AudioError("no audio frames")
    return AudioInfo(str(path), int(meta.samplerate), int(meta.channels), int(meta.frames), meta.format, meta.subtype)


def _first_line(exc: BaseException) -> str:
    """libsndfile's own message, without the path it repeats (the report already names the file)."""
    text = str(exc).strip().splitlines()
    line = text[-1].strip() if text else type(exc).__name__
    return re.sub(r"^Error (opening|reading) '.*?': ", "", line).strip() or line


def _read(path: str | Path, start: int, stop: int, dtype=np.float32) -> np.ndarray:
    """Frames [start, stop) as (frames, channels), with decoding errors made one-line."""
    try:
        with sf.SoundFile(str(path)) as fh:
            if start:
                fh.seek(start)
            data = fh.read(frames=stop - start, dtype=np.dtype(dtype).name, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"decoding failed ({_first_line(exc)})") from None
    wanted = stop - start
    if len(data) < 0.9 * wanted:
        # The header promised far more than the data holds: a cut-off download or copy.
        # (Compressed streams such as MP3 in WAV announce a few percent too many frames.)
        raise AudioError(f"truncated file: only {len(data)} of {wanted} frames could be decoded")
    return data


def to_mono(data: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Mean over channels, the mix every adapter receives.

    The mean is taken in float64 and then rounded once, so a float32 mix is
    the float64 one rounded (for two channels, bit for bit what a float32
    mean gives) and a float64 mix is what numpy-based originals such as
    openl3 compute.

    Parameters
    ----------
    data : np.ndarray [shape=(frames, channels)]
    dtype : np.float32 or np.float64

    Returns
    -------
    np.ndarray [shape=(frames,), dtype=dtype]
    """
    if data.ndim == 1:
        return data.astype(dtype, copy=False)
    if data.shape[1] == 1:
        return data[:, 0].astype(dtype, copy=False)
    return data.mean(axis=1, dtype=np.float64).astype(dtype, copy=False)


def _check_finite(y: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(y)
    if bad.any():
        raise AudioError(f"{int(bad.sum())} samples are NaN or infinite; re-export the file")
    return y


def load(path: str | Path, offset_s: float = 0.0, duration_s: float | None = None,
         dtype=np.float32) -> tuple[np.ndarray, int]:
    """Decode (part of) a file to mono at its own sample rate.

    Parameters
    ----------
    path : str or Path
    offset_s : float
        Start of the excerpt in seconds.
    duration_s : float or None
        Length of the excerpt; ``None`` reads to the end.
    dtype : np.float32 or np.float64
        float64 only for an adapter that asks for it (``input_dtype``).

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=dtype]
    sr : int

    Raises
    ------
    AudioError
        One line, for unreadable, truncated or non-finite audio.
    """
    meta = info(path)
    start = min(max(0, int(round(offset_s * meta.sample_rate))), meta.frames)
    stop = meta.frames if duration_s is None else min(meta.frames, start + int(round(duration_s * meta.sample_rate)))
    y = to_mono(_read(path, start, stop, dtype), dtype)
    return _check_finite(y), meta.sample_rate


def segment_grid(duration_s: float, window_s: float = DEFAULT_WINDOW_S, hop_s: float = DEFAULT_HOP_S) -> np.ndarray:
    """Cut a track into the collection's shared segment grid.

    Rules, chosen so that no audio is silently dropped and no segment is a
    sliver that no model can describe:

    * Windows of ``window_s`` start every ``hop_s`` from 0 while they fit.
    * A clip shorter than one window becomes one segment covering it all.
    * If audio remains after the last whole window, one partial window
      (starting one hop later and ending at the track's end) is kept when it
      is at least half a window long; a shorter tail is dropped.

    Parameters
    ----------
    duration_s, window_s, hop_s : float

    Returns
    -------
    np.ndarray [shape=(n, 2), dtype=float64]
        Start and end of each segment in seconds; ``n >= 1`` for any
        positive duration.
    """
    if window_s <= 0 or hop_s <= 0:
        raise ValueError("window and hop must be positive")
    if duration_s <= 0:
        return np.zeros((0, 2))
    eps = 1e-9
    if duration_s < window_s - eps:
        return np.array([[0.0, float(duration_s)]])
    n_full = int(math.floor((duration_s - window_s) / hop_s + eps)) + 1
    starts = np.arange(n_full) * hop_s
    segments = np.stack([starts, starts + window_s], axis=1)
    tail_start = n_full * hop_s
    uncovered = segments[-1, 1] < duration_s - eps
    if uncovered and tail_start < duration_s - eps and duration_s - tail_start >= window_s / 2 - eps:
        segments = np.vstack([segments, [[tail_start, float(duration_s)]]])
    return segments


@dataclasses.dataclass
class Block:
    """A stretch of decoded audio holding whole segments plus context.

    ``segments`` are relative to ``audio[0]``; ``index`` says which rows of
    the track's grid they are.
    """

    audio: np.ndarray
    sr: int
    offset_s: float
    segments: np.ndarray
    index: np.ndarray


def iter_blocks(
    path: str | Path,
    segments: np.ndarray,
    block_s: float = BLOCK_S,
    context_s: float = CONTEXT_S,
    meta: AudioInfo | None = None,
    dtype=np.float32,
) -> Iterator[Block]:
    """Decode a track block by block, each block covering whole segments.

    Short tracks come as one block: the whole track.  Long ones come in
    blocks of about ``block_s`` seconds of segments, each with ``context_s``
    of real audio on both sides (less at the track's ends), so memory stays
    bounded while adapters still see the audio around every segment.
    ``dtype`` is that of the mono mix (see :func:`to_mono`).

    Yields
    ------
    Block
    """
    meta = meta or info(path)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    if meta.duration_s <= block_s + 2 * context_s:
        y = _check_finite(to_mono(_read(path, 0, meta.frames, dtype), dtype))
        yield Block(y, meta.sample_rate, 0.0, segments, np.arange(len(segments)))
        return
    first = 0
    while first < len(segments):
        last = first
        while last + 1 < len(segments) and segments[last + 1, 1] - segments[first, 0] <= block_s:
            last += 1
        begin_s = max(0.0, segments[first, 0] - context_s)
        end_s = min(meta.duration_s, segments[last, 1] + context_s)
        start = int(math.floor(begin_s * meta.sample_rate))
        stop = min(meta.frames, int(math.ceil(end_s * meta.sample_rate)))
        y = _check_finite(to_mono(_read(path, start, stop, dtype), dtype))
        offset = start / meta.sample_rate
        index = np.arange(first, last + 1)
        yield Block(y, meta.sample_rate, offset, segments[index] - offset, index)
        first = last + 1


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """soxr high-quality resampling (librosa's default), for adapters with no resampler of their own.

    Returns
    -------
    np.ndarray [shape=(ceil(n * target_sr / orig_sr),), dtype=float32]
    """
    if orig_sr == target_sr:
        return np.asarray(y, dtype=np.float32)
    import librosa

    return librosa.resample(np.asarray(y, dtype=np.float32), orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")


def content_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """BLAKE2b of the file's bytes: a changed file replaces its old rows."""
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def excerpt_wav(path: str | Path, start_s: float, end_s: float | None = None) -> bytes:
    """The exact excerpt [start_s, end_s) as 16-bit WAV bytes, for a player.

    Slicing happens here rather than in ``st.audio`` because ``st.audio``
    rounds start and end times to whole seconds and normalises numpy input
    to full volume; these bytes keep the file's own channels, rate and level.
    """
    meta = info(path)
    start = min(meta.frames, max(0, int(round(start_s * meta.sample_rate))))
    stop = meta.frames if end_s is None else min(meta.frames, max(start, int(round(end_s * meta.sample_rate))))
    data = _read(path, start, stop)
    data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)
    buf = io.BytesIO()
    sf.write(buf, np.clip(data, -1.0, 1.0), meta.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def find_audio_files(paths: list[str | Path]) -> list[Path]:
    """Expand folders into their audio files (recursively, sorted); keep explicit files as given."""
    found: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            found.append(p)
    unique = dict.fromkeys(f.resolve() for f in found)
    return list(unique)
