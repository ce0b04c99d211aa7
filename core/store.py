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
* Writers are not starved by readers: a writer announces itself by locking
  a file beside the store (``NAME.duckdb.writer``) before it connects, and
  readers wait while it is locked, so the writer waits at most for the reads
  already running.  Opening an up-to-date store writes nothing.
* A track's path is stored as UTF-8 text plus a flag saying it is
  ``%XX``-escaped (:mod:`core.paths`): names that are not UTF-8 are kept
  exactly, and the pair (path, path_escaped) is the track's identity.
* Cached results (projections, metrics, clusters) are keyed by a space's
  ``data_version``, drawn from one sequence that only grows, so a replaced
  space can never meet a result computed on its predecessor.
* A damaged or foreign file is refused with a one-line :class:`StoreError`.
* A store is data, never code: every reading connection (so every one to a
  published collection) runs with DuckDB's ``enable_external_access`` off
  (only an import, a writer, reads a file through SQL), a file holding views or
  macros is refused on open, and every table
  name read from the file is checked against the names this module makes
  before it is quoted into a statement.  A crafted file can then neither
  read nor write anything beside itself.
* A published collection (``core publish``) stores track paths relative to
  its own folder; :meth:`Store.file` resolves them, so the folder can move.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import math
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import BadInput, DimensionMismatch, GridMismatch, StoreError, check_level
from core.jsonable import jsonable
from core.paths import from_text, is_url, to_text

DEFAULT_DB = Path(__file__).resolve().parents[1] / "cache" / "embeddings.duckdb"
SCHEMA_VERSION = 2

#: How long an operation keeps retrying while another process holds the file,
#: and how long a reader waits for an announced writer before it tries anyway.
LOCK_TIMEOUT_S = 30.0

#: Shortest segment hop a grid may have: 72,000 segments per hour of audio.
MIN_HOP_S = 0.05

#: The only table names a store's registry may hold: those :func:`_new_space` makes.
_SPACE_TABLE = re.compile(r"emb_[0-9]{1,18}")

#: Every reading connection's settings (every connection to a published collection): SQL touches no other
#: file.  Writers keep DuckDB's defaults: without external access a writer was seen holding the file long
#: after its commit (an import killed halfway through that time had already committed); a store a writer
#: opens has passed the same checks (:func:`_refuse_code`, :func:`_ident`).
_READER_CONFIG = {"enable_external_access": False}

#: Columns of every row :meth:`Store.rows` and :meth:`Store.segments_frame` return that are not user
#: metadata.  A metadata key of the same name is read back as ``meta_KEY``, so it never overwrites them.
#: ``path`` is stored text and ``path_escaped`` says whether it is ``%XX``-escaped (:mod:`core.paths`).
RESERVED_COLUMNS = ("segment_id", "track_id", "idx", "start_s", "end_s", "path", "path_escaped",
                    "track_duration_s", "track_sample_rate", "track_channels")

#: The select list of those columns, over ``segments s`` and ``tracks t``.
_ROW_COLUMNS = ("s.segment_id, s.track_id, s.idx, s.start_s, s.end_s, t.path, t.path_escaped, "
                "t.duration_s AS track_duration_s, t.sample_rate AS track_sample_rate, t.channels AS track_channels")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS run_ids START 1;
CREATE SEQUENCE IF NOT EXISTS space_ids START 1;
CREATE TABLE IF NOT EXISTS tracks (
    track_id BIGINT PRIMARY KEY,
    path VARCHAR NOT NULL,
    content_hash VARCHAR,
    duration_s DOUBLE,
    sample_rate INTEGER,
    channels INTEGER,
    format VARCHAR,
    metadata JSON,
    added_at TIMESTAMP,
    path_escaped BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (path, path_escaped)
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
    run_id BIGINT, path VARCHAR, model VARCHAR, message VARCHAR, failed_at TIMESTAMP, path_escaped BOOLEAN DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS projections (
    space VARCHAR, level VARCHAR, method VARCHAR, params VARCHAR, data_version BIGINT,
    created_at TIMESTAMP, seconds DOUBLE, info JSON,
    ids BIGINT[], x FLOAT[], y FLOAT[]
);
CREATE TABLE IF NOT EXISTS cached_results (
    kind VARCHAR, key VARCHAR, data_version VARCHAR, created_at TIMESTAMP, value JSON
);
CREATE TABLE IF NOT EXISTS staged_spaces AS SELECT * FROM spaces LIMIT 0;
"""

#: Schema 1 → 2: tracks identified by (path, path_escaped), failures flagged the same way, a staging
#: table for re-extractions, and data versions from one growing sequence (started past every version
#: already used, so that no cached result of an older space can match).
_MIGRATE_1_TO_2 = """
ALTER TABLE tracks RENAME TO tracks_v1;
CREATE TABLE tracks (
    track_id BIGINT PRIMARY KEY, path VARCHAR NOT NULL, content_hash VARCHAR, duration_s DOUBLE,
    sample_rate INTEGER, channels INTEGER, format VARCHAR, metadata JSON, added_at TIMESTAMP,
    path_escaped BOOLEAN NOT NULL DEFAULT FALSE, UNIQUE (path, path_escaped)
);
INSERT INTO tracks SELECT *, FALSE FROM tracks_v1;
DROP TABLE tracks_v1;
ALTER TABLE failures ADD COLUMN IF NOT EXISTS path_escaped BOOLEAN DEFAULT FALSE;
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


def _valid_grid(window_s, hop_s) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (window_s, hop_s)) and hop_s >= MIN_HOP_S


