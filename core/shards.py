"""Parquet shards: what a distributed extraction writes, and how a store takes them in.

An engine that runs on many machines cannot write one DuckDB file, so it
writes shards to a folder (local, ``s3://`` or ``gs://``) and a store
ingests them later, on this machine or another.  A shard holds one row per
file of one batch:

* ``path`` (stored text, see :mod:`core.paths`; a URL as given),
  ``path_escaped``, ``content_hash``, ``duration_s``, ``sample_rate``,
  ``channels``, ``format``: the track, as the local engine stores it;
* ``segments``: the grid's ``[start, end]`` pairs, flattened (2 n doubles);
* ``vector:SPACE``: the space's n × dim float32 values, row-major, for each
  space of the run (null where the model failed or was not run);
* ``error:MODEL``: the one-line reason a model failed on the file (null
  otherwise); a file that could not be read has every model's error and no
  segments: it is a failure row;
* ``stored``: the models whose vectors the row holds.

The key-value metadata ``aeb:shard`` holds the run's provenance: the grid,
each model's spaces with adapter version and weights digest, the creation
time.  A shard's name is a digest of its rows' files, hashes and
provenance, and it appears whole or not at all, so a batch retried after a
lost worker rewrites the same shard instead of adding a second one.

Ingesting is idempotent (a pair of track and model already in the store
with the same content hash and provenance is skipped), checks the grid,
and records failure rows in ``failures``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core import audio
from core.errors import BadInput, StoreError
from core.extract import ExtractReport, Failure
from core.paths import from_text, is_url, to_text
from core.store import Provenance, Store, TrackRecord, check_grid

SHARD_KEY = b"aeb:shard"

#: Version of the shard layout; a reader refuses others.
SHARD_FORMAT = 1

#: Tracks written to the store per transaction while ingesting.
INGEST_BATCH = 64

_TRACK_FIELDS = [("path", pa.string()), ("path_escaped", pa.bool_()), ("content_hash", pa.string()),
                 ("duration_s", pa.float64()), ("sample_rate", pa.int32()), ("channels", pa.int32()),
                 ("format", pa.string()), ("segments", pa.list_(pa.float64())), ("stored", pa.list_(pa.string()))]


@dataclasses.dataclass(frozen=True)
class ShardRun:
    """What every shard of one extraction shares: the grid and each model's provenance."""

    window_s: float
    hop_s: float
    models: dict[str, list[Provenance]]

    def schema(self) -> pa.Schema:
        fields = [pa.field(n, t) for n, t in _TRACK_FIELDS]
        fields += [pa.field(f"vector:{p.space}", pa.list_(pa.float32())) for provs in self.models.values() for p in provs]
        fields += [pa.field(f"error:{m}", pa.string()) for m in self.models]
        meta = {"format": SHARD_FORMAT, "window_s": self.window_s, "hop_s": self.hop_s,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "models": {m: [_prov_dict(p) for p in provs] for m, provs in self.models.items()}}
        return pa.schema(fields, metadata={SHARD_KEY: json.dumps(meta).encode()})

    def digest(self) -> str:
        text = json.dumps([self.window_s, self.hop_s, {m: [_prov_dict(p) for p in ps] for m, ps in self.models.items()}])
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _prov_dict(p: Provenance) -> dict:
    return {"space": p.space, "dim": p.dim, "adapter_version": p.adapter_version,
            "weights_sha256": p.weights_sha256, "tag_names": list(p.tag_names) if p.tag_names else None}


def _same(a: Provenance, b: Provenance) -> bool:
    """Vectors of ``a`` and ``b`` may share a space: same dimension, adapter version, weights and source."""
    return (a.dim, a.adapter_version, a.weights_sha256, a.source) == (b.dim, b.adapter_version, b.weights_sha256, b.source)


@dataclasses.dataclass
class TrackResult:
    """One file's outcome, as an engine hands it to :func:`write_shard`.

    ``segments`` is float64[n, 2] (None for a failure row), ``vectors`` maps
    each space stored to float32[n, dim], ``errors`` each failed model to its
    reason.
    """

    path: str
    content_hash: str | None = None
    info: audio.AudioInfo | None = None
    segments: np.ndarray | None = None
    vectors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


