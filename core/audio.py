"""Audio input: decoding, the mono mix, the shared segment grid, and a default resampler.

Everything a model sees passes through here, so the rules that decide which
audio a segment holds live in one place:

* Decoding is libsndfile's (via ``soundfile``): WAV (PCM 8/16/24/32-bit,
  float, A-law, mu-law, MP3 inside a WAV container), FLAC, OGG/Vorbis/Opus,
  AIFF and MP3, 1 to 8 channels, any sample rate.
* The mono mix is the mean over channels, at the file's own rate.  Resampling
  is left to each model adapter because faithful ports need their original's
  resampler; :func:`resample` offers soxr (as librosa does) to the others.
* Memory is bounded whatever a header claims.  Each file has a budget of
  decoded sample values (frames × channels, ``max_samples``) checked before
  any decoding; uncompressed formats must hold the frames they announce;
  a stream that states no length (FLAC from a streaming encoder) is counted
  by decoding it, up to the budget.  Long files are then read front to back
  in blocks of whole segments with context margins, each block sized in
  sample values and mixed to mono chunk by chunk, so neither a 3-hour file
  nor 320 s of 384 kHz × 8-channel audio sits in memory at once.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import math
import os
import re
import stat
from pathlib import Path
from typing import Callable, Iterator

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

#: Default per-file budget in decoded sample values (seconds × rate × channels):
#: about 5.8 h of 48 kHz stereo.  A file above it is refused before decoding.
DEFAULT_MAX_SAMPLES = 2_000_000_000

#: Sample values (frames × channels) whose segments :func:`iter_blocks` decodes
#: as one block: 349 s of 48 kHz stereo, 5.5 s of 384 kHz × 8 channels.  The
#: mono block then takes at most ``BLOCK_SAMPLES / channels`` frames (64 MB as
#: float32 for a mono file), plus its context.
BLOCK_SAMPLES = 2**24

#: Most sample values (frames × channels) a player's excerpt may hold: 11.6 min of 48 kHz stereo.
EXCERPT_MAX_SAMPLES = 2**26

#: Interleaved sample values read at once before they are mixed to mono (4 MB as float32).
READ_SAMPLES = 2**20

#: What libsndfile reports as the frame count of a stream that does not state its length.
_UNKNOWN_FRAMES = 2**63 - 1

#: Bytes per sample of the encodings whose every sample has a fixed size, so that
#: the file's size bounds the frames it can hold (not FLAC: silence compresses enormously).
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                 "ULAW": 1, "ALAW": 1}

#: Context decoded on each side of a block, so that models whose frames
#: reach past a segment's edge see the real neighbouring audio.
CONTEXT_S = 2.0


class AudioError(Exception):
    """A file cannot be used; the message is one line naming the problem."""


class OverBudget(AudioError):
    """A file that would decode to more sample values than allowed, refused before decoding.

    Its own class so that a caller with a budget of its own (Search's query
    clips) can name that budget rather than ``AEB_MAX_SAMPLES``.
    """


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


def entry_problem(path: str | Path) -> str | None:
    """Why a path cannot be decoded as a file, without opening it (a FIFO would block); None if it can be tried.

    Returns
    -------
    str or None
        One line: a missing file, a broken symbolic link, a link loop, a
        folder, or something other than a regular file (FIFO, socket, device).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)" if os.path.islink(path) else "file not found"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"cannot read file ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else (
            "a socket" if stat.S_ISSOCK(st.st_mode) else "a device")
        return f"not a regular file: {kind}"
    return None


def info(path: str | Path, *, max_samples: int = DEFAULT_MAX_SAMPLES) -> AudioInfo:
    """Read and validate a file's header; decode only a stream that does not state its length.

    Parameters
    ----------
    path : str or Path
    max_samples : int > 0
        The file's budget of decoded sample values (frames × channels).  A
        file above it is refused here, before anything is decoded.

    Raises
    ------
    AudioError
        For missing, empty, non-audio, implausible or over-budget files.
    """
    problem = entry_problem(path)
    if problem:
        raise AudioError(problem)
    size = os.path.getsize(path)
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        meta = sf.info(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"not a readable audio file ({_first_line(exc)})") from None
    if not MIN_SAMPLE_RATE <= meta.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(f"implausible sample rate {meta.samplerate} Hz")
    if meta.channels < 1:
        raise AudioError("no audio channels")
    frames = meta.frames
    if frames == _UNKNOWN_FRAMES:
        frames = _count_frames(path, meta.channels, max_samples)
    elif meta.format != "FLAC" and meta.subtype in _SAMPLE_BYTES:
        if frames * meta.channels * _SAMPLE_BYTES[meta.subtype] > size:
            raise AudioError(f"the header claims {frames:,} frames, more than the file's {size:,} bytes can hold")
    if frames <= 0:
        raise AudioError("no audio frames")
    _check_budget(frames, meta.channels, meta.samplerate, max_samples)
    return AudioInfo(str(path), int(meta.samplerate), int(meta.channels), int(frames), meta.format, meta.subtype)


