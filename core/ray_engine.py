"""Extraction on Ray Data: the local pipeline's rules, spread over as many machines as a cluster has.

entries ──CPU tasks: read, hash, grid, decode, mix──▶ one actor pool per model (GPU when there is one)
        ──CPU tasks: write a Parquet shard per batch──▶ shards ──ingest──▶ store

Each file passes through the same functions as in :func:`core.extract.extract`:
:func:`core.audio.info` with the decode budget, :func:`core.audio.content_hash`,
:func:`core.workers.new_grid`, :func:`core.audio.iter_blocks` and
:func:`core.extract.embed_blocks`, so the vectors, segments and failures are
the local engine's.  A file whose decoded sample values fit one block
(:data:`core.audio.BLOCK_SAMPLES`, 349 s of 48 kHz stereo) is decoded by the
CPU task and its mono mix travels to the actors through the object store;
a longer one is decoded block by block inside each actor, so no row holds
more than one block.

Whatever one file raises is that file's failure row, never a failed job.  A
lost actor or worker is restarted by Ray and its batch retried; a retried
batch rewrites the same shard (see :mod:`core.shards`), so nothing is lost or
duplicated.  A rerun skips the files that the shards (and the store) already
hold with the same content hash and provenance, so a killed driver resumes.

Ray is optional: it is imported here only, and listed in
``requirements-cluster.txt``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from core import audio
from core.errors import BadInput, ModelUnavailable
from core.extract import ExtractReport, Failure, ProgressFn, embed_blocks, mix_dtype, provenances
from core.models.base import get_entry, load_model, split_key
from core.paths import from_text, is_url, to_text
from core.shards import ShardRun, TrackResult, done_in_shards, ingest, write_shard
from core.store import Store, check_grid
from core.workers import new_grid, reason

#: Name endings of manifests: lists of files or URLs rather than audio.
MANIFEST_SUFFIXES = (".txt", ".csv", ".parquet")

#: Files per batch when none is asked for: enough to keep an actor busy, few enough that a retry redoes little.
DEFAULT_BATCH = 8

#: Most bytes a URL track may download: a file larger than this holds more than any budget of sample values allows.
BYTES_PER_SAMPLE = 8


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ModelUnavailable("--engine ray needs Ray Data: pip install -r requirements-cluster.txt") from None
    return ray


def start(address: str | None = None) -> None:
    """Connect to a Ray cluster (``address``), or start one on this machine; nothing when connected already.

    The cluster's workers import this project's ``core`` from the driver
    (shipped as a runtime module), so a cluster needs its requirements only.
    """
    ray = _ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command line draws its own
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    package = str(Path(__file__).resolve().parent)
    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"py_modules": [package], "env_vars": {k: v for k, v in os.environ.items()
                                                                if k.startswith("AEB_")}})


# ---------------------------------------------------------------------- reading the entries


def is_manifest(path: str | Path) -> bool:
    """A local file whose name says it lists files (text, CSV or Parquet), rather than holding audio."""
    return not is_url(str(path)) and Path(path).suffix.lower() in MANIFEST_SUFFIXES and Path(path).is_file()


def _manifest_paths(batch: pd.DataFrame, folder: str) -> pd.DataFrame:
    """A manifest's entries as (path text, escaped, no problem); local paths relative to the manifest's folder."""
    out = []
    for value in batch["path"]:
        text = str(value).strip()
        if not text or text.startswith("#"):
            continue
        if not is_url(text):
            text = str((Path(folder) / Path(text).expanduser()).resolve())
        out.append((text, False, ""))
    return pd.DataFrame(out, columns=["path", "escaped", "problem"])


def _read_manifest(path: Path):
    ray = _ray()
    suffix = path.suffix.lower()
    name = str(path)
    if suffix == ".txt":
        ds = ray.data.read_text(name).rename_columns({"text": "path"})
    else:
        ds = ray.data.read_csv(name) if suffix == ".csv" else ray.data.read_parquet(name)
        if "path" not in ds.columns():
            raise BadInput(f"Manifest {path.name} has no 'path' column (columns: {', '.join(ds.columns())}); "
                           "name the column of files or URLs 'path'.")
        ds = ds.select_columns(["path"])
    return ds.map_batches(_manifest_paths, batch_format="pandas", fn_kwargs={"folder": str(path.parent)})


def entries(paths: list[str | Path], batch: int = DEFAULT_BATCH):
    """Every entry the arguments name, as a Ray dataset of (path text, escaped, problem).

    Folders and files are found as the local engine finds them
    (:func:`core.audio.find_audio_files`); manifests are read by Ray Data,
    so a list of 10⁷ URLs never passes through the driver; URLs are kept as given.
    The files the driver found go in blocks of ``batch`` rows: Ray gives each
    block to one task or actor, so a single block would keep every actor but one idle.
    """
    ray = _ray()
    parts, rows, local = [], [], []
    for p in paths:
        if is_url(str(p)):
            rows.append((str(p), False, ""))
        elif is_manifest(p):
            parts.append(_read_manifest(Path(p).expanduser()))
        else:
            local.append(p)
    files, problems = audio.find_audio_files(local)
    rows += [(*to_text(f), "") for f in files] + [(*to_text(p), why) for p, why in problems]
    if rows:
        frame = pd.DataFrame(rows, columns=["path", "escaped", "problem"])
        parts.append(ray.data.from_pandas([frame.iloc[i:i + batch] for i in range(0, len(frame), batch)]))
    if not parts:
        raise BadInput("No files to extract: give folders, files, URLs or manifests.")
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


@contextlib.contextmanager
def fetched(path: str, max_samples: int) -> Iterator[str]:
    """A local file holding a track: the path itself, or a URL's bytes in a temporary file removed afterwards.

    Raises
    ------
    core.audio.AudioError
        When the URL cannot be read, or holds more bytes than ``max_samples`` could decode from.
    """
    if not is_url(path):
        yield path
        return
    limit = BYTES_PER_SAMPLE * max_samples + 2**20
    suffix = Path(path.split("?", 1)[0]).suffix[:8]
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        try:
            if path.lower().startswith(("http://", "https://")):
                source = urllib.request.urlopen(path, timeout=60)
            else:
                import pyarrow.fs as pafs

                fs, inner = pafs.FileSystem.from_uri(path)
                source = fs.open_input_stream(inner)
            with source:
                got = 0
                while chunk := source.read(2**20):
                    got += len(chunk)
                    if got > limit:
                        raise audio.AudioError(f"the URL holds more than {limit:,} bytes, above the decode budget "
                                               "(--max-samples, AEB_MAX_SAMPLES)")
                    tmp.write(chunk)
            tmp.flush()
        except audio.AudioError:
            raise
        except Exception as exc:  # network, permissions, missing object: this file's failure
            raise audio.AudioError(f"cannot read URL ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        yield tmp.name


# ---------------------------------------------------------------------- the stages


def _empty_columns(models: list[str], spaces: list[str]) -> dict:
    return {"errors": "{}", "todo": ",".join(models), "mono": b"", "mono_dtype": "", "segments": b"",
            "content_hash": "", "sample_rate": 0, "channels": 0, "frames": 0, "format": "", "subtype": "",
            **{f"vector:{s}": b"" for s in spaces}}


def _probe(batch: pd.DataFrame, *, models: list[str], spaces: list[str], window_s: float, hop_s: float,
           max_samples: int, done: dict) -> pd.DataFrame:
    """CPU task: read the header, hash the bytes, cut the grid, decode and mix a file that fits one block."""
    entries_ = [get_entry(k) for k in models]
    dtype = mix_dtype(entries_)
    rows = []
    for text, escaped, problem in zip(batch["path"], batch["escaped"], batch["problem"]):
        row = {"path": text, "escaped": bool(escaped), "problem": "", **_empty_columns(models, spaces)}
        path = text if is_url(text) else from_text(text, bool(escaped))
        try:
            if problem:
                raise audio.AudioError(problem)
            with fetched(path, max_samples) as local:
                meta = audio.info(local, max_samples=max_samples)
                digest = audio.content_hash(local)
                todo = [k for k in models if k not in done.get((text, bool(escaped), digest), ())]
                row.update(content_hash=digest, sample_rate=meta.sample_rate, channels=meta.channels,
                           frames=meta.frames, format=meta.format, subtype=meta.subtype, todo=",".join(todo))
                if todo:
                    segments = new_grid(meta, window_s, hop_s, sum(d for e in entries_ for d in e.spaces.values()))
                    row["segments"] = segments.tobytes()
                    if meta.frames * meta.channels <= audio.BLOCK_SAMPLES:  # one block: decode it here
                        (block,) = audio.iter_blocks(local, segments, meta=meta, dtype=dtype)
                        row.update(mono=block.audio.tobytes(), mono_dtype=block.audio.dtype.str)
        except Exception as exc:  # whatever one file raises is that file's failure
            row["errors"] = json.dumps({k: reason(exc) for k in models})
            row["todo"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


class EmbedActor:
    """One model, loaded once per actor, embedding the rows that still need it."""

    def __init__(self, key: str, device: str | None, max_samples: int):
        self.adapter = load_model(key, device)
        self.key = key
        self.max_samples = max_samples

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        for i in range(len(batch)):
            row = batch.iloc[i]
            if self.key not in row["todo"].split(","):
                continue
            errors = json.loads(row["errors"])
            segments = np.frombuffer(row["segments"], np.float64).reshape(-1, 2)
            try:
                vectors, failed = self._embed(row, segments)
            except Exception as exc:  # a decoding error of a long file, met block by block here
                vectors, failed = {}, {self.key: reason(exc)}
            errors.update(failed)
            batch.iat[i, batch.columns.get_loc("errors")] = json.dumps(errors)
            if not failed:
                for space, values in vectors.items():
                    batch.iat[i, batch.columns.get_loc(f"vector:{space}")] = values.tobytes()
        return batch

    def _embed(self, row, segments: np.ndarray):
        entry = self.adapter.entry
        noop = lambda what, seconds: None  # noqa: E731  the local engine's timings are its own
        if row["mono"]:
            y = np.frombuffer(row["mono"], np.dtype(row["mono_dtype"]))
            block = audio.Block(y, int(row["sample_rate"]), 0.0, segments, np.arange(len(segments)))
            return embed_blocks([block], len(segments), [self.adapter], noop)
        path = row["path"] if is_url(row["path"]) else from_text(row["path"], bool(row["escaped"]))
        with fetched(path, self.max_samples) as local:
            meta = audio.AudioInfo(local, int(row["sample_rate"]), int(row["channels"]), int(row["frames"]),
                                   row["format"], row["subtype"])
            blocks = audio.iter_blocks(local, segments, meta=meta, dtype=mix_dtype([entry]))
            return embed_blocks(blocks, len(segments), [self.adapter], noop)


def _write(batch: pd.DataFrame, *, run: ShardRun, folder: str) -> pd.DataFrame:
    """CPU task: write the batch's attempted files as one shard; return what happened to each entry."""
    results, summary = [], []
    for _, row in batch.iterrows():
        errors = json.loads(row["errors"])
        path = row["path"] if is_url(row["path"]) else from_text(row["path"], bool(row["escaped"]))
        todo = [k for k in row["todo"].split(",") if k]
        audio_s = row["frames"] / row["sample_rate"] if row["sample_rate"] else 0.0
        if todo or errors:
            segments = np.frombuffer(row["segments"], np.float64).reshape(-1, 2) if row["segments"] else None
            vectors = {}
            for k in todo:
                if k not in errors:
                    for space, dim in get_entry(k).spaces.items():
                        vectors[space] = np.frombuffer(row[f"vector:{space}"], np.float32).reshape(-1, dim)
            info = audio.AudioInfo(path, int(row["sample_rate"]), int(row["channels"]), int(row["frames"]),
                                   row["format"], row["subtype"]) if row["content_hash"] else None
            results.append(TrackResult(path, row["content_hash"] or None, info, segments, vectors, errors))
        summary.append({"path": row["path"], "escaped": bool(row["escaped"]), "errors": row["errors"],
                        "attempted": bool(todo), "audio_s": audio_s if todo and len(errors) < len(todo) else 0.0})
    shard = write_shard(results, run, folder) if results else ""
    return pd.DataFrame([{**s, "shard": shard} for s in summary])