def filesystem(folder: str | Path) -> tuple[pafs.FileSystem, str]:
    """The file system holding a shard folder (local, ``s3://``, ``gs://``) and the folder's path in it."""
    text = str(folder)
    if is_url(text):
        try:
            return pafs.FileSystem.from_uri(text)
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise BadInput(f"Cannot open the shard folder {text} ({str(exc).splitlines()[0]}).") from None
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def write_shard(results: list[TrackResult], run: ShardRun, folder: str) -> str:
    """Write one batch's results as a shard; returns its name.

    The name is a digest of the files, their hashes, what was attempted, and
    the run's provenance: the same batch always gets the same name.  The
    file is written beside its final name and moved there (a single put on
    object storage), so a reader never sees half a shard.
    """
    columns: dict[str, list] = {name: [] for name in run.schema().names}
    for r in results:
        text, escaped = (r.path, False) if is_url(r.path) else to_text(r.path)
        columns["path"].append(text)
        columns["path_escaped"].append(escaped)
        columns["content_hash"].append(r.content_hash)
        m = r.info
        columns["duration_s"].append(m.duration_s if m else None)
        columns["sample_rate"].append(m.sample_rate if m else None)
        columns["channels"].append(m.channels if m else None)
        columns["format"].append(f"{m.format}/{m.subtype}" if m else None)
        columns["segments"].append(None if r.segments is None else np.asarray(r.segments, np.float64).reshape(-1))
        stored = [k for k, provs in run.models.items() if provs and all(p.space in r.vectors for p in provs)]
        columns["stored"].append(stored)
        for provs in run.models.values():
            for p in provs:
                v = r.vectors.get(p.space)
                columns[f"vector:{p.space}"].append(None if v is None else np.asarray(v, np.float32).reshape(-1))
        for k in run.models:
            columns[f"error:{k}"].append(r.errors.get(k))
    schema = run.schema()
    table = pa.table({n: pa.array(columns[n], type=schema.field(n).type) for n in schema.names}, schema=schema)
    key = json.dumps([run.digest(), columns["path"], columns["path_escaped"], columns["content_hash"],
                      columns["stored"], [sorted(r.errors) for r in results]])
    name = f"part-{hashlib.blake2b(key.encode(), digest_size=12).hexdigest()}.parquet"
    fs, base = filesystem(folder)
    fs.create_dir(base, recursive=True)
    tmp = f"{base}/.{name}.tmp"
    with fs.open_output_stream(tmp) as out:
        pq.write_table(table, out)
    fs.move(tmp, f"{base}/{name}")
    return name


def list_shards(folder: str | Path) -> list[str]:
    """The shard files in a folder (full paths within its file system), by name."""
    fs, base = filesystem(folder)
    info = fs.get_file_info(base)
    if info.type != pafs.FileType.Directory:
        raise BadInput(f"{folder} is not a folder of shards; give the --shards folder of an extraction.")
    found = fs.get_file_info(pafs.FileSelector(base, recursive=False))
    return sorted(f.path for f in found if f.is_file and f.base_name.endswith(".parquet")
                  and not f.base_name.startswith("."))


def read_run(fs: pafs.FileSystem, shard: str) -> tuple[ShardRun, str]:
    """A shard's run (grid and provenance) and creation time, refusing a file that is not a shard.

    Raises
    ------
    BadInput
    """
    name = shard.rsplit("/", 1)[-1]
    try:
        with fs.open_input_file(shard) as fh:
            meta = pq.read_schema(fh).metadata or {}
        doc = json.loads(meta[SHARD_KEY])
        if doc.get("format") != SHARD_FORMAT:
            raise ValueError(f"shard format {doc.get('format')!r}, this version reads {SHARD_FORMAT}")
        models = {m: [Provenance(p["space"], m, int(p["dim"]), str(p["adapter_version"]), str(p["weights_sha256"]),
                                 tag_names=tuple(p["tag_names"]) if p.get("tag_names") else None) for p in provs]
                  for m, provs in doc["models"].items()}
        run = ShardRun(float(doc["window_s"]), float(doc["hop_s"]), models)
        check_grid(run.window_s, run.hop_s)
        return run, str(doc["created_at"])
    except (KeyError, TypeError, ValueError, BadInput, pa.ArrowException, OSError) as exc:
        raise BadInput(f"{name} is not a shard of this project ({str(exc).splitlines()[0]}); "
                       "remove it from the folder or give the --shards folder of an extraction.") from None