def _check_budget(frames: int, channels: int, sample_rate: int, max_samples: int) -> None:
    if frames * channels > max_samples:
        raise OverBudget(
            f"{frames * channels:,} sample values ({frames / sample_rate:,.0f} s × {sample_rate} Hz × "
            f"{channels} channels) exceed the limit of {max_samples:,} per file (--max-samples, AEB_MAX_SAMPLES)")


def _count_frames(path: str | Path, channels: int, max_samples: int) -> int:
    """Frames of a stream whose header gives no length, decoded front to back and stopped past the budget."""
    chunk = max(1, READ_SAMPLES // channels)
    buf = np.empty((chunk, channels), np.float32)
    frames = 0
    with _open(path) as fh:
        while True:
            got = len(_read_into(fh, buf))
            frames += got
            if frames * channels > max_samples:
                raise OverBudget(f"its header states no length and it decodes to more than the limit of "
                                 f"{max_samples:,} sample values per file (--max-samples, AEB_MAX_SAMPLES)")
            if got < chunk:
                return frames


def _first_line(exc: BaseException) -> str:
    """libsndfile's own message, without the path it repeats (the report already names the file)."""
    text = str(exc).strip().splitlines()
    line = text[-1].strip() if text else type(exc).__name__
    return re.sub(r"""^Error (opening|reading) b?(['"]).*?\2: """, "", line).strip() or line


class _Stream(sf.SoundFile):
    """A SoundFile read front to back.

    soundfile seeks back to its own count of the position after every read,
    and libsndfile cannot seek to the very end of a FLAC stream whose header
    states no length; reading as a stream avoids both.  Explicit seeks
    (skipping audio between blocks) still work.
    """

    def seekable(self) -> bool:
        return False


def _open(path: str | Path) -> _Stream:
    try:
        return _Stream(os.fsencode(path))  # bytes: names that are not UTF-8 open too
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"not a readable audio file ({_first_line(exc)})") from None


def _read_into(fh: _Stream, out: np.ndarray) -> np.ndarray:
    """Up to ``len(out)`` frames into ``out``; fewer only at the end of the stream."""
    try:
        return fh.read(len(out), dtype=out.dtype.name, always_2d=True, out=out)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"decoding failed ({_first_line(exc)})") from None


def _seek(fh: _Stream, frame: int) -> None:
    try:
        fh.seek(frame)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"decoding failed ({_first_line(exc)})") from None