def check_grid(window_s: float, hop_s: float) -> None:
    """Refuse a segment grid that cannot be stored: window and hop finite and > 0, hop ≥ :data:`MIN_HOP_S`.

    Raises
    ------
    BadInput
        One line saying which value to change.
    """
    for flag, value in (("--segment", window_s), ("--hop", hop_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise BadInput(f"{flag} must be positive, a finite number of seconds, not {value!r}; "
                           "pass for example --segment 3 --hop 3.")
    if hop_s < MIN_HOP_S:
        raise BadInput(f"A {hop_s:g} s hop would cut {3600 / hop_s:,.0f} segments per hour of audio; "
                       f"use --hop {MIN_HOP_S:g} or longer.")


def _is_lock_error(exc: Exception) -> bool:
    """Another process holds the file, or another thread of this one holds it with other settings."""
    text = str(exc).lower()  # not "lock" alone: "block" is in DuckDB's checksum errors
    return any(s in text for s in ("could not set lock", "conflicting lock", "being used by another process",
                                   "different configuration"))


def _is_damage(exc: Exception) -> bool:
    """DuckDB's errors for a file it cannot read (cut off, flipped bits), as opposed to a wrong statement."""
    damage = (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException, duckdb.FatalException)
    return isinstance(exc, damage) or type(exc) is duckdb.Error


@dataclasses.dataclass
class WaitStats:
    """How long this Store's writes waited for the file (other processes' connections and writers)."""

    writes: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.writes += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)


def _poll_lock(fd: int, operation: int, deadline: float) -> bool:
    """Take an ``flock`` without blocking, retrying with backoff until the deadline; False if it never came free."""
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.05)


#: Writer-intent locks this thread holds (store path -> count): its own reads must not wait for them.
_held = threading.local()