def done_in_shards(folder: str | Path, models: dict[str, list[Provenance]]) -> dict[tuple[str, bool, str], set[str]]:
    """(path text, escaped, content hash) -> the models whose vectors shards already hold with this provenance.

    What a rerun skips, so that a driver killed mid-run resumes from the shards it wrote.
    """
    fs, base = filesystem(folder)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return {}
    done: dict[tuple[str, bool, str], set[str]] = {}
    for shard in list_shards(folder):
        run, _ = read_run(fs, shard)
        current = {m for m, provs in run.models.items() if m in models and len(provs) == len(models[m])
                   and all(_same(a, b) for a, b in zip(provs, models[m]))}
        if not current:
            continue
        with fs.open_input_file(shard) as fh:
            rows = pq.read_table(fh, columns=["path", "path_escaped", "content_hash", "stored"]).to_pylist()
        for r in rows:
            held = current.intersection(r["stored"] or ())
            if held:
                done.setdefault((r["path"], r["path_escaped"], r["content_hash"]), set()).update(held)
    return done


def _mapper(path_map: list[tuple[str, str]]):
    def apply(text: str) -> str:
        for old, new in path_map:
            if text == old or text.startswith(old.rstrip("/") + "/"):
                return new.rstrip("/") + text[len(old.rstrip("/")):]
        return text
    return apply


def parse_path_map(items: list[str]) -> list[tuple[str, str]]:
    """``OLD=NEW`` prefixes for :func:`ingest`, refusing an item without ``=`` or with an empty side.

    Raises
    ------
    BadInput
    """
    out = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise BadInput(f"--path-map {item!r} is not OLD=NEW; write for example --path-map /mnt/audio=/home/me/audio.")
        out.append((old, new))
    return out


def ingest(folder: str | Path, db: str | Path, *, path_map: list[tuple[str, str]] = (), replace: bool = False,
           replace_changed: bool = False, metadata: dict[str, dict] | None = None) -> ExtractReport:
    """Take a folder of shards into a store: vectors, tracks, segments, failures.

    Parameters
    ----------
    folder : str or Path
        The shard folder (local, ``s3://``, ``gs://``).
    db : path
        The DuckDB file, created when absent.
    path_map : list of (OLD, NEW)
        Path prefixes to rewrite, for shards written where the files lay elsewhere.
    replace : bool
        Needed when a space already holds vectors of another provenance
        (another adapter version or weights, or imported vectors): they are
        replaced, once every shard is in, never mixed.
    replace_changed : bool
        Replace them without asking, as the local engine does on a
        re-extraction (the engine's own ingest at the end of a run).
    metadata : dict, optional
        Absolute path -> {column: value}, set on the tracks ingested.

    Returns
    -------
    ExtractReport
        ``files`` distinct files in the shards, ``stored`` tracks written,
        ``skipped`` already in the store, ``failures`` as the engine found them.

    Raises
    ------
    BadInput
        For a folder without shards, a file that is not a shard, or shards of different grids.
    GridMismatch
        When the store has another grid.
    StoreError
        When a space holds vectors of another provenance and neither ``replace`` flag is set.
    """
    fs, _ = filesystem(folder)
    shards = list_shards(folder)
    if not shards:
        raise BadInput(f"{folder} holds no shards (part-*.parquet); run an extraction with --shards {folder} first.")
    runs = {s: read_run(fs, s) for s in shards}
    order = sorted(shards, key=lambda s: (runs[s][1], s))  # oldest first: a later result wins
    grids = {(r.window_s, r.hop_s) for r, _ in runs.values()}
    if len(grids) > 1:
        raise BadInput(f"The shards in {folder} were cut on different grids ({', '.join(f'{w:g}/{h:g} s' for w, h in sorted(grids))}); "
                       "ingest each run's shards into its own --db.")
    window_s, hop_s = grids.pop()
    latest: dict[str, list[Provenance]] = {}
    for s in order:
        latest.update(runs[s][0].models)
    store = Store(db)
    store.ensure_grid(window_s, hop_s)
    changed = [p.space for provs in latest.values() for p in provs
               if (live := store.space(p.space)) is not None and not _same(p, _live_provenance(live))]
    if changed and not (replace or replace_changed):
        raise StoreError(f"{', '.join(changed)} already hold vectors of another adapter version, weights or source; "
                         "add --replace to replace them with the shards', or ingest into another --db.")
    report = ExtractReport()
    for provs in latest.values():
        for p in provs:
            if store.prepare_space(p):
                report.replaced_spaces.append(p.space)
    keys = list(latest)
    run_id = store.start_run(keys)
    rename = _mapper(list(path_map))
    fs_path = {}

    def local(text: str, escaped: bool) -> str:
        if (text, escaped) not in fs_path:
            mapped = rename(text)
            fs_path[text, escaped] = mapped if not escaped and is_url(mapped) else str(
                Path(from_text(mapped, escaped)).expanduser().absolute())
        return fs_path[text, escaped]

    # Plan from the light columns: the latest content of each file, and which shard supplies each model.
    plan: dict[str, dict] = {}
    for s in order:
        run = runs[s][0]
        current = {m for m, provs in run.models.items() if all(_same(a, b) for a, b in zip(provs, latest[m]))}
        with fs.open_input_file(s) as fh:
            light = pq.read_table(fh, columns=["path", "path_escaped", "content_hash", "stored",
                                               *(f"error:{m}" for m in run.models)]).to_pylist()
        for i, r in enumerate(light):
            p = local(r["path"], r["path_escaped"])
            entry = plan.get(p)
            if entry is None or (r["content_hash"] is not None and entry["hash"] != r["content_hash"]):
                entry = plan[p] = {"hash": r["content_hash"], "from": {}, "errors": {}}
            if r["content_hash"] != entry["hash"] and r["content_hash"] is None:
                continue  # an unreadable attempt does not undo a readable one
            for m in run.models:
                if m in (r["stored"] or ()) and m in current:
                    entry["from"][m] = (s, i)
                    entry["errors"].pop(m, None)
                elif r[f"error:{m}"] is not None and m not in entry["from"]:
                    entry["errors"][m] = r[f"error:{m}"]
    report.files = len(plan)

    states = store.track_states()
    done = {m: store.tracks_with_space(m) for m in keys}
    pending: list[TrackRecord] = []
    written: set[str] = set()

    def flush() -> None:
        store.write_tracks(pending)
        report.stored += len(pending)
        pending.clear()

    wanted: dict[str, dict[int, list[str]]] = {}
    for p, entry in plan.items():
        known = states.get(p)
        same = known is not None and known[1] == entry["hash"]
        todo = [m for m in entry["from"] if not (same and known[0] in done[m])]
        if not todo and entry["from"]:
            report.skipped += 1
        for m in todo:
            s, i = entry["from"][m]
            wanted.setdefault(s, {}).setdefault(i, []).append(m)
        report.failures.extend(Failure(p, m, msg) for m, msg in entry["errors"].items())
    try:
        for s in order:
            if s not in wanted:
                continue
            with fs.open_input_file(s) as fh:
                table = pq.read_table(fh)
            run = runs[s][0]
            for i, models in sorted(wanted[s].items()):
                row = table.slice(i, 1).to_pylist()[0]
                p = local(row["path"], row["path_escaped"])
                try:
                    record = _record(row, p, models, run, window_s, hop_s, plan[p]["hash"])
                except BadInput as exc:
                    report.failures.extend(Failure(p, m, str(exc)) for m in models)
                    continue
                if p in written or any(r.path == p for r in pending):  # a second shard adds models to a track of this ingest
                    flush()
                    states = store.track_states()
                known = states.get(p)
                if known is not None and known[1] == record.content_hash:
                    record.track_id = known[0]
                pending.append(record)
                written.add(p)
                report.audio_s += record.duration_s
                if len(pending) >= INGEST_BATCH:
                    flush()
        flush()
        store.commit_staged(report.replaced_spaces)
    finally:
        flush()
        store.record_failures(run_id, [(f.path, f.model, f.message) for f in report.failures])
        if metadata:
            store.set_metadata({p: m for p, m in metadata.items() if p in plan})
    return report


