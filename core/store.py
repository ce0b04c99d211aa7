"""The DuckDB store: schema and every SQL statement of the project.

Design rules (see DESIGN.md):

* A track is its absolute path; its content hash detects changes, and a
  changed file replaces all its old rows.
* A store has one segment grid, fixed by its first extraction.
* Each *space* (a model key, or ``MODEL/OUTPUT``) has its own table with one
  fixed-size ``FLOAT[dim]`` vector per segment, and a provenance row (adapter
  version, weights digest, grid, time).  New provenance replaces the old
  vectors instead of mixing with them.
* Writes are grouped into one transaction per batch of tracks, so an
  interrupted run leaves no half-written track and the next run resumes.
* The store holds arrays and knows no models: it reads and writes ids,
  vectors and rows, and the track-level (scene) mean is ``core.spaces``'s.
* DuckDB locks the whole file against other processes while any connection
  is open, so every operation opens its own connection, closes it at once,
  and retries with backoff on a lock conflict.  Connections are never shared
  between threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import time
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import BadInput, DimensionMismatch, GridMismatch, StoreError, check_level
from core.jsonable import jsonable

DEFAULT_DB = Path(__file__).resolve().parents[1] / "cache" / "embeddings.duckdb"
SCHEMA_VERSION = "1"

#: How long an operation keeps retrying while another process holds the file.
LOCK_TIMEOUT_S = 30.0

#: Columns of every row :meth:`Store.rows` and :meth:`Store.segments_frame` return that are not user
#: metadata.  A metadata key of the same name is read back as ``meta_KEY``, so it never overwrites them.
RESERVED_COLUMNS = ("segment_id", "track_id", "idx", "start_s", "end_s", "path",
                    "track_duration_s", "track_sample_rate", "track_channels")

#: The select list of those columns, over ``segments s`` and ``tracks t``.
_ROW_COLUMNS = ("s.segment_id, s.track_id, s.idx, s.start_s, s.end_s, t.path, t.duration_s AS track_duration_s, "
                "t.sample_rate AS track_sample_rate, t.channels AS track_channels")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS run_ids START 1;
CREATE SEQUENCE IF NOT EXISTS space_ids START 1;
CREATE TABLE IF NOT EXISTS tracks (
    track_id BIGINT PRIMARY KEY,
    path VARCHAR UNIQUE NOT NULL,
    content_hash VARCHAR,
    duration_s DOUBLE,
    sample_rate INTEGER,
    channels INTEGER,
    format VARCHAR,
    metadata JSON,
    added_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS segments (
    segment_id BIGINT PRIMARY KEY,
    track_id BIGINT NOT NULL,
    idx INTEGER NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    on_grid BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS spaces (
    space VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    adapter_version VARCHAR,
    weights_sha256 VARCHAR,
    window_s DOUBLE,
    hop_s DOUBLE,
    source VARCHAR,
    tag_names JSON,
    created_at TIMESTAMP,
    data_version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS runs (run_id BIGINT PRIMARY KEY, started_at TIMESTAMP, models JSON);
CREATE TABLE IF NOT EXISTS failures (
    run_id BIGINT, path VARCHAR, model VARCHAR, message VARCHAR, failed_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS projections (
    space VARCHAR, level VARCHAR, method VARCHAR, params VARCHAR, data_version BIGINT,
    created_at TIMESTAMP, seconds DOUBLE, info JSON,
    ids BIGINT[], x FLOAT[], y FLOAT[]
);
CREATE TABLE IF NOT EXISTS cached_results (
    kind VARCHAR, key VARCHAR, data_version VARCHAR, created_at TIMESTAMP, value JSON
);
"""


@dataclasses.dataclass
class TrackRecord:
    """One decoded track and everything computed for it, written atomically."""

    path: str
    content_hash: str
    duration_s: float
    sample_rate: int
    channels: int
    format: str
    segments: np.ndarray  # (n, 2) seconds
    vectors: dict[str, np.ndarray]  # space key -> (n, dim)
    metadata: dict | None = None
    track_id: int | None = None  # set when the track's segments already exist


