"""Parquet in and out: share a model's vectors, or bring your own from a batch job.

The layout is one row per segment: ``path``, ``path_escaped`` (see
:mod:`core.paths`), ``start_s``, ``end_s``, every metadata column under its
own name, the track attributes as ``track_duration_s``, ``track_sample_rate``
and ``track_channels``, and ``vector`` as a fixed-size list of float32.  The
space's provenance travels in the file's key-value metadata
(``aeb:provenance``).

An import is checked whole before anything is written, and then written in
one transaction, so a bad file changes nothing.  DuckDB reads the file in both
steps (SQL aggregates check it, ``read_parquet`` stores it): the vectors go
from the file into the store without a copy in Python.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import BadInput, DimensionMismatch
from core.paths import from_text, is_url
from core.store import Provenance, Store, metadata_columns, parquet_rows

PROVENANCE_KEY = b"aeb:provenance"

#: Columns of :meth:`core.store.Store.rows` that describe the track, written after the metadata.
_TRACK_COLUMNS = ("track_duration_s", "track_sample_rate", "track_channels")


def check_output(out: str | Path) -> Path:
    """Refuse an output path that cannot be written: a folder, or a file in a folder that does not exist.

    Raises
    ------
    BadInput
    """
    out = Path(out).expanduser()
    if out.is_dir():
        raise BadInput(f"{out} is a folder; give a file name such as {out / 'embeddings.parquet'}.")
    if not out.parent.is_dir():
        raise BadInput(f"The folder {out.parent} does not exist; create it or choose another --out.")
    return out


def export_parquet(store: Store, space: str, out: str | Path) -> int:
    """Write a space's vectors with their segments and metadata; returns the row count.

    The file appears whole or not at all: it is written beside ``out`` and renamed.
    """
    out = check_output(out)
    info = store.require_space(space)
    ids, vectors = store.vectors(space)
    frame = store.rows(ids)
    ordered = frame[["path", "path_escaped", "start_s", "end_s", *metadata_columns(frame), *_TRACK_COLUMNS]]
    table = pa.Table.from_pandas(ordered, preserve_index=False)
    table = table.append_column("vector", vector_column(vectors))
    provenance = {k: info[k] for k in ("space", "model", "dim", "adapter_version", "weights_sha256", "window_s", "hop_s", "source")}
    provenance["created_at"] = str(info["created_at"])
    provenance["tag_names"] = info["tag_names"]
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PROVENANCE_KEY: json.dumps(provenance, default=str).encode()})
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        os.close(fd)
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise BadInput(f"Cannot write {out} ({exc.strerror or exc}).") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return len(ids)


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """Float32 rows as Arrow's fixed-size lists, over the same buffer (no copy).

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim), dtype=float32]
    """
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def _unreadable(name: str, exc: Exception) -> BadInput:
    return BadInput(f"{name} cannot be read as Parquet ({str(exc).splitlines()[0]}); "
                    "give a file written by `python -m core export` or by pyarrow.")


def _schema(path: str | Path, name: str) -> pa.Schema:
    """The file's columns and key-value metadata, read from its footer alone.

    Raises
    ------
    BadInput
        For a file that is not Parquet, or lacks a column an import needs.
    """
    try:
        schema = pq.read_schema(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(name, exc) from None
    missing = {"path", "start_s", "end_s", "vector"} - set(schema.names)
    if missing:
        raise BadInput(f"{name} lacks the column(s) {', '.join(sorted(missing))}; "
                       "it needs path, start_s, end_s and vector.")
    kind = schema.field("vector").type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise BadInput(f"{name}: the vector column holds {kind}, not lists of numbers.")
    if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise BadInput(f"{name}: vectors hold {kind.value_type}, not numbers.")
    path_kind = schema.field("path").type
    if pa.types.is_dictionary(path_kind):
        path_kind = path_kind.value_type
    if not (pa.types.is_string(path_kind) or pa.types.is_large_string(path_kind)):
        raise BadInput(f"{name}: some rows have no path.")
    if "path_escaped" in schema.names and not (pa.types.is_boolean(schema.field("path_escaped").type)
                                               or pa.types.is_null(schema.field("path_escaped").type)):
        raise BadInput(f"{name}: path_escaped must be true or false in every row.")
    for col in ("start_s", "end_s"):
        if not (pa.types.is_floating(schema.field(col).type) or pa.types.is_integer(schema.field(col).type)):
            raise BadInput(f"{name}: {col} must be a finite number of seconds in every row.")
    return schema


def _check_rows(con, path: str | Path, schema: pa.Schema, name: str) -> int:
    """Refuse null, ragged, holed or non-finite vectors, rows without a path, and bad segment times; returns the dimension.

    One pass of SQL aggregates over the file, run by DuckDB before anything
    is written; only the first bad row of a kind is looked up, on failure.
    Finiteness is tested by each vector's squared norm in float32, a SIMD loop
    that takes half the time of an exact sum (3.6 instead of 5.9 CPU seconds
    at 1,000,000 × 512, the file's decoding included); a norm that overflows
    sends the file to the exact test.  A missing value makes the norm fail
    (``TRY`` gives NULL), but such a file is refused for its holes first.
    Values are checked as the store will hold them, in float32 (a float64
    beyond its range becomes an error here, never an infinity in the store).

    Raises
    ------
    BadInput
    """
    value_type = schema.field("vector").type.value_type
    values = "vector" if value_type in (pa.float16(), pa.float32()) else "CAST(vector AS FLOAT[])"
    source, params = parquet_rows(path)
    try:
        (n, no_vector, first_no_vector, shortest, longest, first_length, holes, _, non_finite, no_path,
         bad_start, bad_end, first_bad_segment) = con.execute(f"""
            SELECT count(*), count(*) FILTER (vector IS NULL), min(file_row_number) FILTER (vector IS NULL),
                   min(len(vector)), max(len(vector)), arg_min(len(vector), file_row_number),
                   sum(len(vector) - list_count(vector)),
                   count({values}),  -- outside TRY: a value beyond float32's range is an error, not a NULL
                   count(*) FILTER (NOT isfinite(TRY(list_dot_product({values}, {values})))),
                   count(*) FILTER (path IS NULL OR path = ''),
                   count(*) FILTER (start_s IS NULL OR NOT isfinite(CAST(start_s AS DOUBLE))),
                   count(*) FILTER (end_s IS NULL OR NOT isfinite(CAST(end_s AS DOUBLE))),
                   min(file_row_number) FILTER (NOT (start_s >= 0 AND end_s > start_s))
            FROM {source}""", params).fetchone()
    except duckdb.ConversionException:
        raise BadInput(f"{name}: some vector values lie beyond float32's range; "
                       "nothing was imported.") from None
    if no_vector:
        raise BadInput(f"{name}: {no_vector} rows have no vector (row {first_no_vector} first).")
    if n == 0:
        raise BadInput(f"{name} holds no rows; export some vectors into it first.")
    if shortest != longest:
        bad, length = con.execute(f"SELECT file_row_number, len(vector) FROM {source} WHERE len(vector) != ? "
                                  "ORDER BY file_row_number LIMIT 1", [*params, first_length]).fetchone()
        raise BadInput(f"{name}: vectors have different lengths ({first_length} in row 0, {length} in row {bad}).")
    if longest == 0:
        raise BadInput(f"{name}: the vectors are empty.")
    if holes:
        raise BadInput(f"{name}: {holes} vector values are missing.")
    if non_finite:  # or a square beyond float32's range: count exactly (a sum in float64 cannot overflow)
        non_finite, first_non_finite = con.execute(
            f"SELECT count(*), min(file_row_number) FROM {source} WHERE NOT isfinite(list_sum({values}))",
            params).fetchone()
    if non_finite:
        raise BadInput(f"{name}: {non_finite} vectors hold NaN or infinity (row {first_non_finite} first); "
                       "nothing was imported.")
    if no_path:
        raise BadInput(f"{name}: some rows have no path.")
    for col, bad in (("start_s", bad_start), ("end_s", bad_end)):
        if bad:
            raise BadInput(f"{name}: {col} must be a finite number of seconds in every row.")
    if first_bad_segment is not None:
        raise BadInput(f"{name}: row {first_bad_segment} has a segment that does not satisfy 0 <= start_s < end_s.")
    return int(longest)


def _files(con, path: str | Path, schema: pa.Schema) -> pd.DataFrame:
    """The local file each distinct ``(path, path_escaped)`` of the rows names, resolved once per pair, never per row.

    A million rows name a few thousand files; only the distinct pairs are
    decoded (see :mod:`core.paths`) and resolved.  Web addresses stay as
    they are.

    Returns
    -------
    pd.DataFrame [columns path, path_escaped, local]
    """
    escaped = "coalesce(path_escaped, FALSE)" if "path_escaped" in schema.names else "FALSE"
    source, params = parquet_rows(path)
    files = con.execute(f"SELECT DISTINCT CAST(path AS VARCHAR) AS path, {escaped} AS path_escaped FROM {source}",
                        params).df()
    # object, not pandas' string type: a name that is not UTF-8 decodes to surrogates, which Arrow refuses
    files["local"] = pd.Series([text if is_url(text) else str(Path(from_text(text, bool(flag))).expanduser().resolve())
                                for text, flag in zip(files["path"], files["path_escaped"])], dtype=object)
    return files


def import_parquet(store: Store, path: str | Path, space: str, *, replace: bool = False) -> int:
    """Store precomputed vectors (columns path, start_s, end_s, vector, optional metadata), all or nothing.

    Every row is checked first (columns, paths, segment times, one vector
    length, no NaN or infinity) by DuckDB reading the file, without opening
    the store; then the store reads the file again into its tables, in one
    transaction.  The vectors never pass through Python: at 1,000,000 × 512
    the import holds no copy of them (it held 2 or 3, 7 GB, through Arrow and
    numpy).

    Parameters
    ----------
    replace : bool
        Needed when ``space`` already holds vectors (extracted or imported):
        they are replaced by the file's.

    Raises
    ------
    BadInput
        For a file that cannot be read or a row that cannot be stored.
    DimensionMismatch
        When the vectors' dimension differs from vectors already stored
        under the same key and ``replace`` is False: never a silent mix.
    StoreError
        When the space already holds vectors and ``replace`` is False.
    """
    name = Path(path).name
    schema = _schema(path, name)
    try:
        with duckdb.connect() as con:  # in memory: the store stays free for readers while the file is checked
            dim = _check_rows(con, path, schema, name)
            files = _files(con, path, schema)
    except duckdb.Error as exc:  # a damaged page, found by the checks' pass over the whole file
        raise _unreadable(name, exc) from None
    existing = store.space(space)
    if existing is not None and int(existing["dim"]) != dim and not replace:
        raise DimensionMismatch(f"{space} holds {existing['dim']}-D vectors; {name} has {dim}-D ones. "
                                "Import under another --model key, or add --replace.")
    try:
        provenance = json.loads((schema.metadata or {}).get(PROVENANCE_KEY, b"{}"))
    except ValueError:
        provenance = None
    provenance = provenance if isinstance(provenance, dict) else {}
    tags = provenance.get("tag_names")
    prov = Provenance(space, space, dim, str(provenance.get("adapter_version", "imported")),
                      str(provenance.get("weights_sha256", "")), source="imported",
                      tag_names=tuple(tags) if tags else None)
    return store.add_imported(prov, path, files, replace=replace)
