"""The extraction pipeline shared by the command line and the app.

files ──decode in blocks──▶ shared segment grid ──every adapter──▶ store

It is built to be interrupted: finished tracks are written in small batches,
each one transaction, and a later run skips every (track, model) pair that is
already stored with the same content hash and provenance.  A model whose
provenance changed is re-extracted into a staging table and swapped in only
when the run has gone through every file, so an interrupted re-extraction
leaves the old vectors in use.

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
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from core import audio
from core.errors import BadInput, StoreError
from core.models.base import Adapter, ModelEntry, ModelError, get_entry, load_model, split_key
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


def model_keys(keys: list[str]) -> list[str]:
    """Model keys to run for the given space keys (``musicnn-msd/taggram`` runs ``musicnn-msd``)."""
    return list(dict.fromkeys(split_key(k)[0] for k in keys))


def provenances(adapter: Adapter) -> list[Provenance]:
    """The provenance of each space a loaded adapter fills: what decides whether stored vectors are still its."""
    entry = adapter.entry
    return [
        Provenance(space, entry.key, dim, adapter.version, adapter.weights_sha256,
                   tag_names=tuple(adapter.tag_names[space]) if space in adapter.tag_names else None)
        for space, dim in entry.spaces.items()
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
                errors[key] = str(exc) if isinstance(exc, ModelError) else failure_reason(exc)
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
) -> ExtractReport:
    """Embed files (and the audio files inside folders) with models into a store.

    Parameters
    ----------
    paths : list of str or Path
        Files and folders; folders are searched recursively for audio.
    models : list of str
        Model keys (space keys are accepted and run their model).
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

    Raises
    ------
    core.errors.BadInput
        For an invalid grid or budget (nothing is written then).
    core.store.GridMismatch
        If the store was built on another grid.
    core.models.base.ModelError
        If a model is unknown or cannot be loaded (nothing is done then).
    """
    started = time.perf_counter()
    report = ExtractReport()
    check_grid(window_s, hop_s)
    if not (isinstance(max_samples, int) and max_samples > 0):
        raise BadInput(f"--max-samples must be a positive whole number, not {max_samples!r}.")
    if adapters is None:
        for key in model_keys(models):
            get_entry(key)  # unknown keys fail before any weights load
        adapters = [load_model(key, device) for key in model_keys(models)]
    store = Store(db)
    store.ensure_grid(window_s, hop_s)
    for adapter in adapters:
        for prov in provenances(adapter):
            if store.prepare_space(prov):
                report.replaced_spaces.append(prov.space)
    keys = [a.entry.key for a in adapters]
    done = {a.entry.key: store.tracks_with_space(a.entry.key) for a in adapters}
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
                    todo = [a for a in adapters if track_id not in done[a.entry.key]]
                    segments = store.track_segments(track_id)
                else:
                    track_id, todo = None, list(adapters)
                    segments = track_grid(meta, window_s, hop_s, [a.entry for a in todo])
                if not todo:
                    report.skipped += 1
                else:
                    blocks = audio.iter_blocks(path, segments, meta=meta, dtype=mix_dtype([a.entry for a in todo]))
                    vectors, errors = embed_blocks(blocks, len(segments), todo, report._add_time)
                    for key, message in errors.items():
                        report.failures.append(Failure(spath, key, message))
                    ok = [a for a in todo if a.entry.key not in errors]
                    if ok:
                        kept = {s: v for a in ok for s, v in vectors.items() if split_key(s)[0] == a.entry.key}
                        pending.append(TrackRecord(
                            spath, digest, meta.duration_s, meta.sample_rate, meta.channels,
                            f"{meta.format}/{meta.subtype}", segments, kept, metadata.get(spath), track_id))
                        report.audio_s += meta.duration_s
            except StoreError:
                raise  # the store, not this file: nothing later could be written either
            except Exception as exc:  # whatever one file raises is that file's failure
                report.failures.extend(Failure(spath, k, failure_reason(exc)) for k in keys)
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


def track_grid(meta: audio.AudioInfo, window_s: float, hop_s: float, entries: list[ModelEntry]) -> np.ndarray:
    """A new track's segments, refused (one file's failure) when its vectors would not fit :data:`MAX_TRACK_VALUES`."""
    n = audio.segment_count(meta.duration_s, window_s, hop_s)
    values = n * sum(dim for e in entries for dim in e.spaces.values())
    if values > MAX_TRACK_VALUES:
        raise audio.AudioError(f"the grid cuts its {meta.duration_s:,.0f} s into {n:,} segments, {values:,} vector values "
                               f"in all, more than {MAX_TRACK_VALUES:,} per file; use a longer --hop")
    return audio.segment_grid(meta.duration_s, window_s, hop_s)


def failure_reason(exc: Exception) -> str:
    """One line saying why a file failed."""
    if isinstance(exc, audio.AudioError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read file ({exc.strerror or exc})"
    if isinstance(exc, MemoryError):
        return f"not enough memory for this file ({str(exc).splitlines()[0] if str(exc) else 'MemoryError'})"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