@dataclasses.dataclass(frozen=True)
class Provenance:
    space: str
    model: str
    dim: int
    adapter_version: str
    weights_sha256: str
    source: str = "extracted"
    tag_names: tuple[str, ...] | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used by another process" in text


class Store:
    """A DuckDB file of tracks, segments, embeddings, projections and failures.

    Parameters
    ----------
    path : str or Path
        The database file; created with its schema on first use.
    """

    def __init__(self, path: str | Path = DEFAULT_DB):
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute(_SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])

    # ------------------------------------------------------------------ connections

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short-lived connection, retried with backoff while another process holds the file."""
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        delay = 0.02
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.IOException as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise StoreError(f"The database {self.path.name} is busy or unreadable ({str(exc).splitlines()[0]}); "
                                     "close the program holding it, or pass another --db.") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------ grid

    def grid(self) -> tuple[float, float] | None:
        with self.connect(read_only=True) as con:
            rows = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('window_s', 'hop_s')").fetchall())
        if "window_s" not in rows:
            return None
        return float(rows["window_s"]), float(rows["hop_s"])

    def ensure_grid(self, window_s: float, hop_s: float) -> None:
        """Fix the store's grid on first use; refuse a different one later."""
        if not (window_s > 0 and hop_s > 0):
            raise BadInput(f"The segment window and hop must be positive seconds, not {window_s:g} and {hop_s:g}; "
                           "pass for example --segment 3 --hop 3.")
        current = self.grid()
        if current is None:
            with self.connect() as con:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('window_s', ?), ('hop_s', ?)", [str(window_s), str(hop_s)])
            return
        if abs(current[0] - window_s) > 1e-9 or abs(current[1] - hop_s) > 1e-9:
            raise GridMismatch(
                f"This store uses a {current[0]:g} s window with a {current[1]:g} s hop; "
                f"use --segment {current[0]:g} --hop {current[1]:g}, or a new --db for a {window_s:g}/{hop_s:g} s grid."
            )

    # ------------------------------------------------------------------ spaces

    def spaces(self) -> pd.DataFrame:
        """Every stored space with its provenance and row count."""
        with self.connect(read_only=True) as con:
            df = con.execute("SELECT * FROM spaces ORDER BY space").df()
            df["n"] = [_one(con.execute(f"SELECT count(*) FROM {t}"))[0] for t in df["table_name"]]
        return df

    def space(self, space: str) -> dict | None:
        with self.connect(read_only=True) as con:
            df = con.execute("SELECT * FROM spaces WHERE space = ?", [space]).df()
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row["tag_names"] = json.loads(row["tag_names"]) if isinstance(row["tag_names"], str) else None
        return row

    def require_space(self, space: str) -> dict:
        """:meth:`space`, refusing a key the store does not hold with the keys it does.

        Raises
        ------
        BadInput
            Listing the stored spaces.
        """
        info = self.space(space)
        if info is None:
            with self.connect(read_only=True) as con:
                have = [name for (name,) in con.execute("SELECT space FROM spaces ORDER BY space").fetchall()]
            raise BadInput(f"No embeddings for {space!r} in {self.path.name} (stored: {', '.join(have) or 'none'}); "
                           "extract that model first or choose a stored one.")
        return info

    def prepare_space(self, prov: Provenance) -> bool:
        """Create a space's table, or empty it when its provenance changed.

        Returns
        -------
        bool
            True when stored vectors were dropped because the adapter version
            or the weights changed (old and new are never mixed).
        """
        grid = self.grid() or (None, None)
        tags = json.dumps(list(prov.tag_names)) if prov.tag_names else None
        with self.transaction() as con:
            row = _one(con.execute(
                "SELECT table_name, dim, adapter_version, weights_sha256 FROM spaces WHERE space = ?", [prov.space]
            ))
            if row is not None:
                table, dim, version, sha = row
                if (dim, version, sha) == (prov.dim, prov.adapter_version, prov.weights_sha256):
                    return False
                if prov.source == "imported" and dim != prov.dim:
                    raise DimensionMismatch(
                        f"{prov.space} holds {dim}-D vectors; the file has {prov.dim}-D ones. Import under another --model key."
                    )
                con.execute(f"DROP TABLE {table}")
                con.execute("DELETE FROM spaces WHERE space = ?", [prov.space])
                con.execute("DELETE FROM projections WHERE space = ?", [prov.space])
                replaced = True
            else:
                replaced = False
            table = "emb_" + str(_one(con.execute("SELECT nextval('space_ids')"))[0])
            con.execute(f"CREATE TABLE {table} (segment_id BIGINT NOT NULL, vector FLOAT[{int(prov.dim)}] NOT NULL)")
            con.execute(
                "INSERT INTO spaces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                [prov.space, prov.model, table, prov.dim, prov.adapter_version, prov.weights_sha256,
                 grid[0], grid[1], prov.source, tags, _now()],
            )
        return replaced

    # ------------------------------------------------------------------ tracks

    def track_states(self) -> dict[str, tuple[int, str | None]]:
        """path -> (track_id, content_hash) for every stored track."""
        with self.connect(read_only=True) as con:
            return {p: (t, h) for t, p, h in con.execute("SELECT track_id, path, content_hash FROM tracks").fetchall()}

    def tracks_with_space(self, space: str) -> set[int]:
        """Tracks whose grid segments all have a vector in a space (written together, so one implies all)."""
        with self.connect(read_only=True) as con:
            row = _one(con.execute("SELECT table_name FROM spaces WHERE space = ?", [space]))
            if row is None:
                return set()
            rows = con.execute(
                f"SELECT DISTINCT s.track_id FROM {row[0]} e JOIN segments s USING (segment_id)"
            ).fetchall()
        return {r[0] for r in rows}

    def track_segments(self, track_id: int) -> np.ndarray:
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT start_s, end_s FROM segments WHERE track_id = ? AND on_grid ORDER BY idx", [track_id]
            ).fetchall()
        return np.asarray(rows, dtype=np.float64).reshape(-1, 2)

    def write_tracks(self, records: list[TrackRecord]) -> None:
        """Write a batch of tracks and their vectors in one transaction.

        A record without ``track_id`` is a new or changed file: any old rows
        of its path (segments, vectors, failures) are deleted first.  A record
        with ``track_id`` only adds vectors for spaces it does not have yet.
        """
        if not records:
            return
        with self.transaction() as con:
            tables = dict(con.execute("SELECT space, table_name FROM spaces").fetchall())
            new = [r for r in records if r.track_id is None]
            self._delete_tracks(con, [r.path for r in new])
            first_track = _one(con.execute("SELECT COALESCE(max(track_id), 0) + 1 FROM tracks"))[0]
            first_segment = _one(con.execute("SELECT COALESCE(max(segment_id), 0) + 1 FROM segments"))[0]
            track_ids = {id(r): first_track + i for i, r in enumerate(new)}
            counts = np.array([len(r.segments) for r in new], dtype=np.int64)
            starts = first_segment + np.concatenate([[0], np.cumsum(counts)[:-1]]) if new else []
            seg_ids = {id(r): np.arange(s, s + c, dtype=np.int64) for r, s, c in zip(new, starts, counts)}
            if new:
                now = _now()
                con.register("new_tracks", pd.DataFrame({
                    "track_id": [track_ids[id(r)] for r in new], "path": [r.path for r in new],
                    "content_hash": [r.content_hash for r in new], "duration_s": [r.duration_s for r in new],
                    "sample_rate": [r.sample_rate for r in new], "channels": [r.channels for r in new],
                    "format": [r.format for r in new],
                    "metadata": [json.dumps(r.metadata) if r.metadata else None for r in new],
                    "added_at": [now] * len(new)}))
                con.execute("INSERT INTO tracks SELECT track_id, path, content_hash, duration_s, sample_rate, channels, "
                            "format, metadata::JSON, added_at FROM new_tracks")
                con.register("new_segments", pd.DataFrame({
                    "segment_id": np.concatenate([seg_ids[id(r)] for r in new]),
                    "track_id": np.repeat([track_ids[id(r)] for r in new], counts),
                    "idx": np.concatenate([np.arange(c, dtype=np.int32) for c in counts]),
                    "start_s": np.concatenate([r.segments[:, 0] for r in new]),
                    "end_s": np.concatenate([r.segments[:, 1] for r in new]),
                    "on_grid": np.ones(int(counts.sum()), dtype=bool)}))
                con.execute("INSERT INTO segments SELECT * FROM new_segments")
            old = [r for r in records if r.track_id is not None]
            if old:
                rows = con.execute(
                    "SELECT track_id, segment_id FROM segments WHERE on_grid AND track_id IN (SELECT unnest(?)) "
                    "ORDER BY track_id, idx", [[r.track_id for r in old]]).fetchnumpy()
                by_track = pd.Series(rows["segment_id"]).groupby(rows["track_id"])
                for r in old:
                    seg_ids[id(r)] = by_track.get_group(r.track_id).to_numpy(np.int64)
            for space in sorted({s for r in records for s in r.vectors}):
                holders = [r for r in records if space in r.vectors]
                ids = np.concatenate([seg_ids[id(r)] for r in holders])
                if old:
                    con.execute(f"DELETE FROM {tables[space]} WHERE segment_id IN (SELECT unnest(?))",
                                [ids[np.isin(ids, np.concatenate([seg_ids[id(r)] for r in old]))]])
                _insert_vectors(con, tables[space], ids, np.concatenate([r.vectors[space] for r in holders]))
            done = pd.DataFrame([(r.path, s) for r in records for s in r.vectors], columns=["path", "model"])
            con.register("done_pairs", done)
            con.execute("DELETE FROM failures WHERE (path, model) IN (SELECT (path, model) FROM done_pairs)")
            con.execute(
                "UPDATE spaces SET data_version = data_version + 1 WHERE space IN (SELECT unnest(?))",
                [sorted(set(done["model"]))],
            )

    @staticmethod
    def _delete_tracks(con, paths: list[str]) -> None:
        if not paths:
            return
        ids = [r[0] for r in con.execute("SELECT track_id FROM tracks WHERE path IN (SELECT unnest(?))", [paths]).fetchall()]
        if not ids:
            return
        for (table,) in con.execute("SELECT table_name FROM spaces").fetchall():
            con.execute(
                f"DELETE FROM {table} WHERE segment_id IN (SELECT segment_id FROM segments WHERE track_id IN (SELECT unnest(?)))",
                [ids],
            )
        con.execute("DELETE FROM segments WHERE track_id IN (SELECT unnest(?))", [ids])
        con.execute("DELETE FROM tracks WHERE track_id IN (SELECT unnest(?))", [ids])
        con.execute("UPDATE spaces SET data_version = data_version + 1")

    def set_metadata(self, metadata: dict[str, dict]) -> int:
        """Replace the metadata of stored tracks (path -> {column: value}); returns how many matched."""
        if not metadata:
            return 0
        df = pd.DataFrame({"path": list(metadata), "metadata": [json.dumps(v) for v in metadata.values()]})
        with self.transaction() as con:
            con.register("md", df)
            n = _one(con.execute("SELECT count(*) FROM tracks JOIN md USING (path)"))[0]
            con.execute("UPDATE tracks SET metadata = md.metadata::JSON FROM md WHERE tracks.path = md.path")
            con.unregister("md")
        self.bump_metadata_version()
        return int(n)

    def bump_metadata_version(self) -> None:
        with self.connect() as con:
            con.execute(
                "INSERT OR REPLACE INTO meta SELECT 'metadata_version', "
                "CAST(COALESCE((SELECT CAST(value AS BIGINT) FROM meta WHERE key = 'metadata_version'), 0) + 1 AS VARCHAR)"
            )

    # ------------------------------------------------------------------ runs and failures

    def start_run(self, models: list[str]) -> int:
        with self.connect() as con:
            run_id = _one(con.execute("SELECT nextval('run_ids')"))[0]
            con.execute("INSERT INTO runs VALUES (?, ?, ?)", [run_id, _now(), json.dumps(models)])
        return int(run_id)

    def record_failures(self, run_id: int, failures: list[tuple[str, str, str]]) -> None:
        """Store (path, model, message) rows; a path's older failures for the same model are replaced."""
        if not failures:
            return
        df = pd.DataFrame(failures, columns=["path", "model", "message"])
        df.insert(0, "run_id", run_id)
        df["failed_at"] = _now()
        with self.transaction() as con:
            con.register("f", df)
            con.execute("DELETE FROM failures WHERE (path, model) IN (SELECT (path, model) FROM f)")
            con.execute("INSERT INTO failures SELECT run_id, path, model, message, failed_at FROM f")
            con.unregister("f")

    def failures(self, latest_only: bool = True) -> pd.DataFrame:
        """Failed files; by default only those of each model's latest run."""
        query = "SELECT f.* FROM failures f"
        if latest_only:
            query += """ JOIN (
                SELECT m.model, max(r.run_id) AS run_id
                FROM runs r, unnest(CAST(r.models AS VARCHAR[])) AS m(model) GROUP BY m.model
            ) latest ON f.model = latest.model AND f.run_id = latest.run_id"""
        with self.connect(read_only=True) as con:
            return con.execute(query + " ORDER BY f.path, f.model").df()

    # ------------------------------------------------------------------ reading

    def segments_frame(self, with_metadata: bool = True) -> pd.DataFrame:
        """Every segment with its track's attributes and metadata columns, for views that list them all.

        The columns are those of :meth:`rows`; a caller that needs some rows
        only asks :meth:`rows` for them.
        """
        with self.connect(read_only=True) as con:
            df = con.execute(f"SELECT {_ROW_COLUMNS} FROM segments s JOIN tracks t USING (track_id) ORDER BY s.segment_id").df()
        if with_metadata:
            df = df.merge(self.track_metadata(), on="track_id", how="left")
        return df

    def rows(self, ids: np.ndarray, level: str = "segment") -> pd.DataFrame:
        """Path, times, track attributes and metadata of some segments or tracks, read by id.

        Only the rows asked for are read (a join on the ids, never a read of
        every segment), so labelling k search results or one clicked point
        costs milliseconds whatever the store's size.

        Parameters
        ----------
        ids : np.ndarray [shape=(n,), dtype=int]
            Segment ids, or track ids at track level; any order, repeats allowed.
        level : {"segment", "track"}
            At track level ``start_s``/``end_s`` span the whole track, and
            ``segment_id``/``idx`` are those of its first segment.

        Returns
        -------
        pd.DataFrame [shape=(n, ...)]
            In the order of ``ids``: :data:`RESERVED_COLUMNS`, then one column
            per metadata key of these tracks (see :meth:`track_metadata`).

        Raises
        ------
        StoreError
            If an id is not in the store (the caller holds ids of an older version).
        """
        check_level(level)
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        source = (
            "wanted w JOIN segments s ON s.segment_id = w.id" if level == "segment" else
            """(SELECT w.pos, w.id AS track_id, first(g.segment_id ORDER BY g.start_s, g.segment_id) AS segment_id,
                       first(g.idx ORDER BY g.start_s, g.segment_id) AS idx,
                       min(g.start_s) AS start_s, max(g.end_s) AS end_s
                FROM wanted w JOIN segments g ON g.track_id = w.id GROUP BY w.pos, w.id) s"""
        )
        with self.connect(read_only=True) as con:
            _register_ids(con, wanted)
            df = con.execute(f"SELECT {_ROW_COLUMNS} FROM {source} JOIN tracks t USING (track_id) ORDER BY pos").df()
            meta = self._metadata_frame(con, np.unique(df["track_id"].to_numpy(np.int64)))
        _check_found(wanted, len(df), level)
        return df.merge(meta, on="track_id", how="left")

    def segment_tracks(self, segment_ids: np.ndarray) -> np.ndarray:
        """The track of each segment: the one segment → track lookup.

        Parameters
        ----------
        segment_ids : np.ndarray [shape=(n,), dtype=int]

        Returns
        -------
        track_ids : np.ndarray [shape=(n,), dtype=int64]
            In the order of ``segment_ids``.

        Raises
        ------
        StoreError
            If a segment is not in the store.
        """
        wanted = np.asarray(segment_ids, dtype=np.int64).reshape(-1)
        with self.connect(read_only=True) as con:
            _register_ids(con, wanted)
            found = con.execute("SELECT s.track_id FROM wanted w JOIN segments s ON s.segment_id = w.id ORDER BY w.pos"
                                ).fetchnumpy()["track_id"]
        _check_found(wanted, len(found), "segment")
        return np.asarray(found, dtype=np.int64)

    def track_metadata(self) -> pd.DataFrame:
        """One row per track: ``track_id`` plus one column per metadata key.

        A key named like a reserved column (:data:`RESERVED_COLUMNS`) becomes
        ``meta_KEY``.
        """
        with self.connect(read_only=True) as con:
            return self._metadata_frame(con)

    @staticmethod
    def _metadata_frame(con, track_ids: np.ndarray | None = None) -> pd.DataFrame:
        """:meth:`track_metadata` of some tracks (all by default), on an open connection."""
        where = "" if track_ids is None else "WHERE track_id IN (SELECT unnest(?))"
        rows = con.execute(f"SELECT track_id, metadata FROM tracks {where} ORDER BY track_id",
                           [] if track_ids is None else [track_ids]).fetchall()
        meta = pd.DataFrame([json.loads(m) if m else {} for _, m in rows])
        meta.insert(0, "track_id", np.array([t for t, _ in rows], dtype=np.int64))
        return meta.rename(columns={c: f"meta_{c}" for c in meta.columns[1:] if c in RESERVED_COLUMNS})

    def tracks_frame(self) -> pd.DataFrame:
        with self.connect(read_only=True) as con:
            return con.execute("SELECT * FROM tracks ORDER BY track_id").df()

    def vectors(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        """A space's segment vectors as stored, straight from DuckDB's Arrow output into numpy.

        Returns
        -------
        ids : np.ndarray [shape=(n,), dtype=int64]
            Sorted segment ids.
        vectors : np.ndarray [shape=(n, dim), dtype=float32]

        Raises
        ------
        BadInput
            If the store holds no such space.
        """
        info = self.require_space(space)
        with self.connect(read_only=True) as con:
            table = con.sql(f"SELECT segment_id, vector FROM {info['table_name']}").to_arrow_table()
        ids = table.column("segment_id").to_numpy()
        vec = table.column("vector").combine_chunks()
        flat = vec.values.to_numpy(zero_copy_only=False) if len(vec) else np.zeros(0, np.float32)
        matrix = flat.reshape(len(ids), int(info["dim"])).astype(np.float32, copy=False)
        if len(ids) > 1 and (np.diff(ids) < 0).any():  # sorting in numpy is cheaper than ORDER BY on wide rows
            order = np.argsort(ids, kind="stable")
            ids, matrix = ids[order], matrix[order]
        return ids, matrix

    def data_version(self, space: str) -> int:
        info = self.space(space)
        return -1 if info is None else int(info["data_version"])

    def metadata_version(self) -> int:
        with self.connect(read_only=True) as con:
            row = _one(con.execute("SELECT value FROM meta WHERE key = 'metadata_version'"))
        return int(row[0]) if row else 0

    def info(self) -> dict:
        """Counts for ``core info``: tracks, segments, vectors per space, failures, missing files."""
        with self.connect(read_only=True) as con:
            tracks = _one(con.execute("SELECT count(*) FROM tracks"))[0]
            segments = _one(con.execute("SELECT count(*) FROM segments"))[0]
            paths = [p for (p,) in con.execute("SELECT path FROM tracks WHERE content_hash IS NOT NULL").fetchall()]
        spaces = self.spaces()
        failures = self.failures(latest_only=True)
        missing = [p for p in paths if not os.path.exists(p)]
        return {
            "tracks": int(tracks),
            "segments": int(segments),
            "embeddings": {s: int(n) for s, n in zip(spaces["space"], spaces["n"])},
            "failures": int(failures["path"].nunique()) if len(failures) else 0,
            "missing_files": len(missing),
            "missing_paths": missing,
            "grid": dict(zip(("window_s", "hop_s"), self.grid() or (None, None))),
            "db": str(self.path),
        }

    # ------------------------------------------------------------------ projections and cached results

    def get_projection(self, space: str, level: str, method: str, params: str, data_version: int) -> dict | None:
        with self.connect(read_only=True) as con:
            row = _one(con.execute(
                """SELECT ids, x, y, seconds, info FROM projections
                   WHERE space = ? AND level = ? AND method = ? AND params = ? AND data_version = ?""",
                [space, level, method, params, data_version],
            ))
        if row is None:
            return None
        ids, x, y, seconds, info = row
        return {"ids": np.asarray(ids, dtype=np.int64), "xy": np.stack([x, y], axis=1).astype(np.float32),
                "seconds": seconds, "info": json.loads(info) if info else {}}

    def put_projection(self, space: str, level: str, method: str, params: str, data_version: int,
                       ids: np.ndarray, xy: np.ndarray, seconds: float, info: dict) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM projections WHERE space = ? AND level = ? AND method = ? AND params = ?",
                        [space, level, method, params])
            con.execute(
                "INSERT INTO projections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [space, level, method, params, data_version, _now(), seconds, json.dumps(info),
                 np.asarray(ids, dtype=np.int64), np.asarray(xy[:, 0], dtype=np.float32),
                 np.asarray(xy[:, 1], dtype=np.float32)],
            )

    def get_cached(self, kind: str, key: str, data_version: str):
        with self.connect(read_only=True) as con:
            row = _one(con.execute(
                "SELECT value FROM cached_results WHERE kind = ? AND key = ? AND data_version = ?", [kind, key, data_version]
            ))
        return json.loads(row[0]) if row else None

    def put_cached(self, kind: str, key: str, data_version: str, value) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM cached_results WHERE kind = ? AND key = ?", [kind, key])
            con.execute("INSERT INTO cached_results VALUES (?, ?, ?, ?, ?)",
                        [kind, key, data_version, _now(), json.dumps(jsonable(value), allow_nan=False)])

    # ------------------------------------------------------------------ bulk vectors

    def add_imported(self, prov: Provenance, frame: pd.DataFrame, vectors: np.ndarray) -> int:
        """Store precomputed vectors with their own segments (``path, start_s, end_s``).

        Tracks are matched by path; unknown paths become tracks without
        content hash (their audio may not be reachable).  Segments that
        coincide with existing ones (same path, start and end) are reused,
        so imported vectors can be compared with extracted ones there.
        """
        self.prepare_space(prov)
        frame = frame.reset_index(drop=True)
        with self.transaction() as con:
            table = _one(con.execute("SELECT table_name FROM spaces WHERE space = ?", [prov.space]))[0]
            known = dict(con.execute("SELECT path, track_id FROM tracks").fetchall())
            meta_cols = [c for c in frame.columns if c not in ("path", "start_s", "end_s", "vector")]
            for path, group in frame.groupby("path", sort=False):
                if path not in known:
                    track_id = _one(con.execute("SELECT COALESCE(max(track_id), 0) + 1 FROM tracks"))[0]
                    meta = group.iloc[0][meta_cols].dropna().to_dict() if meta_cols else {}
                    con.execute(
                        "INSERT INTO tracks VALUES (?, ?, NULL, ?, NULL, NULL, 'imported', ?, ?)",
                        [track_id, path, float(group["end_s"].max()), json.dumps(jsonable(meta)) if meta else None, _now()],
                    )
                    known[path] = track_id
            frame = frame.assign(track_id=frame["path"].map(known))
            con.register("imp", frame[["track_id", "start_s", "end_s"]].assign(row=np.arange(len(frame))))
            con.execute(
                """INSERT INTO segments
                   SELECT (SELECT COALESCE(max(segment_id), 0) FROM segments) + row_number() OVER (), i.track_id, -1, i.start_s, i.end_s, FALSE
                   FROM (SELECT DISTINCT track_id, start_s, end_s FROM imp) i
                   WHERE NOT EXISTS (SELECT 1 FROM segments s WHERE s.track_id = i.track_id
                                     AND abs(s.start_s - i.start_s) < 1e-6 AND abs(s.end_s - i.end_s) < 1e-6)"""
            )
            ids = con.execute(
                """SELECT (SELECT min(s.segment_id) FROM segments s WHERE s.track_id = imp.track_id
                           AND abs(s.start_s - imp.start_s) < 1e-6 AND abs(s.end_s - imp.end_s) < 1e-6)
                   FROM imp ORDER BY row"""
            ).fetchnumpy()
            seg_ids = np.asarray(list(ids.values())[0], dtype=np.int64)
            con.unregister("imp")
            con.execute(f"DELETE FROM {table} WHERE segment_id IN (SELECT unnest(?))", [seg_ids])
            _insert_vectors(con, table, seg_ids, vectors)
            con.execute("UPDATE spaces SET data_version = data_version + 1 WHERE space = ?", [prov.space])
        return len(seg_ids)