# ---------------------------------------------------------------------- the run


def extract_ray(
    paths: list[str | Path],
    models: list[str],
    *,
    shards: str | Path | None = None,
    db: str | Path | None = None,
    window_s: float = audio.DEFAULT_WINDOW_S,
    hop_s: float = audio.DEFAULT_HOP_S,
    max_samples: int = audio.DEFAULT_MAX_SAMPLES,
    workers: int | None = None,
    batch_size: int | None = None,
    ray_address: str | None = None,
    device: str | None = None,
    metadata: dict[str, dict] | None = None,
    progress: ProgressFn | None = None,
) -> ExtractReport:
    """Embed files, folders, manifests and URLs on Ray Data into shards, then (with ``db``) into a store.

    The Python face of ``python -m core extract --engine ray``: on a cluster
    already connected with ``ray.init``, this uses it; otherwise it connects
    to ``ray_address`` or starts Ray on this machine.

    Parameters
    ----------
    paths : list
        Files, folders, ``s3://``/``gs://``/``https://`` URLs, and manifests
        (``.txt`` one entry a line, ``.csv`` or ``.parquet`` with a ``path``
        column; relative paths are relative to the manifest).
    models : list of str
        Model keys (space keys run their model); one actor pool each.
    shards : str or Path, optional
        The shard folder (local or object storage); by default ``DB.shards``
        beside the store.  Shards already there are reused: a rerun resumes.
    db : path, optional
        The store to ingest into at the end; None leaves the shards for
        :func:`core.shards.ingest` elsewhere.
    workers : int, optional
        Actors per model pool (and CPU tasks at once); Ray decides when None.
    batch_size : int, optional
        Files per batch, and so per shard (default :data:`DEFAULT_BATCH`).
    progress : callable, optional
        ``progress(done, total, name)`` as batches finish (total is unknown, 0, while manifests stream).

    Returns
    -------
    ExtractReport
        As the local engine's: ``files`` entries, ``skipped`` already done,
        ``failures``; ``stored`` is the tracks the ingest wrote (0 without ``db``).

    Raises
    ------
    core.errors.BadInput
        For a bad grid, budget, batch size or worker count, or no shard folder.
    core.errors.ModelUnavailable
        When Ray is not installed.
    """
    started = time.perf_counter()
    check_grid(window_s, hop_s)
    if not (isinstance(max_samples, int) and max_samples > 0):
        raise BadInput(f"--max-samples must be a positive whole number, not {max_samples!r}.")
    for flag, value in (("--workers", workers), ("--batch-size", batch_size)):
        if value is not None and not (isinstance(value, int) and value > 0):
            raise BadInput(f"{flag} must be a positive whole number, not {value!r}.")
    if shards is None:
        if db is None:
            raise BadInput("Give --shards DIR (or a --db, whose shards then go beside it).")
        shards = str(Path(db).expanduser().resolve()) + ".shards"
    shards = str(shards) if is_url(str(shards)) else str(Path(shards).expanduser().resolve())
    keys = list(dict.fromkeys(split_key(k)[0] for k in models))  # a tag output runs its model
    for key in keys:
        get_entry(key)  # unknown keys fail before anything starts
    if db is not None:
        Store(db).ensure_grid(window_s, hop_s)  # a grid mismatch is refused before any work
    ray = _ray()
    start(ray_address)
    remote = ray.remote(num_cpus=0)(_provenances_of)
    provs = dict(zip(keys, ray.get([remote.remote(k) for k in keys])))
    run = ShardRun(float(window_s), float(hop_s), provs)
    done = done_in_shards(shards, provs)
    if db is not None:
        done = _add_stored(done, Store(db), provs)
    spaces = [p.space for ps in provs.values() for p in ps]
    batch = batch_size or DEFAULT_BATCH
    gpus = ray.cluster_resources().get("GPU", 0)
    ds = entries(paths, batch).map_batches(
        _probe, batch_format="pandas", batch_size=batch,
        compute=ray.data.TaskPoolStrategy(size=workers) if workers else None,
        fn_kwargs=dict(models=keys, spaces=spaces, window_s=window_s, hop_s=hop_s, max_samples=max_samples,
                       done=done))
    pool = dict(size=workers) if workers else dict(min_size=1, max_size=int(gpus) or None)  # Ray scales it
    for key in keys:
        ds = ds.map_batches(EmbedActor, batch_format="pandas", batch_size=batch,
                            compute=ray.data.ActorPoolStrategy(**pool),
                            num_gpus=1 if gpus else None, fn_constructor_args=(key, device, max_samples))
    ds = ds.map_batches(_write, batch_format="pandas", batch_size=batch, fn_kwargs=dict(run=run, folder=shards))

    report = ExtractReport()
    seen = 0
    for row in ds.iter_rows():
        seen += 1
        path = row["path"] if is_url(row["path"]) else from_text(row["path"], bool(row["escaped"]))
        errors = json.loads(row["errors"])
        report.failures.extend(Failure(path, k, msg) for k, msg in errors.items())
        report.skipped += not row["attempted"] and not errors
        report.audio_s += row["audio_s"]
        if progress is not None:
            progress(seen, 0, path)
    report.files = seen
    if db is not None:
        ingested = ingest(shards, db, replace_changed=True, metadata=metadata)
        report.stored = ingested.stored
        report.replaced_spaces = ingested.replaced_spaces
        report.failures = ingested.failures  # the store's view: a later success clears an old failure
    report.seconds = time.perf_counter() - started
    return report


def _add_stored(done: dict, store: Store, provs: dict) -> dict:
    """Add the (path, hash) pairs a store already holds for models whose provenance it has."""
    states = store.track_states()
    by_id = {tid: (p, h) for p, (tid, h) in states.items()}
    for key, ps in provs.items():
        live = store.space(key)
        if live is None or (int(live["dim"]), str(live["adapter_version"]), str(live["weights_sha256"]), live["source"]) != (
                ps[0].dim, ps[0].adapter_version, ps[0].weights_sha256, ps[0].source):
            continue
        for tid in store.tracks_with_space(key):
            p, h = by_id[tid]
            text, escaped = (p, False) if is_url(p) else to_text(p)
            done.setdefault((text, escaped, h), set()).add(key)
    return done


def _provenances_of(key: str) -> list:
    """A model's provenance, read where its weights are: on the cluster, which the driver may not be."""
    return provenances(load_model(key, "cpu"))