class Store:
    """A DuckDB file of tracks, segments, embeddings, projections and failures.

    Parameters
    ----------
    path : str or Path
        The database file; created with its schema on first use, brought up
        to date when an older version made it, and refused when it is
        damaged, a folder, or a DuckDB file that is not a store.
    """

    def __init__(self, path: str | Path = DEFAULT_DB, *, read_only: bool = False):
        self.path = Path(path).expanduser().resolve()
        self.read_only = read_only
        self.write_wait = WaitStats()
        version = self._schema_version()
        self.read_only = read_only or self.published
        if version == SCHEMA_VERSION:
            return
        if read_only:
            found = "no store" if version is None else f"schema {version}, not {SCHEMA_VERSION}"
            raise StoreError(f"{self.path.name} cannot be opened read-only ({found}); open it once with the "
                             "command line to create or upgrade it.")
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(f"{self.path.name} was made by a newer version of this program (schema {version}); "
                             "upgrade it, or pass another --db.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as con:
            has_meta = _one(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'meta'"))[0]
            row = _one(con.execute("SELECT value FROM meta WHERE key = 'schema_version'")) if has_meta else None
            if row is not None and row[0] == "1":  # read again here: another process may have migrated it meanwhile
                con.execute(_MIGRATE_1_TO_2)
            con.execute(_SCHEMA)
            first = _one(con.execute("SELECT COALESCE(max(data_version), 0) + 1 FROM spaces"))[0]
            con.execute(f"CREATE SEQUENCE IF NOT EXISTS data_versions START {int(first)}")
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])

    #: True for a collection written by ``core publish``: its track paths are relative to its folder.
    published = False

    def _schema_version(self) -> int | None:
        """The schema version of the file, or None for a new (absent or empty) one; refuses a file holding code."""
        if self.path.is_dir():
            raise StoreError(f"{self.path.name} is a folder, not a database file; pass a file name to --db.")
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as fh:
            if fh.read(12)[8:12] != b"DUCK":
                raise StoreError(f"{self.path.name} is not a DuckDB database file; pass another --db.")
        with self.connect(read_only=True) as con:
            tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            if not tables:
                return None
            if "meta" not in tables:
                raise StoreError(f"{self.path.name} is a DuckDB database but not an embedding store; pass another --db.")
            _refuse_code(con, self.path.name, tables)
            row = _one(con.execute("SELECT value FROM meta WHERE key = 'schema_version'"))
            self.published = _one(con.execute("SELECT value FROM meta WHERE key = 'published_at'")) is not None
        try:
            return int(row[0])
        except (TypeError, ValueError):
            raise StoreError(f"{self.path.name} has no readable schema version; it is damaged or not a store.") from None

    # ------------------------------------------------------------------ connections

    @property
    def _intent_path(self) -> Path:
        return self.path.with_name(self.path.name + ".writer")

    def _holds_intent(self) -> bool:
        return getattr(_held, "paths", {}).get(self.path, 0) > 0

    @contextlib.contextmanager
    def _writer_intent(self, deadline: float) -> Iterator[None]:
        """Announce a writer: an exclusive lock on the intent file, kept until its connection is closed.

        Writers queue on this lock (DuckDB admits one writing process anyway);
        the lock dies with the process, so a killed writer leaves nothing to clean up.
        """
        if self._holds_intent():
            yield
            return
        try:
            fd = os.open(self._intent_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a read-only folder: DuckDB will refuse the write and say why
            yield
            return
        try:
            if not _poll_lock(fd, fcntl.LOCK_EX, deadline):
                raise StoreError(f"The database {self.path.name} is busy: another process kept writing "
                                 f"for {LOCK_TIMEOUT_S:.0f} s; try again.")
            counts = _held.__dict__.setdefault("paths", {})
            counts[self.path] = counts.get(self.path, 0) + 1
            try:
                yield
            finally:
                counts[self.path] -= 1
        finally:
            os.close(fd)  # releases the lock

    def _wait_for_writers(self, deadline: float) -> None:
        """Before a read: wait while a writer has announced itself, up to the deadline (then DuckDB's lock decides)."""
        if self._holds_intent():
            return
        try:
            fd = os.open(self._intent_path, os.O_RDONLY)
        except OSError:  # no writer ever announced itself here
            return
        try:
            if _poll_lock(fd, fcntl.LOCK_SH, deadline):
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short-lived connection, retried with backoff while another process holds the file.

        A writer announces itself first (see :meth:`_writer_intent`) and a
        reader waits while one has; the time a writer waited is added to
        :attr:`write_wait`.  Errors that mean the file is damaged become one
        :class:`StoreError`.
        """
        started = time.monotonic()
        deadline = started + LOCK_TIMEOUT_S
        if self.read_only and not read_only:
            raise StoreError(f"{self.path.name} is open read-only: this shared collection cannot be changed.")
        if read_only:
            self._wait_for_writers(deadline)
        with contextlib.nullcontext() if read_only else self._writer_intent(deadline):
            delay = 0.01
            while True:
                try:
                    reading = read_only and self.path.exists()
                    con = duckdb.connect(str(self.path), read_only=reading, config=_READER_CONFIG if reading else {})
                    break
                except duckdb.Error as exc:
                    if not _is_lock_error(exc):
                        raise StoreError(f"The database {self.path.name} cannot be opened (damaged, or not a "
                                         f"DuckDB file this version reads): {str(exc).splitlines()[0]}") from None
                    if time.monotonic() > deadline:
                        raise StoreError(f"The database {self.path.name} is busy ({str(exc).splitlines()[0]}); "
                                         "close the program holding it, or pass another --db.") from None
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 0.2)
            if not read_only:
                self.write_wait.add(time.monotonic() - started)
            try:
                yield con
            except duckdb.Error as exc:
                if _is_damage(exc):
                    raise StoreError(f"The database {self.path.name} is damaged and cannot be read: "
                                     f"{str(exc).splitlines()[0]}") from None
                raise
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

    def file(self, text: str, escaped: bool = False) -> Path:
        """The file a stored track path names: relative paths (a published collection's) lie under the store's folder."""
        path = Path(from_text(text, escaped))
        return path if path.is_absolute() else self.path.parent / path

    # ------------------------------------------------------------------ grid

    def grid(self) -> tuple[float, float] | None:
        with self.connect(read_only=True) as con:
            rows = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('window_s', 'hop_s')").fetchall())
        if "window_s" not in rows:
            return None
        return float(rows["window_s"]), float(rows["hop_s"])

    def ensure_grid(self, window_s: float, hop_s: float) -> None:
        """Fix the store's grid on first use, once it is valid; refuse a different one later.

        A grid left invalid by an older version (a 0 s window) counts as none.

        Raises
        ------
        BadInput
            For a grid :func:`check_grid` refuses; nothing is written then.
        GridMismatch
            For a valid grid other than the store's.
        """
        check_grid(window_s, hop_s)
        current = self.grid()
        if current is not None and not _valid_grid(*current):
            current = None
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
            df["n"] = [_one(con.execute(f"SELECT count(*) FROM {_ident(t)}"))[0] for t in df["table_name"]]
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
        """Create a space's table, or a staging table when its provenance changed.

        A re-extraction with a new adapter version or new weights writes into
        a staging table while the old vectors stay in use; :meth:`commit_staged`
        swaps it in, in one transaction, once the run has gone through every
        file.  An interrupted run leaves the old vectors intact, and the next
        run with the same provenance resumes into the same staging table.

        Imported vectors are another source: extracted ones replace them too.

        Returns
        -------
        bool
            True when the space's vectors will be replaced (old and new are never mixed).
        """
        same = (prov.dim, prov.adapter_version, prov.weights_sha256, prov.source)
        with self.transaction() as con:
            query = "SELECT table_name, dim, adapter_version, weights_sha256, source FROM {} WHERE space = ?"
            live = _one(con.execute(query.format("spaces"), [prov.space]))
            staged = _one(con.execute(query.format("staged_spaces"), [prov.space]))
            if staged is not None and (live is None or tuple(live[1:]) == same or tuple(staged[1:]) != same):
                con.execute(f"DROP TABLE {_ident(staged[0])}")
                con.execute("DELETE FROM staged_spaces WHERE space = ?", [prov.space])
                staged = None
            if live is not None and tuple(live[1:]) == same:
                return False
            if live is None or staged is None:
                _new_space(con, prov, "spaces" if live is None else "staged_spaces")
        return live is not None

    def commit_staged(self, spaces: list[str]) -> None:
        """Swap staged re-extractions in for the spaces' old vectors, in one transaction."""
        with self.transaction() as con:
            for space in spaces:
                staged = _one(con.execute("SELECT table_name FROM staged_spaces WHERE space = ?", [space]))
                if staged is None:
                    continue
                live = _one(con.execute("SELECT table_name FROM spaces WHERE space = ?", [space]))
                if live is not None:
                    con.execute(f"DROP TABLE {_ident(live[0])}")
                    con.execute("DELETE FROM spaces WHERE space = ?", [space])
                con.execute("INSERT INTO spaces SELECT * REPLACE (nextval('data_versions') AS data_version) "
                            "FROM staged_spaces WHERE space = ?", [space])
                con.execute("DELETE FROM staged_spaces WHERE space = ?", [space])
                con.execute("DELETE FROM projections WHERE space = ?", [space])

    # ------------------------------------------------------------------ tracks

    def track_states(self) -> dict[str, tuple[int, str | None]]:
        """File system path (see :func:`core.paths.from_text`) -> (track_id, content_hash) for every stored track."""
        with self.connect(read_only=True) as con:
            rows = con.execute("SELECT track_id, path, path_escaped, content_hash FROM tracks").fetchall()
        return {from_text(p, e): (t, h) for t, p, e, h in rows}

    def tracks_with_space(self, space: str) -> set[int]:
        """Tracks whose grid segments all have a vector in a space (written together, so one implies all).

        While a re-extraction is staged, this is about the staged vectors: the ones the run is writing.
        """
        with self.connect(read_only=True) as con:
            row = _one(con.execute(
                "SELECT COALESCE((SELECT table_name FROM staged_spaces WHERE space = ?), "
                "(SELECT table_name FROM spaces WHERE space = ?))", [space, space]))
            if row[0] is None:
                return set()
            rows = con.execute(
                f"SELECT DISTINCT s.track_id FROM {_ident(row[0])} e JOIN segments s USING (segment_id)"
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
            staged = dict(con.execute("SELECT space, table_name FROM staged_spaces").fetchall())
            tables.update(staged)  # a re-extraction writes beside the vectors in use
            new = [r for r in records if r.track_id is None]
            names = {id(r): to_text(r.path) for r in new}
            self._delete_tracks(con, list(names.values()))
            first_track = _one(con.execute("SELECT COALESCE(max(track_id), 0) + 1 FROM tracks"))[0]
            first_segment = _one(con.execute("SELECT COALESCE(max(segment_id), 0) + 1 FROM segments"))[0]
            track_ids = {id(r): first_track + i for i, r in enumerate(new)}
            counts = np.array([len(r.segments) for r in new], dtype=np.int64)
            starts = first_segment + np.concatenate([[0], np.cumsum(counts)[:-1]]) if new else []
            seg_ids = {id(r): np.arange(s, s + c, dtype=np.int64) for r, s, c in zip(new, starts, counts)}
            if new:
                now = _now()
                con.register("new_tracks", pd.DataFrame({
                    "track_id": [track_ids[id(r)] for r in new], "path": [names[id(r)][0] for r in new],
                    "path_escaped": [names[id(r)][1] for r in new],
                    "content_hash": [r.content_hash for r in new], "duration_s": [r.duration_s for r in new],
                    "sample_rate": [r.sample_rate for r in new], "channels": [r.channels for r in new],
                    "format": [r.format for r in new],
                    "metadata": [json.dumps(r.metadata) if r.metadata else None for r in new],
                    "added_at": [now] * len(new)}))
                con.execute("INSERT INTO tracks (track_id, path, content_hash, duration_s, sample_rate, channels, format, "
                            "metadata, added_at, path_escaped) SELECT track_id, path, content_hash, duration_s, "
                            "sample_rate, channels, format, metadata::JSON, added_at, path_escaped FROM new_tracks")
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
                    con.execute(f"DELETE FROM {_ident(tables[space])} WHERE segment_id IN (SELECT unnest(?))",
                                [ids[np.isin(ids, np.concatenate([seg_ids[id(r)] for r in old]))]])
                _insert_vectors(con, tables[space], ids, np.concatenate([r.vectors[space] for r in holders]))
            done = pd.DataFrame([(*to_text(r.path), s) for r in records for s in r.vectors],
                                columns=["path", "path_escaped", "model"])
            con.register("done_pairs", done)
            con.execute("DELETE FROM failures WHERE (path, coalesce(path_escaped, FALSE), model) IN "
                        "(SELECT (path, path_escaped, model) FROM done_pairs)")
            _bump_versions(con, sorted(set(done["model"]) - set(staged)))

    @staticmethod
    def _delete_tracks(con, names: list[tuple[str, bool]]) -> None:
        """Delete the tracks stored under these (path text, escaped) names, with their segments and vectors."""
        if not names:
            return
        con.register("gone", pd.DataFrame(names, columns=["path", "path_escaped"]))
        ids = [r[0] for r in con.execute("SELECT track_id FROM tracks JOIN gone USING (path, path_escaped)").fetchall()]
        con.unregister("gone")
        if not ids:
            return
        tables = con.execute("SELECT table_name FROM spaces UNION ALL SELECT table_name FROM staged_spaces").fetchall()
        for (table,) in tables:
            con.execute(
                f"DELETE FROM {_ident(table)} WHERE segment_id IN (SELECT segment_id FROM segments WHERE track_id IN (SELECT unnest(?)))",
                [ids],
            )
        con.execute("DELETE FROM segments WHERE track_id IN (SELECT unnest(?))", [ids])
        con.execute("DELETE FROM tracks WHERE track_id IN (SELECT unnest(?))", [ids])
        _bump_versions(con)

    def set_metadata(self, metadata: dict[str, dict]) -> int:
        """Replace the metadata of stored tracks (file system path -> {column: value}); returns how many matched."""
        if not metadata:
            return 0
        names = [to_text(p) for p in metadata]
        df = pd.DataFrame({"path": [t for t, _ in names], "path_escaped": [e for _, e in names],
                           "metadata": [json.dumps(v) for v in metadata.values()]})
        with self.transaction() as con:
            con.register("md", df)
            n = _one(con.execute("SELECT count(*) FROM tracks JOIN md USING (path, path_escaped)"))[0]
            con.execute("UPDATE tracks SET metadata = md.metadata::JSON FROM md "
                        "WHERE tracks.path = md.path AND tracks.path_escaped = md.path_escaped")
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
        """Store (file system path, model, message) rows; a path's older failures for the same model are replaced."""
        if not failures:
            return
        df = pd.DataFrame([(*to_text(p), m, msg) for p, m, msg in failures],
                          columns=["path", "path_escaped", "model", "message"])
        df.insert(0, "run_id", run_id)
        df["failed_at"] = _now()
        with self.transaction() as con:
            con.register("f", df)
            con.execute("DELETE FROM failures WHERE (path, coalesce(path_escaped, FALSE), model) IN "
                        "(SELECT (path, path_escaped, model) FROM f)")
            con.execute("INSERT INTO failures (run_id, path, model, message, failed_at, path_escaped) "
                        "SELECT run_id, path, model, message, failed_at, path_escaped FROM f")
            con.unregister("f")

    def failures(self, latest_only: bool = True) -> pd.DataFrame:
        """Failed files (``path`` as stored text, ``path_escaped``); by default only those of each model's latest run."""
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

    def segment_table(self) -> dict[str, np.ndarray]:
        """Every segment's id, track, index and times as numpy columns, sorted by id: no string per segment.

        Returns
        -------
        dict of np.ndarray [shape=(n,)]
            ``segment_id``, ``track_id`` (int64), ``idx`` (int32), ``start_s``, ``end_s`` (float64).
        """
        with self.connect(read_only=True) as con:
            columns = con.execute("SELECT segment_id, track_id, idx, start_s, end_s FROM segments ORDER BY segment_id"
                                  ).fetchnumpy()
        return {name: np.asarray(values) for name, values in columns.items()}

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
        """A space's segment vectors as stored, streamed from DuckDB's Arrow batches into one array.

        The ids are read first (8 bytes a row) and sorted; each batch of
        vectors is then copied straight to its rows of one preallocated
        array.  A million 512-D vectors (2 GB) thus never exist twice, where
        a whole Arrow result, its concatenation and a sorted copy held three.

        Returns
        -------
        ids : np.ndarray [shape=(n,), dtype=int64]
            Sorted segment ids.
        vectors : np.ndarray [shape=(n, dim), dtype=float32]
            Writable and owned by the caller, who may normalise it in place.

        Raises
        ------
        BadInput
            If the store holds no such space.
        """
        info = self.require_space(space)
        dim = int(info["dim"])
        with self.connect(read_only=True) as con:
            ids = _sorted_ids(con, info["table_name"])
            out = np.empty((len(ids), dim), dtype=np.float32)
            # A segment stored twice (never by this version) fills its rows in turn.
            repeated = set(ids[1:][np.diff(ids) == 0].tolist())
            filled: dict[int, int] = {}
            # DuckDB keeps every block it reads cached up to its memory limit (80 % of RAM): 2 GB more at
            # 1,000,000 × 512, for blocks read once.  A small limit while streaming lets it drop them.
            con.execute(f"SET memory_limit = '{_READ_BUFFER}'")
            try:
                reader = con.sql(f"SELECT segment_id, vector FROM {_ident(info['table_name'])}").to_arrow_reader(_READ_ROWS)
                for batch in reader:
                    batch_ids = batch.column(0).to_numpy()
                    rows = np.searchsorted(ids, batch_ids)
                    for j in (np.flatnonzero(np.isin(batch_ids, list(repeated))) if repeated else ()):
                        rows[j] += filled.get(int(batch_ids[j]), 0)
                        filled[int(batch_ids[j])] = filled.get(int(batch_ids[j]), 0) + 1
                    out[rows] = batch.column(1).flatten().to_numpy().reshape(len(batch_ids), dim)
            finally:  # the setting is the database instance's, which other connections of this process may share
                con.execute("RESET memory_limit")
        return ids, out

    def segment_ids(self, space: str) -> np.ndarray:
        """The sorted segment ids of a space, without its vectors (8 bytes a row)."""
        info = self.require_space(space)
        with self.connect(read_only=True) as con:
            return _sorted_ids(con, info["table_name"])

    def vectors_between(self, space: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The segment vectors of a space with ``lo <= segment_id < hi``, and each segment's track.

        Work over a space too large to hold twice (building its search
        index) reads it range by range, each with its own short connection,
        so that no connection stays open (and locks the file against other
        processes) for the minutes the whole pass takes.  Cut the ranges
        from :meth:`segment_ids`.

        Returns
        -------
        segment_ids, track_ids : np.ndarray [shape=(n,), dtype=int64]
            Sorted by segment id.
        vectors : np.ndarray [shape=(n, dim), dtype=float32]
            As stored (not normalised); possibly a read-only view of DuckDB's result.
        """
        info = self.require_space(space)
        with self.connect(read_only=True) as con:
            table = con.sql(
                f"""SELECT e.segment_id, s.track_id, e.vector FROM {_ident(info['table_name'])} e JOIN segments s USING (segment_id)
                    WHERE e.segment_id >= $lo AND e.segment_id < $hi""", params={"lo": int(lo), "hi": int(hi)}
            ).to_arrow_table()
        ids, matrix, tracks = _sorted_vectors(table, int(info["dim"]), "track_id")
        return ids, tracks, matrix

    def data_version(self, space: str) -> int:
        info = self.space(space)
        return -1 if info is None else int(info["data_version"])

    def metadata_version(self) -> int:
        with self.connect(read_only=True) as con:
            row = _one(con.execute("SELECT value FROM meta WHERE key = 'metadata_version'"))
        return int(row[0]) if row else 0

    def info(self) -> dict:
        """Counts for ``core info``: tracks, segments, vectors per space, failures, missing files.

        URL tracks (object storage, the web) are counted as ``remote_files``, never as missing:
        whether they can be reached is the player's concern, not the store's.
        """
        with self.connect(read_only=True) as con:
            tracks = _one(con.execute("SELECT count(*) FROM tracks"))[0]
            segments = _one(con.execute("SELECT count(*) FROM segments"))[0]
            paths = con.execute("SELECT path, path_escaped FROM tracks WHERE content_hash IS NOT NULL").fetchall()
        spaces = self.spaces()
        failures = self.failures(latest_only=True)
        remote = [p for p, escaped in paths if not escaped and is_url(p)]
        missing = [p for p, escaped in paths if not (not escaped and is_url(p)) and not self.file(p, escaped).exists()]
        return {
            "tracks": int(tracks),
            "segments": int(segments),
            "embeddings": {s: int(n) for s, n in zip(spaces["space"], spaces["n"])},
            "failures": int(failures["path"].nunique()) if len(failures) else 0,
            "missing_files": len(missing),
            "missing_paths": missing,
            "remote_files": len(remote),
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

    def fill_published(self, grid: tuple[float, float] | None, tracks: pd.DataFrame, segments: pd.DataFrame,
                       spaces: list[tuple[Provenance, np.ndarray, np.ndarray]]) -> None:
        """Write a new published collection in one transaction: its grid, tracks, segments and spaces, ids kept.

        Parameters
        ----------
        tracks : pd.DataFrame
            Rows of :meth:`tracks_frame`, ``path`` already relative to the store's folder.
        segments : pd.DataFrame
            ``segment_id``, ``track_id``, ``idx`` (-1 for imported segments), ``start_s``, ``end_s``.
        spaces : list of (Provenance, ids, vectors)
            Each space's segment ids (shape (n,)) and vectors (shape (n, dim)).
        """
        with self.transaction() as con:
            if grid is not None:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('window_s', ?), ('hop_s', ?)", [str(grid[0]), str(grid[1])])
            con.execute("INSERT OR REPLACE INTO meta VALUES ('published_at', ?)", [_now().isoformat(timespec="seconds")])
            con.register("pub_tracks", tracks.assign(
                metadata=[m if isinstance(m, str) else None for m in tracks["metadata"]]))
            con.execute("INSERT INTO tracks (track_id, path, content_hash, duration_s, sample_rate, channels, format, "
                        "metadata, added_at, path_escaped) SELECT track_id, path, content_hash, duration_s, sample_rate, "
                        "channels, format, metadata::JSON, added_at, path_escaped FROM pub_tracks")
            con.register("pub_segments", segments[["segment_id", "track_id", "idx", "start_s", "end_s"]].assign(
                on_grid=segments["idx"].to_numpy() >= 0))
            con.execute("INSERT INTO segments SELECT segment_id, track_id, idx, start_s, end_s, on_grid FROM pub_segments")
            for prov, ids, vectors in spaces:
                _insert_vectors(con, _new_space(con, prov), ids, vectors)

    def add_imported(self, prov: Provenance, rows: str | Path | pa.Table, files: pd.DataFrame | None = None, *,
                     replace: bool = False) -> int:
        """Store precomputed vectors with their own segments, read by DuckDB from a Parquet file, in one transaction.

        ``rows`` holds ``path``, optionally ``path_escaped``, ``start_s``,
        ``end_s``, ``vector`` (a list of numbers) and metadata columns; the
        ``track_*`` columns of an export describe the track and are not
        metadata.  A Parquet file is read by SQL (``read_parquet``), so its
        vectors go from the file into the vector table without passing through
        Arrow and numpy: 2 GB at 1,000,000 × 512 are neither copied nor held
        by Python.  An Arrow table (tests, benchmarks) is read the same way.

        Tracks are matched by path (file system paths, see :mod:`core.paths`);
        unknown paths become tracks without content hash (their audio may not
        be reachable).  Segments that coincide with existing ones (same path,
        start and end to the microsecond) are reused, so imported vectors can
        be compared with extracted ones there.  The caller validates the rows
        first (:func:`core.exchange.import_parquet`); nothing is written when
        this raises.  The work is per distinct file or in SQL, never per row
        in Python.

        Parameters
        ----------
        rows : str, Path or pa.Table
            A Parquet file, or a table whose ``vector`` holds finite numbers.
        files : pd.DataFrame, optional
            One row per distinct ``(path, path_escaped)`` of ``rows``, with
            ``local``, the file it names (a path or a URL).  Without it, the
            paths of ``rows`` are local paths already.
        replace : bool
            Needed when the space already holds vectors: they are all dropped
            and the file's take their place, in the same transaction.

        Raises
        ------
        StoreError
            When the space holds vectors and ``replace`` is False.
        DimensionMismatch
            When it holds vectors of another dimension and ``replace`` is False.
        """
        table = rows if isinstance(rows, pa.Table) else None
        if table is not None:
            if not np.isfinite(table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)).all():
                raise StoreError("refusing to store non-finite vectors")
            table = table.append_column("file_row_number", pa.array(np.arange(table.num_rows, dtype=np.int64)))
            source, params = "imp_rows", []
        else:
            source, params = parquet_rows(rows)
        with self.transaction() as con:
            if table is not None:
                con.register("imp_rows", table)
            columns = [c[0] for c in con.execute(f"DESCRIBE SELECT * FROM {source}", params).fetchall()]
            if files is None:
                files = con.execute(f"SELECT DISTINCT path FROM {source}", params).df()
                files["path_escaped"], files["local"] = False, files["path"]
            # Two spellings of one file (``a/../b`` and ``b``) are one file: one code per distinct local path.
            codes, local = pd.factorize(files["local"])
            con.register("imp_files", pd.DataFrame({"path": files["path"], "path_escaped": files["path_escaped"],
                                                    "file": codes}))
            escaped = "coalesce(CAST(r.path_escaped AS BOOLEAN), FALSE)" if "path_escaped" in columns else "FALSE"
            con.execute(
                f"""CREATE TEMP TABLE imp AS
                    SELECT r.file_row_number AS row, f.file, CAST(r.start_s AS DOUBLE) AS start_s,
                           CAST(r.end_s AS DOUBLE) AS end_s
                    FROM {source} r JOIN imp_files f ON f.path = r.path AND f.path_escaped = {escaped}""", params)
            con.unregister("imp_files")
            n_rows = _one(con.execute("SELECT count(*) FROM imp"))[0]
            vector_table = self._clear_for_import(con, prov, n_rows, replace)
            track_of = self._import_tracks(con, source, params, columns, [to_text(p) for p in local])
            con.register("imp_tracks", pd.DataFrame({"file": np.arange(len(track_of)), "track_id": track_of}))
            con.execute("CREATE TEMP TABLE imp_rows_tracks AS SELECT i.row, t.track_id, i.start_s, i.end_s "
                        "FROM imp i JOIN imp_tracks t USING (file)")
            con.unregister("imp_tracks")
            # A segment is the same when its track and its times to the microsecond are: one hash join, where
            # comparing times within a tolerance would compare every segment of a track with every other.
            keyed = """SELECT {cols}, CAST(round(start_s * 1e6) AS BIGINT) AS a, CAST(round(end_s * 1e6) AS BIGINT) AS b
                       FROM {source}"""
            stored = keyed.format(cols="segment_id, track_id",
                                  source="segments WHERE track_id IN (SELECT track_id FROM imp_rows_tracks)")
            con.execute(
                f"""INSERT INTO segments
                    SELECT (SELECT COALESCE(max(segment_id), 0) FROM segments) + row_number() OVER (ORDER BY i.first_row),
                           i.track_id, -1, i.start_s, i.end_s, FALSE
                    FROM (SELECT track_id, a, b, min(row) AS first_row, arg_min(start_s, row) AS start_s,
                                 arg_min(end_s, row) AS end_s
                          FROM ({keyed.format(cols="track_id, row, start_s, end_s", source="imp_rows_tracks")})
                          GROUP BY track_id, a, b) i
                    ANTI JOIN ({stored}) s USING (track_id, a, b)""")
            # Each row's segment, and whether another row names it too (a file may name one segment twice).
            con.execute(
                f"""CREATE TEMP TABLE imp_segments AS
                    SELECT i.row, s.segment_id, count(*) OVER (PARTITION BY s.segment_id) > 1 AS repeated
                    FROM ({keyed.format(cols="track_id, row", source="imp_rows_tracks")}) i
                    JOIN (SELECT track_id, a, b, min(segment_id) AS segment_id FROM ({stored}) GROUP BY track_id, a, b) s
                    USING (track_id, a, b)""")
            con.execute(f"DELETE FROM {_ident(vector_table)} WHERE segment_id IN (SELECT segment_id FROM imp_segments)")
            insert = f"""INSERT INTO {_ident(vector_table)}
                         SELECT s.segment_id, CAST(r.vector AS FLOAT[{int(prov.dim)}])
                         FROM {source} r JOIN imp_segments s ON s.row = r.file_row_number WHERE {{which}}"""
            con.execute("SET force_compression = 'uncompressed'")  # see _insert_vectors
            try:
                # A parallel join, written by DuckDB straight into the file's blocks: the order of the rows is
                # lost, which only matters for a segment named twice, whose vectors are stored in the file's order.
                con.execute(insert.format(which="NOT s.repeated"), params)
                if _one(con.execute("SELECT count(*) FROM imp_segments WHERE repeated"))[0]:
                    con.execute(insert.format(which="s.repeated ORDER BY s.row"), params)
            finally:
                con.execute("RESET force_compression")
            for temp in ("imp", "imp_rows_tracks", "imp_segments"):
                con.execute(f"DROP TABLE {temp}")
            if table is not None:
                con.unregister("imp_rows")
            _bump_versions(con, [prov.space])
        return n_rows

    @staticmethod
    def _clear_for_import(con, prov: Provenance, rows: int, replace: bool) -> str:
        """Apply the replace rule to the space an import writes into; returns its vector table, made if new.

        Raises
        ------
        DimensionMismatch, StoreError
            When the space holds vectors and ``replace`` is False.
        """
        live = _one(con.execute("SELECT table_name, dim, source FROM spaces WHERE space = ?", [prov.space]))
        if live is not None:
            held = _one(con.execute(f"SELECT count(*) FROM {_ident(live[0])}"))[0]
            if live[1] != prov.dim and not replace:
                raise DimensionMismatch(f"{prov.space} holds {live[1]}-D vectors; the file has {prov.dim}-D ones. "
                                        "Import under another --model key, or add --replace.")
            if held and not replace:
                raise StoreError(f"{prov.space} already holds {held:,} {live[2]} vectors; add --replace to replace "
                                 f"them with the file's {rows:,}, or import under another --model key.")
            if replace or live[1] != prov.dim:
                con.execute(f"DROP TABLE {_ident(live[0])}")
                con.execute("DELETE FROM spaces WHERE space = ?", [prov.space])
                con.execute("DELETE FROM projections WHERE space = ?", [prov.space])
                live = None
        staged = _one(con.execute("SELECT table_name FROM staged_spaces WHERE space = ?", [prov.space]))
        if staged is not None:  # an interrupted re-extraction that the import supersedes
            con.execute(f"DROP TABLE {_ident(staged[0])}")
            con.execute("DELETE FROM staged_spaces WHERE space = ?", [prov.space])
        return _new_space(con, prov) if live is None else live[0]

    @staticmethod
    def _import_tracks(con, source: str, params: list, columns: list[str], names: list[tuple[str, bool]]) -> np.ndarray:
        """The track of each imported file (temp table ``imp``'s ``file``), adding the files the store lacks.

        A new track's duration is its last segment's end, and its metadata is
        its first row's non-null metadata columns.  New tracks are numbered in
        the order of their first rows.

        Returns
        -------
        np.ndarray [shape=(len(names),), dtype=int64]
        """
        per_file = con.execute("SELECT file, min(row) AS first_row, max(end_s) AS duration_s FROM imp "
                               "GROUP BY file ORDER BY first_row").df()
        known = {(p, e): t for t, p, e in con.execute("SELECT track_id, path, path_escaped FROM tracks").fetchall()}
        track_of = np.array([known.get(n, 0) for n in names], dtype=np.int64)
        new = per_file[track_of[per_file["file"].to_numpy()] == 0]
        if len(new):
            first_track = _one(con.execute("SELECT COALESCE(max(track_id), 0) + 1 FROM tracks"))[0]
            track_of[new["file"].to_numpy()] = first_track + np.arange(len(new))
            meta_cols = [c for c in columns if c not in ("path", "path_escaped", "start_s", "end_s", "vector",
                                                         "file_row_number") and not c.startswith("track_")]
            firsts = con.execute(
                f"SELECT file_row_number, {', '.join(_column(c) for c in meta_cols) or 'NULL AS none'} FROM {source} "
                "WHERE file_row_number IN (SELECT unnest(?))", [*params, new["first_row"].tolist()]
            ).df().set_index("file_row_number").loc[new["first_row"], meta_cols]
            metadata = [row.dropna().to_dict() for _, row in firsts.iterrows()]
            con.register("new_tracks", pd.DataFrame({
                "track_id": track_of[new["file"].to_numpy()], "path": [names[f][0] for f in new["file"]],
                "path_escaped": [names[f][1] for f in new["file"]], "duration_s": new["duration_s"].to_numpy(),
                "metadata": [json.dumps(jsonable(m)) if m else None for m in metadata]}))
            con.execute("INSERT INTO tracks (track_id, path, path_escaped, duration_s, format, metadata, added_at) "
                        "SELECT track_id, path, path_escaped, duration_s, 'imported', metadata, ? FROM new_tracks",
                        [_now()])
            con.unregister("new_tracks")
        return track_of


def parquet_rows(path: str | Path) -> tuple[str, list[str]]:
    """SQL reading one Parquet file with its row numbers (``file_row_number``), and the statement's parameters.

    DuckDB reads a name as a glob pattern, so a file named ``b*.parquet``
    would bring in ``bX.parquet`` beside it: its ``*``, ``?`` and ``[`` are
    escaped as one-character classes.
    """
    return "read_parquet(?, file_row_number = true)", [re.sub(r"([*?\[])", r"[\1]", str(path))]


def metadata_columns(frame: pd.DataFrame) -> list[str]:
    """The user metadata columns of a frame from :meth:`Store.rows` or :meth:`Store.segments_frame`."""
    return [c for c in frame.columns if c not in RESERVED_COLUMNS]


def _new_space(con, prov: Provenance, registry: str = "spaces") -> str:
    """Create a space's vector table and its row in ``spaces`` (or ``staged_spaces``); returns the table's name."""
    table = "emb_" + str(_one(con.execute("SELECT nextval('space_ids')"))[0])
    con.execute(f"CREATE TABLE {_ident(table)} (segment_id BIGINT NOT NULL, vector FLOAT[{int(prov.dim)}] NOT NULL)")
    grid = dict(con.execute("SELECT key, CAST(value AS DOUBLE) FROM meta WHERE key IN ('window_s', 'hop_s')").fetchall())
    con.execute(
        f"INSERT INTO {registry} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, nextval('data_versions'))",
        [prov.space, prov.model, table, prov.dim, prov.adapter_version, prov.weights_sha256, grid.get("window_s"),
         grid.get("hop_s"), prov.source, json.dumps(list(prov.tag_names)) if prov.tag_names else None, _now()],
    )
    return table


def _bump_versions(con, spaces: list[str] | None = None) -> None:
    """Give changed spaces (all when None) a new data version: the next value of one sequence, never reused."""
    where = "" if spaces is None else " WHERE space IN (SELECT unnest(?))"
    con.execute("UPDATE spaces SET data_version = nextval('data_versions')" + where, [] if spaces is None else [spaces])


def _column(name: str) -> str:
    """A column name of an imported file, quoted for a statement."""
    return '"' + name.replace('"', '""') + '"'


def _ident(name: str) -> str:
    """A vector table's name read from the store, checked and quoted for a statement.

    Quoting alone is not enough (a view named like a table could read a
    file), so only names :func:`_new_space` makes are accepted.

    Raises
    ------
    StoreError
        For any other name: the file was not written by this program.
    """
    if not (isinstance(name, str) and _SPACE_TABLE.fullmatch(name)):
        raise StoreError(f"The store names a vector table {str(name)[:40]!r}, which this program never makes; "
                         "the file was altered: pass another --db.")
    return f'"{name}"'


def _refuse_code(con, name: str, tables: set[str]) -> None:
    """Refuse a file holding views or macros, or a registry naming tables this program does not make.

    Raises
    ------
    StoreError
    """
    views = _one(con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal"))[0]
    macros = _one(con.execute("SELECT count(*) FROM duckdb_functions() WHERE NOT internal "
                              "AND function_type IN ('macro', 'table_macro')"))[0]
    if views or macros:
        raise StoreError(f"{name} holds {views} views and {macros} macros, which a store never has; "
                         "it is not safe to open: pass another --db.")
    for registry in ("spaces", "staged_spaces"):
        if registry in tables:
            for (table,) in con.execute(f"SELECT table_name FROM {registry}").fetchall():
                if _ident(table).strip('"') not in tables:
                    raise StoreError(f"{name} lists a vector table {table!r} that it does not hold; "
                                     "it is damaged: pass another --db.")


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


#: Rows per Arrow batch when a space is streamed out of DuckDB (32 MB of 512-D float32 vectors).
_READ_ROWS = 1 << 14

#: DuckDB's memory limit while a space is streamed out: enough for a few batches, not a cache of the table.
_READ_BUFFER = "256MB"


def _sorted_ids(con, table: str) -> np.ndarray:
    """The segment ids of a vector table, sorted (8 bytes a row)."""
    return np.sort(np.asarray(con.sql(f"SELECT segment_id FROM {_ident(table)}").fetchnumpy()["segment_id"], dtype=np.int64))


def _sorted_vectors(table: pa.Table, dim: int, *columns: str) -> tuple[np.ndarray, ...]:
    """Segment ids, vectors and any other ``columns`` of an Arrow result, sorted by id, without a loop over rows."""
    ids = table.column("segment_id").to_numpy()
    vec = table.column("vector").combine_chunks()
    flat = vec.values.to_numpy(zero_copy_only=False) if len(vec) else np.zeros(0, np.float32)
    out = [ids, flat.reshape(len(ids), dim).astype(np.float32, copy=False)]
    out += [table.column(c).to_numpy() for c in columns]
    if len(ids) > 1 and (np.diff(ids) < 0).any():  # sorting in numpy is cheaper than ORDER BY on wide rows
        order = np.argsort(ids, kind="stable")
        out = [a[order] for a in out]
    return tuple(out)


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
        con.execute(f"INSERT INTO {_ident(table)} SELECT segment_id, vector FROM vec_batch")
    finally:
        con.execute("RESET force_compression")
        con.unregister("vec_batch")