def metadata_columns(frame: pd.DataFrame) -> list[str]:
    """The user metadata columns of a frame from :meth:`Store.rows` or :meth:`Store.segments_frame`."""
    return [c for c in frame.columns if c not in RESERVED_COLUMNS]


def _one(result) -> tuple | None:
    """The first row, consuming the result (DuckDB 2 refuses new work on a connection with an unfinished one)."""
    rows = result.fetchall()
    return rows[0] if rows else None


def _register_ids(con, ids: np.ndarray) -> None:
    """Ids to look up, as the table ``wanted(id, pos)`` of this connection (``pos`` keeps the caller's order)."""
    con.register("wanted", pa.table({"id": ids, "pos": np.arange(len(ids), dtype=np.int64)}))


def _check_found(wanted: np.ndarray, found: int, level: str) -> None:
    if found != len(wanted):
        raise StoreError(f"{len(wanted) - found} of the {len(wanted)} {level} ids asked for are not in this store; "
                         "it changed since they were read: reload the view.")


def _insert_vectors(con, table: str, segment_ids: np.ndarray, vectors: np.ndarray) -> None:
    """Bulk insert through Arrow: a fixed-size list over the flat float32 buffer, no Python loop."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(segment_ids) != len(vectors):
        raise StoreError(f"{len(vectors)} vectors for {len(segment_ids)} segments")
    if not np.isfinite(vectors).all():
        raise StoreError("refusing to store non-finite vectors")
    dim = vectors.shape[1]
    arr = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    batch = pa.table({"segment_id": pa.array(np.asarray(segment_ids, dtype=np.int64)), "vector": arr})
    con.register("vec_batch", batch)
    # DuckDB's float codecs shrink dense embeddings by about 1 % (by 25 % for
    # ReLU outputs that are half zeros) but halve insert speed: 200k x 512
    # vectors take 2.8 s instead of 5.6 s.
    con.execute("SET force_compression = 'uncompressed'")
    try:
        con.execute(f"INSERT INTO {table} SELECT segment_id, vector FROM vec_batch")
    finally:
        con.execute("RESET force_compression")
        con.unregister("vec_batch")
