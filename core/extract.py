"""The extraction pipeline shared by the command line and the app.

files ──workers: decode, mix, resample, cut items──▶ batches of many tracks on the device ──▶ writer thread ──▶ store
                 (core.workers)                       (core.batcher)                         (one transaction per batch of tracks)

Every model runs in the stages of :mod:`core.models.stages`.  The CPU stage
(decoding, the mono mix, each model's own resampler and cutting) runs in
``workers`` processes, or in this one with ``workers=0`` (the default, and
the right choice on a small CPU machine); items of many tracks fill each
batch on the model's device; finished tracks go to a writer thread, so a
GPU never waits on DuckDB.  Memory stays bounded: long files come in blocks
of whole segments, each worker has a few messages in flight, and a track's
vectors are held only until its last block is back.

It is built to be interrupted: finished tracks are written in small batches,
each one transaction, and a later run skips every (track, space) pair that is
already stored with the same content hash and provenance.  Resuming is per
space: a model whose layers are added later (``--layers all`` after
``--layers 6``) runs once more on each track and stores only the spaces the
track lacks.  A model whose provenance changed is re-extracted into a staging
table and swapped in only when the run has gone through every file, so an
interrupted re-extraction leaves the old vectors in use.  bfloat16 vectors
have a provenance of their own (:mod:`core.models.precision`).

Every entry the user points at ends as a track or a failure: one file's
exception (unreadable, undecodable, over the decode budget, out of memory,
an adapter's bad output) is that file's one-line failure, per model, and the
batch goes on.  A worker process that dies (killed, out of memory) fails
the files it had in hand, and new workers take the rest.  Only an
interruption by the user, or a store that cannot be written, stops the run.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from core import audio
from core.batcher import Batcher
from core.errors import BadInput
from core.models import precision as precisions
from core.models.base import (
    Adapter,
    ModelEntry,
    ModelError,
    canonical_key,
    get_entry,
    load_model,
    spaces_to_fill,
    split_key,
    stored_name,
)
from core.paths import display
from core.store import DEFAULT_DB, Provenance, Store, TrackRecord, check_grid
from core.workers import (
    Block, Done, Feed, FileFailed, ModelFailed, Part, Task, Track, deaths_raised_by_next, loader, reason,
)

#: progress(done, total, path) is called after each file.
ProgressFn = Callable[[int, int, str], None]


@dataclasses.dataclass
class Failure:
    path: str
    model: str
    message: str


@dataclasses.dataclass
class ExtractReport:
    """What a run did, for the CLI summary, the app and the benchmarks.

    ``files`` counts every entry found (folders' audio files, broken links,
    FIFOs, explicit paths); each is stored, already up to date, or among
    ``failed_paths`` (or both stored and failed, when only some models failed).
    ``metadata_matched`` of ``metadata_rows`` CSV rows name one of them.
    ``write_waits`` says how long the run's writes waited for the file
    (``writes``, ``total_s``, ``max_s``): other processes reading or writing.
    ``precisions`` says what each model's network ran in, ``workers`` how
    many processes did the CPU stage, and ``timings`` where the time went:
    CPU seconds of the CPU stage (``decode``, ``prepare:KEY``, summed over
    workers), and seconds of this process launching and waiting on each
    model's batches (``device:KEY``), pooling (``finish``), waiting for the
    workers (``wait``), and of the writer thread (``store``).
    """

    files: int = 0
    stored: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    seconds: float = 0.0
    failures: list[Failure] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    replaced_spaces: list[str] = dataclasses.field(default_factory=list)
    metadata_rows: int = 0
    metadata_matched: int = 0
    write_waits: dict[str, float] = dataclasses.field(default_factory=dict)
    precisions: dict[str, str] = dataclasses.field(default_factory=dict)
    workers: int = 0

    @property
    def failed_paths(self) -> list[str]:
        return sorted({f.path for f in self.failures})

    def _add_time(self, what: str, seconds: float) -> None:
        self.timings[what] = self.timings.get(what, 0.0) + seconds


def read_metadata_csv(csv_path: str | Path, roots: list[str | Path]) -> dict[str, dict]:
    """Per-track metadata from a CSV with a ``path`` column.

    Relative paths are joined to the first given folder where the file
    exists (else to the CSV's own folder).  A column becomes numbers when
    every non-empty value parses as one, otherwise it stays text, so that
    colour scales and filters treat it the right way.

    Returns
    -------
    dict
        Absolute path -> {column: value}; empty cells are left out.

    Raises
    ------
    BadInput
        One line, for a CSV that is missing, unreadable, not text, or has no
        ``path`` column.
    """
    name = Path(csv_path).name
    if Path(csv_path).is_dir():
        raise BadInput(f"Metadata CSV {csv_path} is a folder; name the CSV file in it.")
    if not Path(csv_path).is_file():
        raise BadInput(f"Metadata CSV {csv_path}: no such file, so it cannot be read; check the path or leave it out.")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:  # permissions, not UTF-8, empty, malformed
        raise BadInput(f"Metadata CSV {name} cannot be read ({str(exc).strip().splitlines()[0]}); "
                       "give a UTF-8 CSV with a 'path' column.") from None
    if "path" not in df.columns:
        raise BadInput(f"Metadata CSV {name} has no 'path' column (columns: {', '.join(df.columns) or 'none'}); "
                       "name the column of file paths 'path'.")
    columns: dict[str, list] = {}
    for col in df.columns.drop("path"):
        values = df[col].str.strip()
        filled = values[values != ""]
        numbers = pd.to_numeric(filled, errors="coerce")
        if len(filled) and numbers.notna().all():
            if (numbers == numbers.round()).all() and numbers.abs().max() < 2**53:
                numbers = numbers.astype("int64")
            parsed = pd.Series([None] * len(values), dtype=object)
            parsed[filled.index] = numbers.tolist()
            columns[col] = parsed.tolist()
        else:
            columns[col] = [v if v != "" else None for v in values]
    folders = [Path(r).expanduser().resolve() for r in roots if Path(r).is_dir()] + [Path(csv_path).resolve().parent]
    out: dict[str, dict] = {}
    for i, rel in enumerate(df["path"]):
        candidates = [Path(rel)] if Path(rel).is_absolute() else [f / rel for f in folders]
        target = next((c for c in candidates if c.exists()), candidates[0])
        out[str(target.resolve())] = {c: v[i] for c, v in columns.items() if v[i] is not None}
    return out


def requested_outputs(keys: list[str]) -> dict[str, list[str]]:
    """Model key -> the outputs the space keys name, models in the order given.

    ``musicnn-msd/taggram`` runs ``musicnn-msd``; ``mert-v1-95m/l6`` runs
    ``mert-v1-95m`` and asks it for ``l6`` as well.
    """
    asked: dict[str, list[str]] = {}
    for key in keys:
        model, output = split_key(canonical_key(key))
        asked.setdefault(model, [])
        if output:
            asked[model].append(output)
    return asked


def provenances(adapter: Adapter, precision: str = "fp32", spaces: dict[str, int] | None = None,
                names: dict[str, str] | None = None) -> list[Provenance]:
    """One provenance per space the run stores (all the adapter's by default), under the name the store knows it by."""
    spaces = adapter.entry.spaces if spaces is None else spaces
    names = {space: space for space in spaces} if names is None else names
    entry = adapter.entry
    return [
        Provenance(names[space], entry.key, dim, precisions.version(adapter.version, precision), adapter.weights_sha256,
                   tag_names=tuple(adapter.tag_names[space]) if space in adapter.tag_names else None)
        for space, dim in spaces.items()
    ]


def mix_dtype(entries: list[ModelEntry]) -> type:
    """The dtype a track is decoded to for these models: float64 when any asks for it, cast down once per block."""
    return np.float64 if any(np.dtype(e.input_dtype) == np.float64 for e in entries) else np.float32


def embed_blocks(blocks: Iterable[audio.Block], n_segments: int, adapters: list[Adapter],
                 add_time: Callable[[str, float], None]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Run every adapter over a track's blocks: the one embedding path of every engine.

    Parameters
    ----------
    blocks : iterable of core.audio.Block
        The track's blocks in order, mixed to :func:`mix_dtype` of ``adapters``
        (or wider); each adapter gets them cast to its own input dtype.
    n_segments : int
        Rows of the track's grid.
    add_time : callable
        ``add_time(what, seconds)`` for ``decode`` and ``model:KEY``.

    Returns
    -------
    vectors : dict
        Space key -> float32[n_segments, dim].
    errors : dict
        Model key -> one line, for each adapter that failed on this track
        (a bad shape, non-finite values, or anything it raised); its vectors
        are then to be ignored.  A decoding error is raised, not returned:
        it is the whole file's.
    """
    vectors = {space: np.zeros((n_segments, dim), np.float32)
               for a in adapters for space, dim in a.entry.spaces.items()}
    errors: dict[str, str] = {}
    wanted = {a.entry.key: np.dtype(a.entry.input_dtype) for a in adapters}
    t0 = time.perf_counter()
    for block in blocks:
        mixes = {block.audio.dtype: block.audio}
        add_time("decode", time.perf_counter() - t0)
        for adapter in adapters:
            key = adapter.entry.key
            if key in errors:
                continue
            t1 = time.perf_counter()
            try:
                if wanted[key] not in mixes:  # cast once per block, not once per adapter
                    mixes[wanted[key]] = block.audio.astype(wanted[key])
                out = adapter.embed(mixes[wanted[key]], block.sr, block.segments, block.offset_s)
                for space, dim in adapter.entry.spaces.items():
                    rows = np.asarray(out[space], dtype=np.float32)
                    if rows.shape != (len(block.index), dim):
                        raise ModelError(f"returned shape {rows.shape}, expected {(len(block.index), dim)}")
                    if not np.isfinite(rows).all():
                        raise ModelError("produced non-finite values")
                    vectors[space][block.index] = rows
            except Exception as exc:  # one model failing on one file must not stop the batch
                errors[key] = str(exc) if isinstance(exc, ModelError) else reason(exc)
            add_time(f"model:{key}", time.perf_counter() - t1)
        t0 = time.perf_counter()
    return vectors, errors


def extract(
    paths: list[str | Path],
    models: list[str],
    db: str | Path = DEFAULT_DB,
    window_s: float = audio.DEFAULT_WINDOW_S,
    hop_s: float = audio.DEFAULT_HOP_S,
    metadata: dict[str, dict] | None = None,
    progress: ProgressFn | None = None,
    device: str | None = None,
    adapters: list[Adapter] | None = None,
    batch_tracks: int = 32,
    batch_seconds: float = 5.0,
    max_samples: int = audio.DEFAULT_MAX_SAMPLES,
    workers: int = 0,
    batch_size: int | None = None,
    precision: str = "fp32",
    inside: Callable[[Path], bool] | None = None,
    layers: tuple[int, ...] | str | None = None,
) -> ExtractReport:
    """Embed files (and the audio files inside folders) with models into a store.

    Parameters
    ----------
    paths : list of str or Path
        Files and folders; folders are searched recursively for audio.
    models : list of str
        Model keys.  Space keys are accepted and run their model; a layer
        space (``mert-v1-95m/l6``, or its legacy spelling ``mert-v1-95m-l6``)
        also stores that layer.
    db : path
        The DuckDB file.
    window_s, hop_s : float
        The segment grid; must match the store's if it has one.
    metadata : dict, optional
        Absolute path -> {column: value}, e.g. from :func:`read_metadata_csv`.
    progress : callable, optional
        ``progress(done, total, name)`` after each entry, ``name`` being a
        printable line (:func:`core.paths.display`).
    device : str, optional
        Where the models run (``"cpu"``, ``"cuda"``, ``"cuda:1"``); the
        default is a GPU when there is one.  Ignored for ``adapters``, which
        are already on theirs.
    adapters : list, optional
        Already loaded adapters (the app keeps them cached); else loaded here.
    batch_tracks, batch_seconds : int, float
        A write transaction is made after this many tracks or seconds,
        whichever comes first: the most work an interruption can lose.
    max_samples : int > 0
        Each file's budget of decoded sample values (frames × channels); a
        file above it is a failure, found before it is decoded.
    workers : int >= 0
        Processes that decode, mix, resample and prepare items (the CPU
        stage, :mod:`core.workers`); 0 does it in this process.
    batch_size : int > 0, optional
        Items per forward pass for every model; each model's own default
        (``adapter.batch_size``) otherwise.
    precision : {"fp32", "bf16"}
        The networks' arithmetic; a model whose bfloat16 vectors were not
        verified runs in float32 (:mod:`core.models.precision`), and
        ``report.precisions`` says what each ran in.
    inside : callable, optional
        A shared app's root check (:meth:`core.config.Settings.allows`): a
        file or folder that resolves outside is a failure, never read.
    layers : ``"all"``, tuple of int, or None
        Hidden states to store as well (:func:`core.models.base.parse_layers`),
        for every model that has layers; one forward pass fills them all.

    Raises
    ------
    core.errors.BadInput
        For an invalid grid, budget, worker count, batch size or precision,
        or ``layers`` given when no model has layers (nothing is written
        then).
    core.store.GridMismatch
        If the store was built on another grid.
    core.models.base.ModelError
        If a model is unknown or cannot be loaded, or lacks a layer asked
        for (nothing is done then).
    """
    started = time.perf_counter()
    report = ExtractReport()
    check_grid(window_s, hop_s)
    if not (isinstance(max_samples, int) and max_samples > 0):
        raise BadInput(f"--max-samples must be a positive whole number, not {max_samples!r}.")
    if not (isinstance(workers, int) and workers >= 0):
        raise BadInput(f"--workers must be 0 or a positive whole number, not {workers!r}.")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size > 0):
        raise BadInput(f"--batch-size must be a positive whole number, not {batch_size!r}.")
    precisions.check(precision)
    asked = requested_outputs(models)
    if adapters is None:
        for key in models:
            get_entry(key)  # unknown keys, outputs and layers fail before any weights load
        catalogued = {key: get_entry(key) for key in asked}
    else:
        catalogued = {a.entry.key: a.entry for a in adapters}
    if layers is not None and not any(e.layers for e in catalogued.values()):
        raise BadInput(f"Layers were chosen, but none of {', '.join(catalogued)} has hidden layers; "
                       "drop --layers or add a model with layers such as mert-v1-95m.")
    for key, entry in catalogued.items():
        spaces_to_fill(entry, asked.get(key, ()), layers)
    if adapters is None:
        adapters = [load_model(key, device) for key in asked]
    plan = {a.entry.key: spaces_to_fill(a.entry, asked.get(a.entry.key, ()), layers) for a in adapters}
    report.precisions = {a.entry.key: precisions.effective(a.entry, precision) for a in adapters}
    report.workers = workers
    store = Store(db)
    store.ensure_grid(window_s, hop_s)
    held = set(store.spaces()["space"])
    names = {space: stored_name(space, held) for spaces in plan.values() for space in spaces}
    for adapter in adapters:
        for prov in provenances(adapter, report.precisions[adapter.entry.key], plan[adapter.entry.key], names):
            if store.prepare_space(prov):
                report.replaced_spaces.append(prov.space)
    keys = [a.entry.key for a in adapters]
    run_id = store.start_run(keys)
    files, problems = audio.find_audio_files(paths, inside)
    entries: list[tuple[Path, str | None]] = [(f, None) for f in files] + problems
    report.files = len(entries)
    metadata = metadata or {}
    found = {str(f) for f in files}
    matched = {p: m for p, m in metadata.items() if p in found}
    report.metadata_rows, report.metadata_matched = len(metadata), len(matched)

    import torch

    tasks, known = _tasks(store, entries, adapters, plan, names)
    run = _Run(adapters, tasks, report, metadata, progress, batch_size, plan, names, known)
    writer = _Writer(store, report, batch_tracks, batch_seconds)
    try:
        if workers:
            _warm_up(adapters)  # compile and import once, before the workers are forked
        gpu = any(torch.device(a.device).type == "cuda" for a in adapters)
        todo = run.tasks
        while True:
            feed = Feed(todo, adapters, window_s, hop_s, max_samples,
                        dims={key: sum(spaces.values()) for key, spaces in plan.items()})
            lost = _consume(run, loader(feed, workers, pin_memory=gpu), writer)
            if not lost:
                break
            # A worker died (killed, out of memory): its loader is gone with the exception. The files in
            # flight fail, the writer stores what it holds, and new workers take the files not yet begun.
            writer.finish()
            todo = run.lose_files(feed, todo, WORKER_DIED)
            writer = _Writer(store, report, batch_tracks, batch_seconds)
        for batcher in run.batchers.values():
            batcher.flush()
        run.collect(wait=True)
        writer.finish()
        store.commit_staged(report.replaced_spaces)
    finally:
        writer.finish(quiet=True)
        for key, batcher in run.batchers.items():
            report._add_time(f"device:{key}", batcher.seconds)
        store.record_failures(run_id, [(f.path, f.model, f.message) for f in report.failures])
        store.set_metadata(matched)
        report.write_waits = dataclasses.asdict(store.write_wait)
        report.seconds = time.perf_counter() - started
    return report


def _tasks(store: Store, entries: list[tuple[Path, str | None]], adapters: list[Adapter],
           plan: dict[str, dict[str, int]], names: dict[str, str]) -> tuple[list[Task], dict[int, dict]]:
    """What each entry needs, from what the store holds: nothing, some spaces on stored segments, or everything.

    Resuming is per space: a stored track runs each model that lacks one of
    the spaces the run fills (``plan``), and stores only those.  Returns the
    tasks and, by task index, each stored track's model key -> the spaces it lacks.
    """
    done = {space: store.tracks_with_space(names[space]) for space in names}
    states = store.track_states()
    tasks, known_spaces = [], {}
    for index, (path, problem) in enumerate(entries):
        known = states.get(str(path))
        if problem or known is None:
            tasks.append(Task(index, path, problem))
            continue
        track_id, digest = known
        lacking = {key: missing for key in plan
                   if (missing := {s: d for s, d in plan[key].items() if track_id not in done[s]})}
        segments = store.track_segments(track_id) if lacking else np.zeros((0, 2))
        known_spaces[index] = lacking
        tasks.append(Task(index, path, None, track_id, digest, tuple(lacking), segments))
    return tasks, known_spaces


def _warm_up(adapters: list[Adapter]) -> None:
    """Run each CPU stage once on a second of silence, so forked workers inherit compiled code and imports.

    Only a saving: a CPU stage that raises here raises again on the files
    themselves, where it is each file's failure, so it must not stop the run.
    """
    for adapter in adapters:
        try:
            prepared = adapter.preparer(np.zeros(16000, dtype=adapter.entry.input_dtype), 16000,
                                        np.array([[0.0, 1.0]]))
            for _ in prepared.parts:
                pass
        except Exception:  # noqa: BLE001 - reported per file by the workers
            continue


#: The failure of each file a worker had begun when a worker process died: its own, or one whose messages were
#: still queued (a rerun takes it again).
WORKER_DIED = "a worker process died with this file in hand (killed or out of memory); run again"


def _consume(run: "_Run", messages, writer: "_Writer") -> bool:
    """Take every message of a loader; False when it ran to its end, True when one of its workers died.

    The loader forks its workers on ``iter``, before the writer thread
    starts: a process forked while another thread writes to DuckDB could
    inherit a held lock.
    """
    try:
        messages = iter(messages)  # torch installs its SIGCHLD handler here, on its first loader
        with deaths_raised_by_next():
            writer.start()
            run.writer = writer
            while True:
                t0 = time.perf_counter()
                message = next(messages, None)
                run.report._add_time("wait", time.perf_counter() - t0)
                if message is None:
                    return False
                run.take(message)
                run.collect(wait=False)
    except RuntimeError as exc:  # torch's words for a worker that exited or was killed by a signal
        if not str(exc).startswith("DataLoader worker"):
            raise
        return True


@dataclasses.dataclass
class _Ticket:
    """One model's work on one block of one track (its ``Block`` message), and its items' outputs as they come back."""

    order: Block
    outputs: dict = dataclasses.field(default_factory=dict)
    returned: int = 0


@dataclasses.dataclass
class _Entry:
    """A track on its way: its vectors, the blocks still out, and the models that failed on it."""

    task: Task
    track: Track | None = None
    vectors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    tickets: dict[tuple[int, str], _Ticket] = dataclasses.field(default_factory=dict)
    prepared: bool = False
    #: Model key -> the spaces (full key -> dimension) this track stores of it.
    spaces: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


class _Run:
    """The pipeline's own process: it assembles the messages of the workers and the outputs of the batches into tracks."""

    def __init__(self, adapters, tasks, report, metadata, progress, batch_size, plan=None, names=None, known=None):
        self.adapters = {a.entry.key: a for a in adapters}
        # The spaces each model fills on a new track, the store's name of each, and a stored track's missing ones.
        self.plan = plan if plan is not None else {key: dict(a.entry.default_spaces) for key, a in self.adapters.items()}
        self.names = names or {}
        self.known = known or {}
        self.keys = list(self.adapters)
        self.tasks, self.report, self.metadata, self.progress = tasks, report, metadata, progress
        self.batchers = {key: Batcher(a, report.precisions[key], batch_size or a.batch_size)
                         for key, a in self.adapters.items()}
        self.entries = {task.index: _Entry(task) for task in tasks}
        self.completed = 0
        self.writer: _Writer | None = None

    def take(self, message) -> None:
        """Act on one message of the CPU stage (:mod:`core.workers`)."""
        entry = self.entries.get(message.index)
        if entry is None:
            return
        if isinstance(message, Track):
            entry.track = message
            wanted = self.known.get(message.index, {}) if message.track_id is not None else self.plan
            entry.spaces = {key: wanted.get(key, self.plan[key]) for key in message.todo}
            entry.vectors = {space: np.zeros((len(message.segments), dim), np.float32)
                             for spaces in entry.spaces.values() for space, dim in spaces.items()}
        elif isinstance(message, Block):
            ticket = _Ticket(message)
            entry.tickets[message.block, message.model] = ticket
            if message.n_items == 0:
                self._finish(entry, ticket)
        elif isinstance(message, Part):
            ticket = entry.tickets.get((message.block, message.model))
            if ticket is not None:
                positions = np.arange(message.offset, message.offset + len(message.inputs))
                try:
                    self.batchers[message.model].add(ticket, positions, message.inputs, message.lengths)
                except Exception as exc:  # the copy to the device (out of its memory) fails this model on this file
                    self._fail_model(entry, message.model, reason(exc))
        elif isinstance(message, ModelFailed):
            self._fail_model(entry, message.model, message.message)
        elif isinstance(message, Done):
            entry.prepared = True
            for stage, seconds in message.seconds.items():
                self.report._add_time(stage, seconds)
        elif isinstance(message, FileFailed):
            self.report.failures.extend(Failure(str(entry.task.path), k, message.message) for k in self.keys)
            entry.tickets.clear()
            self._close(entry)
            return
        self._complete_if_done(entry)

    def lose_files(self, feed: Feed, tasks: list[Task], message: str) -> list[Task]:
        """Fail the files a feed's workers had begun and not finished preparing; return those they had not begun.

        A file whose CPU stage is through (its ``Done`` came) lost nothing and
        completes as ever.
        """
        begun = max(1, min(feed.claimed.value, len(tasks)))  # at least one: every restart ends a file
        for task in tasks[:begun]:
            entry = self.entries.get(task.index)
            if entry is not None and not entry.prepared:
                self.take(FileFailed(task.index, message))
        return tasks[begun:]

    def collect(self, wait: bool) -> None:
        """Hand the outputs of finished batches to their blocks, and finish the blocks that have all of theirs."""
        for key, batcher in self.batchers.items():
            for ticket, positions, outputs, error in batcher.finished(wait):
                order = ticket.order
                entry = self.entries.get(order.index)
                if entry is None or entry.tickets.get((order.block, key)) is not ticket:
                    continue  # its track failed meanwhile
                if error is not None:
                    self._fail_model(entry, key, error)
                else:
                    for name, values in outputs.items():
                        if name not in ticket.outputs:
                            ticket.outputs[name] = np.zeros((order.n_items, *values.shape[1:]), np.float32)
                        ticket.outputs[name][positions] = values
                    ticket.returned += len(positions)
                    if ticket.returned == order.n_items:
                        self._finish(entry, ticket)
                self._complete_if_done(entry)

    def _finish(self, entry: _Entry, ticket: _Ticket) -> None:
        """Pool a block's outputs into its segments' rows, checked."""
        order = ticket.order
        del entry.tickets[order.block, order.model]
        adapter = self.adapters[order.model]
        t0 = time.perf_counter()
        try:
            out = adapter.preparer.finish(order.plan, ticket.outputs)
            for space, dim in entry.spaces[order.model].items():
                rows = np.asarray(out[space], dtype=np.float32)
                if rows.shape != (len(order.rows), dim):
                    raise ModelError(f"returned shape {rows.shape}, expected {(len(order.rows), dim)}")
                if not np.isfinite(rows).all():
                    raise ModelError("produced non-finite values")
                entry.vectors[space][order.rows] = rows
        except Exception as exc:  # one model failing on one file must not stop the batch
            self._fail_model(entry, order.model, reason(exc))
        self.report._add_time("finish", time.perf_counter() - t0)

    def _fail_model(self, entry: _Entry, model: str, message: str) -> None:
        entry.errors.setdefault(model, message)
        for block, key in [k for k in entry.tickets if k[1] == model]:
            del entry.tickets[block, key]

    def _complete_if_done(self, entry: _Entry) -> None:
        """A track whose every block is back goes to the writer (or is counted as up to date, or failed)."""
        if not entry.prepared or entry.tickets:
            return
        track, path = entry.track, str(entry.task.path)
        if not track.todo:
            self.report.skipped += 1
        for key, message in entry.errors.items():
            self.report.failures.append(Failure(path, key, message))
        ok = [key for key in track.todo if key not in entry.errors]
        if ok:
            kept = {self.names.get(s, s): entry.vectors[s] for key in ok for s in entry.spaces[key]}
            meta = track.meta
            self.writer.put(TrackRecord(path, track.digest, meta.duration_s, meta.sample_rate, meta.channels,
                                        f"{meta.format}/{meta.subtype}", track.segments, kept,
                                        self.metadata.get(path), track.track_id))
            self.report.audio_s += meta.duration_s
        self._close(entry)

    def _close(self, entry: _Entry) -> None:
        del self.entries[entry.task.index]
        self.completed += 1
        if self.progress is not None:
            self.progress(self.completed, len(self.tasks), display(entry.task.path))


class _Writer(threading.Thread):
    """Stores finished tracks from a thread of its own, so that the devices never wait on DuckDB.

    A write transaction holds ``batch_tracks`` tracks, or what came in
    ``batch_seconds``, whichever is first.  The queue in front of it is
    bounded: if the store falls behind, the pipeline waits rather than
    holding finished tracks in memory without end.
    """

    _STOP = object()

    def __init__(self, store: Store, report: ExtractReport, batch_tracks: int, batch_seconds: float):
        super().__init__(name="store-writer", daemon=True)
        self.store, self.report = store, report
        self.batch_tracks, self.batch_seconds = max(1, batch_tracks), batch_seconds
        self.queue: queue.Queue = queue.Queue(maxsize=2 * self.batch_tracks)
        self.error: BaseException | None = None

    def put(self, record: TrackRecord) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(record, timeout=0.2)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        pending: list[TrackRecord] = []
        last = time.perf_counter()
        try:
            while True:
                try:
                    item = self.queue.get(timeout=max(0.01, self.batch_seconds - (time.perf_counter() - last)))
                except queue.Empty:
                    item = None
                if item is self._STOP:
                    break
                if item is not None:
                    pending.append(item)
                if pending and (len(pending) >= self.batch_tracks or time.perf_counter() - last >= self.batch_seconds):
                    self._write(pending)
                    last = time.perf_counter()
            self._write(pending)
        except BaseException as exc:  # the store, not a file: the pipeline stops and says why
            self.error = exc

    def _write(self, pending: list[TrackRecord]) -> None:
        t0 = time.perf_counter()
        self.store.write_tracks(pending)
        self.report.stored += len(pending)
        pending.clear()
        self.report._add_time("store", time.perf_counter() - t0)

    def finish(self, quiet: bool = False) -> None:
        """Write what is queued and stop; raise the store's error unless ``quiet``."""
        while self.is_alive():
            try:
                self.queue.put(self._STOP, timeout=0.2)
                break
            except queue.Full:
                continue
        if self.is_alive():
            self.join()
        if self.error is not None and not quiet:
            raise self.error