def _decode_mono(fh: _Stream, frames: int, channels: int, dtype) -> np.ndarray:
    """The next ``frames`` frames as the mono mix, read in chunks of at most READ_SAMPLES values.

    The mix of each chunk is exactly that of the whole (:func:`to_mono` works
    row by row), so chunking changes memory, never values.

    Raises
    ------
    AudioError
        When the stream ends well before the frames its header promised.
    """
    dtype = np.dtype(dtype)
    mono = np.empty(frames, dtype)
    chunk = max(1, READ_SAMPLES // channels)
    buf = np.empty((min(chunk, frames), channels), dtype)
    done = 0
    while done < frames:
        want = min(chunk, frames - done)
        data = _read_into(fh, buf[:want])
        mono[done : done + len(data)] = to_mono(data, dtype)
        done += len(data)
        if len(data) < want:
            break
    if done < 0.9 * frames:
        # The header promised far more than the data holds: a cut-off download or copy.
        # (Compressed streams such as MP3 in WAV announce a few percent too many frames.)
        raise AudioError(f"truncated file: only {done} of {frames} frames could be decoded")
    return mono[:done]


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
    if data.shape[1] == 2 and data.dtype == np.float32 and np.dtype(dtype) == np.float32:
        # The same numbers, 30 times faster than through float64: a + b rounded once and halved is (a + b) / 2
        # rounded once, and rounding the float64 mean to float32 rounds once too (float64 has more than twice
        # float32's precision).  Halving is exact except below the normal range, redone there.
        mix = (data[:, 0] + data[:, 1]) * np.float32(0.5)
        low = (mix != 0) & (np.abs(mix) < np.finfo(np.float32).tiny)
        if low.any():
            mix[low] = data[low].mean(axis=1, dtype=np.float64).astype(np.float32)
        return mix
    return data.mean(axis=1, dtype=np.float64).astype(dtype, copy=False)


def _check_finite(y: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(y)
    if bad.any():
        raise AudioError(f"{int(bad.sum())} samples are NaN or infinite; re-export the file")
    return y


def load(path: str | Path, offset_s: float = 0.0, duration_s: float | None = None,
         dtype=np.float32, *, max_samples: int = DEFAULT_MAX_SAMPLES) -> tuple[np.ndarray, int]:
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
    max_samples : int > 0
        The whole file's budget of sample values (frames × channels); a
        caller taking files from strangers (a query clip) passes a small one.

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=dtype]
    sr : int

    Raises
    ------
    AudioError
        One line, for unreadable, truncated, non-finite or over-budget audio.
    """
    meta = info(path, max_samples=max_samples)
    start = min(max(0, int(round(offset_s * meta.sample_rate))), meta.frames)
    stop = meta.frames if duration_s is None else min(meta.frames, start + int(round(duration_s * meta.sample_rate)))
    with _open(path) as fh:
        if start:
            _seek(fh, start)
        y = _decode_mono(fh, stop - start, meta.channels, dtype)
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
    n_full, tail = _grid_shape(duration_s, window_s, hop_s)
    if n_full == 0:
        return np.array([[0.0, float(duration_s)]]) if tail else np.zeros((0, 2))
    starts = np.arange(n_full) * hop_s
    segments = np.stack([starts, starts + window_s], axis=1)
    if tail:
        segments = np.vstack([segments, [[n_full * hop_s, float(duration_s)]]])
    return segments


def segment_count(duration_s: float, window_s: float = DEFAULT_WINDOW_S, hop_s: float = DEFAULT_HOP_S) -> int:
    """``len(segment_grid(duration_s, window_s, hop_s))``, without building the grid (which may be huge)."""
    n_full, tail = _grid_shape(duration_s, window_s, hop_s)
    return n_full + int(tail)


def _grid_shape(duration_s: float, window_s: float, hop_s: float) -> tuple[int, bool]:
    """Whole windows of the grid, and whether one more (partial, or the whole short clip) is kept."""
    if window_s <= 0 or hop_s <= 0:
        raise ValueError("window and hop must be positive")
    if duration_s <= 0:
        return 0, False
    eps = 1e-9
    if duration_s < window_s - eps:
        return 0, True
    n_full = int(math.floor((duration_s - window_s) / hop_s + eps)) + 1
    tail_start = n_full * hop_s
    uncovered = (n_full - 1) * hop_s + window_s < duration_s - eps
    return n_full, bool(uncovered and tail_start < duration_s - eps and duration_s - tail_start >= window_s / 2 - eps)


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
    block_samples: int = BLOCK_SAMPLES,
    context_s: float = CONTEXT_S,
    meta: AudioInfo | None = None,
    dtype=np.float32,
    *,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> Iterator[Block]:
    """Decode a track front to back, block by block, each block covering whole segments.

    ``segments`` are sorted by start, as every grid is.  A track whose
    ``frames × channels`` fit in ``block_samples`` (plus context) comes as
    one block: the whole track.  A longer one comes in
    blocks whose segments span at most ``block_samples / channels`` frames
    (always at least one segment), each with ``context_s`` of real audio on
    both sides (less at the track's ends), so memory stays bounded while
    adapters still see the audio around every segment.  The context shared
    by neighbouring blocks is decoded once, and the file is read as one
    stream, which works for streams that cannot seek.  ``dtype`` is that of
    the mono mix (see :func:`to_mono`).

    Parameters
    ----------
    max_samples : int > 0
        The file's budget (see :func:`info`), used when ``meta`` is not given.

    Yields
    ------
    Block
    """
    meta = meta or info(path, max_samples=max_samples)
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    sr, frames = meta.sample_rate, meta.frames
    span = max(1, block_samples // meta.channels)
    context = int(math.ceil(context_s * sr))
    with _open(path) as fh:
        if frames <= span + 2 * context:
            y = _check_finite(_decode_mono(fh, frames, meta.channels, dtype))
            yield Block(y, sr, 0.0, segments, np.arange(len(segments)))
            return
        kept, kept_start, position = np.zeros(0, dtype), 0, 0  # decoded audio [kept_start, position)
        first = 0
        while first < len(segments):
            last = first
            while last + 1 < len(segments) and (segments[last + 1, 1] - segments[first, 0]) * sr <= span:
                last += 1
            start = int(math.floor(max(0.0, segments[first, 0] - context_s) * sr))
            stop = min(frames, int(math.ceil(min(meta.duration_s, segments[last, 1] + context_s) * sr)))
            if start >= position:
                if start > position:
                    _seek(fh, start)
                head, position = kept[:0], start
            else:
                head = kept[start - kept_start:]
            tail = _decode_mono(fh, stop - position, meta.channels, dtype)
            y = _check_finite(np.concatenate([head, tail]))
            kept, kept_start, position = y, start, position + len(tail)
            offset = start / sr
            index = np.arange(first, last + 1)
            yield Block(y, sr, offset, segments[index] - offset, index)
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


def excerpt_wav(path: str | Path, start_s: float, end_s: float | None = None, *,
                max_samples: int = EXCERPT_MAX_SAMPLES) -> bytes:
    """The exact excerpt [start_s, end_s) as 16-bit WAV bytes, for a player.

    Slicing happens here rather than in ``st.audio`` because ``st.audio``
    rounds start and end times to whole seconds and normalises numpy input
    to full volume; these bytes keep the file's own channels, rate and level.

    Parameters
    ----------
    max_samples : int > 0
        The excerpt's budget of sample values (frames × channels); a longer
        excerpt is refused, since the player holds it in memory twice.
    """
    meta = info(path)
    start = min(meta.frames, max(0, int(round(start_s * meta.sample_rate))))
    stop = meta.frames if end_s is None else min(meta.frames, max(start, int(round(end_s * meta.sample_rate))))
    if (stop - start) * meta.channels > max_samples:
        raise AudioError(f"the excerpt is {(stop - start) / meta.sample_rate:,.0f} s of {meta.channels}-channel audio, "
                         f"longer than a player takes ({max_samples:,} sample values)")
    with _open(path) as fh:
        if start:
            _seek(fh, start)
        data = _read_into(fh, np.empty((stop - start, meta.channels), np.float32))
    data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)
    buf = io.BytesIO()
    sf.write(buf, np.clip(data, -1.0, 1.0), meta.sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def find_audio_files(paths: list[str | Path], inside: Callable[[Path], bool] | None = None
                     ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every entry the user points at: audio files to decode, and those that cannot be tried, with the reason.

    Folders are walked recursively, each real folder once (a link back to a
    folder already walked adds nothing, so a walk never loops), and nothing
    is opened, so a FIFO never blocks it.  In a folder, entries are the
    non-folders whose name has an audio extension: files, links to files,
    broken links, link loops, FIFOs.  A path given explicitly is always an
    entry, whatever its name.  Names that are not UTF-8 are kept as Python
    decodes them (``surrogateescape``), and open like any other.

    ``inside(resolved)``, where given (a shared app's root check), is asked
    about every file and folder once links and ``..`` are resolved: a link
    that leads out is a problem, named by its own path, and never followed.

    Returns
    -------
    files : list of Path
        Resolved (absolute, links followed), each real file once, folders'
        entries sorted by name.
    problems : list of (Path, str)
        Absolute paths of entries that cannot be read, with a one-line reason
        (see :func:`entry_problem`), and of folders that cannot be listed.
    """
    files: dict[Path, None] = {}
    problems: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()

    def entry(p: Path) -> None:
        problem = entry_problem(p)
        if not problem and inside is not None and not inside(p.resolve()):
            problem = "outside the allowed folder"
        if problem:
            problems.append((Path(os.path.abspath(p)), problem))
        else:
            files[p.resolve()] = None

    def walk(folder: Path) -> None:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append((Path(os.path.abspath(folder)), f"cannot list folder ({exc.strerror or exc})"))
            return
        for child in children:
            if os.path.isdir(child.path):  # follows links; False for broken links and loops
                if inside is not None and not inside(Path(child.path).resolve()):
                    problems.append((Path(os.path.abspath(child.path)), "a link to a folder outside the allowed folder"))
                else:
                    walk(Path(child.path))
            elif Path(child.name).suffix.lower() in AUDIO_EXTENSIONS:
                entry(Path(child.path))

    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            walk(p)
        else:
            entry(p)
    return list(files), problems
