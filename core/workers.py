"""The CPU side of extraction: decoding, the mono mix and each model's preparation, in worker processes.

Each file becomes a stream of small messages that the pipeline
(:mod:`core.extract`) consumes in its own process, where the models are:

- ``Track``: the file's header, content hash and segment grid, and the
  models still to run on it (none: it is up to date);
- ``Block``: one model's plan for one block of the file (whole segments with
  context, :func:`core.audio.iter_blocks`), and how many items will follow;
- ``Part``: some of those items, as tensors (workers hand them over in
  shared memory, and the loader copies them to pinned memory for the GPU);
- ``ModelFailed``: a model's CPU stage raised on this file;
- ``Done``: the file is through, with the CPU seconds each stage took;
- ``FileFailed``: the file cannot be used (one line, as ever).

The work runs in :class:`torch.utils.data.DataLoader` workers: a bounded
number of messages wait at any time (``prefetch`` per worker), parts are at
most :data:`PART_BYTES`, and each worker takes the next file when it is done
with one, so a long file holds up only its own worker.  With ``workers=0``
the same code runs in the pipeline's process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from torch.utils.data import IterableDataset

from core import audio

#: Most bytes of items in one message; a block's items come in as many parts as needed.
PART_BYTES = 32 * 2**20


@dataclasses.dataclass(frozen=True)
class Task:
    """One entry of the run, with what the store already knows of it.

    ``known_digest`` and ``missing`` describe a stored track of this path:
    if the file still has that content hash, only the models in ``missing``
    run, on the stored ``known_segments``; otherwise the file is new or
    changed and every model runs on a fresh grid.
    """

    index: int
    path: Path
    problem: str | None = None
    known_id: int | None = None
    known_digest: str | None = None
    missing: tuple[str, ...] = ()
    known_segments: np.ndarray | None = None


@dataclasses.dataclass
class Track:
    index: int
    meta: audio.AudioInfo
    digest: str
    segments: np.ndarray
    track_id: int | None
    todo: tuple[str, ...]


@dataclasses.dataclass
class Block:
    index: int
    block: int
    model: str
    n_items: int
    plan: object
    rows: np.ndarray


@dataclasses.dataclass
class Part:
    index: int
    block: int
    model: str
    offset: int
    inputs: object
    lengths: object

    def pin_memory(self) -> "Part":
        """The part with its items in page-locked memory (the loader's pinning thread calls this)."""
        return dataclasses.replace(self, inputs=self.inputs.pin_memory())


@dataclasses.dataclass
class ModelFailed:
    index: int
    model: str
    message: str


@dataclasses.dataclass
class Done:
    index: int
    seconds: dict


@dataclasses.dataclass
class FileFailed:
    index: int
    message: str


#: Most vector values (segments × the dimensions of every space) one track may
#: hold in memory before it is written: 1 GiB as float32, e.g. 43,690 segments
#: of a 6,144-D OpenL3 space, or 2.1 million segments of the 128-D baseline.
MAX_TRACK_VALUES = 2**28


def reason(exc: BaseException) -> str:
    """One line saying why a file (or one model on it) failed."""
    from core.errors import ModelError

    if isinstance(exc, (audio.AudioError, ModelError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read file ({exc.strerror or exc})"
    if isinstance(exc, MemoryError):
        return f"not enough memory for this file ({str(exc).splitlines()[0] if str(exc) else 'MemoryError'})"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def new_grid(meta: audio.AudioInfo, window_s: float, hop_s: float, dims: int) -> np.ndarray:
    """A new track's segments, refused (one file's failure) when its vectors would not fit :data:`MAX_TRACK_VALUES`.

    ``dims`` is the sum of the dimensions of every space the track gets.
    """
    n = audio.segment_count(meta.duration_s, window_s, hop_s)
    if n * dims > MAX_TRACK_VALUES:
        raise audio.AudioError(f"the grid cuts its {meta.duration_s:,.0f} s into {n:,} segments, {n * dims:,} vector "
                               f"values in all, more than {MAX_TRACK_VALUES:,} per file; use a longer --hop")
    return audio.segment_grid(meta.duration_s, window_s, hop_s)


class Feed(IterableDataset):
    """The messages of every task, files taken in turn by whichever worker is free (an iterable dataset).

    Parameters
    ----------
    tasks : list of Task
    adapters : list
        Staged adapters; only their CPU stage (``preparer``) and entry are used.
    window_s, hop_s : float
        The grid of new tracks.
    max_samples : int
        Each file's decoding budget (:func:`core.audio.info`).
    dims : dict of str to int, optional
        Vector values per segment each model stores, for a new grid's budget
        (:func:`new_grid`); the sum of each entry's spaces by default.
    """

    def __init__(self, tasks: list[Task], adapters: list, window_s: float, hop_s: float,
                 max_samples: int = audio.DEFAULT_MAX_SAMPLES, dims: dict[str, int] | None = None):
        self.tasks = tasks
        self.preparers = {a.entry.key: a.preparer for a in adapters}
        self.dtypes = {a.entry.key: np.dtype(a.entry.input_dtype) for a in adapters}
        # Values per segment each model stores (the run's spaces; every space of the entry by default).
        self.dims = dims or {a.entry.key: sum(a.entry.spaces.values()) for a in adapters}
        self.window_s, self.hop_s = window_s, hop_s
        self.max_samples = max_samples
        self.claimed = multiprocessing.get_context().Value("q", 0)

    def _claim(self) -> int:
        with self.claimed.get_lock():
            taken = self.claimed.value
            self.claimed.value += 1
        return taken

    def __iter__(self) -> Iterator:
        while (taken := self._claim()) < len(self.tasks):
            yield from self.messages(self.tasks[taken])

    def messages(self, task: Task) -> Iterator:
        """The messages of one file: ``Track``, then blocks and parts, then ``Done``; or ``FileFailed``.

        ``Done`` carries the CPU seconds of this thread in each stage
        (``decode``, ``prepare:KEY``), not counting the time the consumer
        spends between messages.
        """
        clock = _Clock()
        try:
            with clock("decode"):
                if task.problem:
                    raise audio.AudioError(task.problem)
                meta = audio.info(task.path, max_samples=self.max_samples)
                digest = audio.content_hash(task.path)
                if task.known_id is not None and digest == task.known_digest:
                    track = Track(task.index, meta, digest, task.known_segments, task.known_id, task.missing)
                else:
                    grid = new_grid(meta, self.window_s, self.hop_s, sum(self.dims.values()))
                    track = Track(task.index, meta, digest, grid, None, tuple(self.preparers))
            yield track
            failed: set[str] = set()
            widest = np.float64 if any(self.dtypes[key] == np.float64 for key in track.todo) else np.float32
            blocks = iter(audio.iter_blocks(task.path, track.segments, meta=meta, dtype=widest) if track.todo else ())
            number = 0
            while (block := clock.next("decode", blocks)) is not None:
                mixes = {np.dtype(widest): block.audio}
                for key in track.todo:
                    if key in failed:
                        continue
                    try:
                        with clock(f"prepare:{key}"):
                            if self.dtypes[key] not in mixes:  # cast once per block, not once per model
                                mixes[self.dtypes[key]] = block.audio.astype(self.dtypes[key])
                            prepared = self.preparers[key](mixes[self.dtypes[key]], block.sr, block.segments,
                                                           block.offset_s)
                        yield Block(task.index, number, key, prepared.n_items, prepared.plan, block.index)
                        yield from self._parts(task.index, number, key, prepared, clock)
                    except Exception as exc:  # one model failing on one file must not stop the others
                        failed.add(key)
                        yield ModelFailed(task.index, key, reason(exc))
                number += 1
            yield Done(task.index, clock.seconds)
        except Exception as exc:  # whatever one file raises is that file's failure
            yield FileFailed(task.index, reason(exc))

    def _parts(self, index: int, number: int, key: str, prepared, clock: "_Clock") -> Iterator[Part]:
        """A block's items in parts of at most :data:`PART_BYTES`."""
        import torch

        parts = iter(prepared.parts)
        offset = 0
        while (part := clock.next(f"prepare:{key}", parts)) is not None:
            inputs, lengths = part
            step = max(1, PART_BYTES // max(1, inputs[:1].nbytes))
            for start in range(0, len(inputs), step):
                piece = slice(start, start + step)
                yield Part(index, number, key, offset + start, torch.from_numpy(np.ascontiguousarray(inputs[piece])),
                           None if lengths is None else torch.from_numpy(np.ascontiguousarray(lengths[piece])))
            offset += len(inputs)


class _Clock:
    """CPU seconds of this thread per stage, measured around calls and never across a ``yield``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.thread_time()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.thread_time() - t0

    def next(self, stage: str, iterator: Iterator):
        """``next(iterator)`` timed as ``stage``; None at its end."""
        with self(stage):
            return next(iterator, None)


def _as_is(message):
    return message


def loader(feed: Feed, workers: int, pin_memory: bool, prefetch: int = 4):
    """The messages of a feed, prepared by ``workers`` processes (0: in this one), in the order they are ready.

    Parameters
    ----------
    feed : Feed
    workers : int
    pin_memory : bool
        Copy each part to page-locked memory, so that it reaches a GPU by DMA
        while the GPU computes.
    prefetch : int
        Messages each worker may have waiting; bounds memory.
    """
    from torch.utils.data import DataLoader

    options = dict(num_workers=workers, prefetch_factor=prefetch, in_order=False) if workers else {}
    return DataLoader(feed, batch_size=None, collate_fn=_as_is, pin_memory=pin_memory, **options)


@contextlib.contextmanager
def deaths_raised_by_next():
    """While inside, a dead worker is reported by the loader's ``next`` only, never in the middle of other code.

    torch's loader installs a SIGCHLD handler in the main thread that raises
    its "worker exited" error wherever the main thread happens to be: inside
    the hand-over of a finished track to the writer, that lost the track
    (neither stored nor failed).  Without the handler the loader notices the
    dead worker itself, within seconds, in ``next``: as it always does in a
    thread that is not the main one, such as a Streamlit script's.
    """
    if not hasattr(signal, "SIGCHLD") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous if previous is not None else signal.SIG_DFL)