def _live_provenance(live: dict) -> Provenance:
    return Provenance(live["space"], live["model"], int(live["dim"]), str(live["adapter_version"]),
                      str(live["weights_sha256"]), source=str(live["source"]))


def _record(row: dict, path: str, models: list[str], run: ShardRun, window_s: float, hop_s: float,
            content_hash: str) -> TrackRecord:
    """A shard row's track and the chosen models' vectors, checked against the grid.

    Raises
    ------
    BadInput
        One line, when the row's segments are not the grid of its duration
        or a vector column does not hold n × dim finite values.
    """
    duration = row["duration_s"]
    segments = np.asarray(row["segments"] or [], np.float64).reshape(-1, 2)
    if duration is None or not np.array_equal(segments, audio.segment_grid(duration, window_s, hop_s)):
        raise BadInput("its shard row's segments are not the store's grid for its duration; extract it again")
    vectors = {}
    for m in models:
        for p in run.models[m]:
            values = np.asarray(row[f"vector:{p.space}"] or [], np.float32)
            if values.size != len(segments) * p.dim or not np.isfinite(values).all():
                raise BadInput(f"its shard row holds {values.size} values for {p.space}, not {len(segments)} × {p.dim} "
                               "finite ones; extract it again")
            vectors[p.space] = values.reshape(len(segments), p.dim)
    return TrackRecord(path, content_hash, float(duration), int(row["sample_rate"]), int(row["channels"]),
                       row["format"], segments, vectors)
