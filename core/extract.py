"""The extraction pipeline shared by the command line and the app.

files ──decode in blocks──▶ shared segment grid ──every adapter──▶ store

It is built to be interrupted: finished tracks are written in small batches,
each one transaction, and a later run skips every (track, space) pair that is
already stored with the same content hash and provenance.  Resuming is per
space: a model whose layers are added later (``--layers all`` after
``--layers 6``) runs once more on each track and stores only the spaces the
track lacks.  A model whose provenance changed is re-extracted into a staging
table and swapped in only when the run has gone through every file, so an
interrupted re-extraction leaves the old vectors in use.

Every entry the user points at ends as a track or a failure: one file's
exception (unreadable, undecodable, over the decode budget, out of memory,
an adapter's bad output) is that file's one-line failure, per model, and the
batch goes on.  Only an interruption by the user, or a store that cannot be
written, stops the run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core import audio
from core.errors import BadInput, StoreError
from core.models.base import (
    Adapter,
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

#: Most vector values (segments × the dimensions of every space) one track may
#: hold in memory before it is written: 1 GiB as float32, e.g. 43,690 segments
#: of a 6,144-D OpenL3 space, or 2.1 million segments of the 128-D baseline.
MAX_TRACK_VALUES = 2**28

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


def _provenances(adapter: Adapter, spaces: dict[str, int], names: dict[str, str]) -> list[Provenance]:
    """One provenance per space the run stores, under the name the store knows it by."""
    entry = adapter.entry
    return [
        Provenance(names[space], entry.key, dim, adapter.version, adapter.weights_sha256,
                   tag_names=tuple(adapter.tag_names[space]) if space in adapter.tag_names else None)
        for space, dim in spaces.items()
    ]


def _embed_track(path: Path, meta: audio.AudioInfo, segments: np.ndarray, todo: list[tuple[Adapter, dict[str, int]]],
                 report: ExtractReport) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Run every adapter once over a track's blocks, keeping the spaces asked of it; per-model errors are returned."""
    vectors = {space: np.zeros((len(segments), dim), np.float32) for _, spaces in todo for space, dim in spaces.items()}
    errors: dict[str, str] = {}
    adapters = [a for a, _ in todo]
    keep = {a.entry.key: spaces for a, spaces in todo}
    wanted = {a.entry.key: np.dtype(a.entry.input_dtype) for a in adapters}
    widest = np.float64 if np.dtype(np.float64) in wanted.values() else np.float32
    t0 = time.perf_counter()
    for block in audio.iter_blocks(path, segments, meta=meta, dtype=widest):
        mixes = {np.dtype(widest): block.audio}
        report._add_time("decode", time.perf_counter() - t0)
        for adapter in adapters:
            key = adapter.entry.key
            if key in errors:
                continue
            t1 = time.perf_counter()
            try:
                if wanted[key] not in mixes:  # cast once per block, not once per adapter
                    mixes[wanted[key]] = block.audio.astype(wanted[key])
                out = adapter.embed(mixes[wanted[key]], block.sr, block.segments, block.offset_s)
                for space, dim in keep[key].items():
                    rows = np.asarray(out[space], dtype=np.float32)
                    if rows.shape != (len(block.index), dim):
                        raise ModelError(f"returned shape {rows.shape}, expected {(len(block.index), dim)}")
                    if not np.isfinite(rows).all():
                        raise ModelError("produced non-finite values")
                    vectors[space][block.index] = rows
            except Exception as exc:  # one model failing on one file must not stop the batch
                errors[key] = str(exc) if isinstance(exc, ModelError) else _reason(exc)
            report._add_time(f"model:{key}", time.perf_counter() - t1)
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
    adapters : list, optional
        Already loaded adapters (the app keeps them cached); else loaded here.
    batch_tracks, batch_seconds : int, float
        A write transaction is made after this many tracks or seconds,
        whichever comes first: the most work an interruption can lose.
    max_samples : int > 0
        Each file's budget of decoded sample values (frames × channels); a
        file above it is a failure, found before it is decoded.
    layers : ``"all"``, tuple of int, or None
        Hidden states to store as well (:func:`core.models.base.parse_layers`),
        for every model that has layers; one forward pass fills them all.

    Raises
    ------
    core.errors.BadInput
        For an invalid grid or budget, or ``layers`` given when no model has
        layers (nothing is written then).
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
    asked = requested_outputs(models)
    for key in models:
        get_entry(key)  # unknown keys, outputs and layers fail before any weights load
    catalogued = {key: get_entry(key) for key in asked}
    if layers is not None and not any(e.layers for e in catalogued.values()):
        raise BadInput(f"Layers were chosen, but none of {', '.join(asked)} has hidden layers; "
                       "drop --layers or add a model with layers such as mert-v1-95m.")
    for key, entry in catalogued.items():
        spaces_to_fill(entry, asked[key], layers)
    if adapters is None:
        adapters = [load_model(key, device) for key in asked]
    plan = {a.entry.key: spaces_to_fill(a.entry, asked.get(a.entry.key, ()), layers) for a in adapters}
    store = Store(db)
    store.ensure_grid(window_s, hop_s)
    held = set(store.spaces()["space"])
    names = {space: stored_name(space, held) for spaces in plan.values() for space in spaces}
    for adapter in adapters:
        for prov in _provenances(adapter, plan[adapter.entry.key], names):
            if store.prepare_space(prov):
                report.replaced_spaces.append(prov.space)
    keys = [a.entry.key for a in adapters]
    done = {space: store.tracks_with_space(names[space]) for space in names}
    states = store.track_states()
    run_id = store.start_run(keys)
    files, problems = audio.find_audio_files(paths)
    entries: list[tuple[Path, str | None]] = [(f, None) for f in files] + problems
    report.files = len(entries)
    metadata = metadata or {}
    found = {str(f) for f in files}
    matched = {p: m for p, m in metadata.items() if p in found}
    report.metadata_rows, report.metadata_matched = len(metadata), len(matched)

    pending: list[TrackRecord] = []
    last_flush = time.perf_counter()

    def flush() -> None:
        nonlocal last_flush
        t = time.perf_counter()
        store.write_tracks(pending)
        report.stored += len(pending)
        pending.clear()
        report._add_time("store", time.perf_counter() - t)
        last_flush = time.perf_counter()

    try:
        for i, (path, problem) in enumerate(entries):
            spath = str(path)
            try:
                if problem:
                    raise audio.AudioError(problem)
                t = time.perf_counter()
                meta = audio.info(path, max_samples=max_samples)
                digest = audio.content_hash(path)
                report._add_time("decode", time.perf_counter() - t)
                known = states.get(spath)
                if known is not None and known[1] == digest:
                    track_id = known[0]
                    todo = [(a, missing) for a in adapters
                            if (missing := {s: d for s, d in plan[a.entry.key].items() if track_id not in done[s]})]
                    segments = store.track_segments(track_id)
                else:
                    track_id, todo = None, [(a, plan[a.entry.key]) for a in adapters]
                    segments = _grid(meta, window_s, hop_s, todo)
                if not todo:
                    report.skipped += 1
                else:
                    vectors, errors = _embed_track(path, meta, segments, todo, report)
                    for key, message in errors.items():
                        report.failures.append(Failure(spath, key, message))
                    ok = [spaces for a, spaces in todo if a.entry.key not in errors]
                    if ok:
                        kept = {names[s]: vectors[s] for spaces in ok for s in spaces}
                        pending.append(TrackRecord(
                            spath, digest, meta.duration_s, meta.sample_rate, meta.channels,
                            f"{meta.format}/{meta.subtype}", segments, kept, metadata.get(spath), track_id))
                        report.audio_s += meta.duration_s
            except StoreError:
                raise  # the store, not this file: nothing later could be written either
            except Exception as exc:  # whatever one file raises is that file's failure
                report.failures.extend(Failure(spath, k, _reason(exc)) for k in keys)
            if pending and (len(pending) >= batch_tracks or time.perf_counter() - last_flush >= batch_seconds):
                flush()
            if progress is not None:
                progress(i + 1, len(entries), display(path))
        flush()
        store.commit_staged(report.replaced_spaces)
    finally:
        flush()
        store.record_failures(run_id, [(f.path, f.model, f.message) for f in report.failures])
        store.set_metadata(matched)
        report.write_waits = dataclasses.asdict(store.write_wait)
        report.seconds = time.perf_counter() - started
    return report


def _grid(meta: audio.AudioInfo, window_s: float, hop_s: float,
          todo: list[tuple[Adapter, dict[str, int]]]) -> np.ndarray:
    """A new track's segments, refused (one file's failure) when the spaces it fills would not fit :data:`MAX_TRACK_VALUES`."""
    n = audio.segment_count(meta.duration_s, window_s, hop_s)
    values = n * sum(dim for _, spaces in todo for dim in spaces.values())
    if values > MAX_TRACK_VALUES:
        raise audio.AudioError(f"the grid cuts its {meta.duration_s:,.0f} s into {n:,} segments, {values:,} vector values "
                               f"in all, more than {MAX_TRACK_VALUES:,} per file; use a longer --hop")
    return audio.segment_grid(meta.duration_s, window_s, hop_s)


def _reason(exc: Exception) -> str:
    """One line saying why a file failed."""
    if isinstance(exc, audio.AudioError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read file ({exc.strerror or exc})"
    if isinstance(exc, MemoryError):
        return f"not enough memory for this file ({str(exc).splitlines()[0] if str(exc) else 'MemoryError'})"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
