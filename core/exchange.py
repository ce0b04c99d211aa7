"""Parquet in and out: share a model's vectors, or bring your own from a batch job.

The layout is one row per segment: ``path``, ``path_escaped`` (see
:mod:`core.paths`), ``start_s``, ``end_s``, every metadata column under its
own name, the track attributes as ``track_duration_s``, ``track_sample_rate``
and ``track_channels``, and ``vector`` as a fixed-size list of float32.  The
space's provenance travels in the file's key-value metadata
(``aeb:provenance``).

An import is checked row by row before anything is written, and then written
in one transaction, so a bad file changes nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import BadInput, DimensionMismatch
from core.paths import from_text
from core.store import Provenance, Store, metadata_columns

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
    table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]))
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


def _vectors(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """The ``vector`` column as float32 rows, refusing null, ragged, non-numeric or non-finite rows.

    Each of the column's chunks is checked and copied into one preallocated
    array: the Arrow column is never concatenated (a copy of 2 GB at
    1,000,000 × 512), and the caller can drop it once this returns.
    """
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise BadInput(f"{name}: the vector column holds {kind}, not lists of numbers.")
    if column.null_count:
        first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadInput(f"{name}: {column.null_count} rows have no vector (row {first} first).")
    if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise BadInput(f"{name}: vectors hold {kind.value_type}, not numbers.")
    lengths = pc.list_value_length(column).to_numpy()
    if len(lengths) == 0:
        raise BadInput(f"{name} holds no rows; export some vectors into it first.")
    if (lengths != lengths[0]).any():
        bad = int(np.flatnonzero(lengths != lengths[0])[0])
        raise BadInput(f"{name}: vectors have different lengths ({lengths[0]} in row 0, {lengths[bad]} in row {bad}).")
    if lengths[0] == 0:
        raise BadInput(f"{name}: the vectors are empty.")
    missing = sum(pc.list_flatten(chunk).null_count for chunk in column.chunks)
    if missing:
        raise BadInput(f"{name}: {missing} vector values are missing.")
    vectors = np.empty((len(column), int(lengths[0])), dtype=np.float32)
    row = 0
    for chunk in column.chunks:
        vectors[row:row + len(chunk)] = pc.list_flatten(chunk).to_numpy(zero_copy_only=False).reshape(len(chunk), -1)
        row += len(chunk)
    bad_rows = ~np.isfinite(vectors).all(axis=1)
    if bad_rows.any():
        raise BadInput(f"{name}: {int(bad_rows.sum())} vectors hold NaN or infinity (row {int(np.flatnonzero(bad_rows)[0])} "
                       "first); nothing was imported.")
    return vectors


def _paths(table: pa.Table, name: str) -> pd.Categorical:
    """Each row's file as a local path, resolved once per distinct file, never once per row.

    A million rows name a few thousand files: the paths are dictionary-encoded
    in Arrow, and only the distinct (path, escaped) pairs are decoded (see
    :mod:`core.paths`) and resolved.  Web addresses stay as they are.

    Returns
    -------
    pd.Categorical [shape=(n,)]
        One category per distinct local path.

    Raises
    ------
    BadInput
        If a row has no path (null, empty, or not text).
    """
    column = table.column("path").combine_chunks()
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) or column.null_count:
        raise BadInput(f"{name}: some rows have no path.")
    encoded = column.dictionary_encode()
    texts = encoded.dictionary.to_pylist()
    if "" in texts:
        raise BadInput(f"{name}: some rows have no path.")
    codes = encoded.indices.to_numpy().astype(np.int64)
    if "path_escaped" in table.column_names:
        escaped = table.column("path_escaped").to_numpy(zero_copy_only=False)
        codes = 2 * codes + np.asarray(pd.Series(escaped).fillna(False), dtype=bool)
    else:
        codes = 2 * codes
    pairs, inverse = np.unique(codes, return_inverse=True)
    local = []
    for pair in pairs:
        text = texts[pair // 2]
        local.append(text if text.startswith(("http:", "https:"))
                     else str(Path(from_text(text, bool(pair % 2))).expanduser().resolve()))
    # Two spellings of one file (``a/../b`` and ``b``) become one category.
    merged, files = pd.factorize(pd.Series(local, dtype=object))
    return pd.Categorical.from_codes(merged[inverse.reshape(-1)], categories=pd.Index(files, dtype=object))


def _segments(frame, name: str) -> None:
    """Refuse segment times that are missing, not finite, negative or empty."""
    for col in ("start_s", "end_s"):
        values = np.asarray(frame[col], dtype=np.float64) if frame[col].dtype.kind in "fiu" else None
        if values is None or not np.isfinite(values).all():
            raise BadInput(f"{name}: {col} must be a finite number of seconds in every row.")
    bad = ~((frame["start_s"] >= 0) & (frame["end_s"] > frame["start_s"]))
    if bad.any():
        raise BadInput(f"{name}: row {int(np.flatnonzero(bad.to_numpy())[0])} has a segment that does not satisfy "
                       "0 <= start_s < end_s.")


def import_parquet(store: Store, path: str | Path, space: str, *, replace: bool = False) -> int:
    """Store precomputed vectors (columns path, start_s, end_s, vector, optional metadata), all or nothing.

    Every row is checked first (columns, paths, segment times, one vector
    length, no NaN or infinity); then the rows are written in one transaction.

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
    try:
        table = pq.read_table(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{name} cannot be read as Parquet ({str(exc).splitlines()[0]}); "
                       "give a file written by `python -m core export` or by pyarrow.") from None
    missing = {"path", "start_s", "end_s", "vector"} - set(table.column_names)
    if missing:
        raise BadInput(f"{name} lacks the column(s) {', '.join(sorted(missing))}; "
                       "it needs path, start_s, end_s and vector.")
    vectors = _vectors(table.column("vector"), name)
    table = table.drop_columns(["vector"])  # the Arrow copy of the vectors is freed here
    dim = vectors.shape[1]
    existing = store.space(space)
    if existing is not None and int(existing["dim"]) != dim and not replace:
        raise DimensionMismatch(f"{space} holds {existing['dim']}-D vectors; {name} has {dim}-D ones. "
                                "Import under another --model key, or add --replace.")
    try:
        provenance = json.loads((table.schema.metadata or {}).get(PROVENANCE_KEY, b"{}"))
    except ValueError:
        provenance = None
    provenance = provenance if isinstance(provenance, dict) else {}
    paths = _paths(table, name)
    rest = table.drop_columns([c for c in table.column_names if c in ("path", "path_escaped") or c.startswith("track_")])
    frame = rest.to_pandas(strings_to_categorical=True)  # one Python string per distinct value, not per row
    _segments(frame, name)
    frame.insert(0, "path", paths)
    tags = provenance.get("tag_names")
    prov = Provenance(space, space, dim, str(provenance.get("adapter_version", "imported")),
                      str(provenance.get("weights_sha256", "")), source="imported",
                      tag_names=tuple(tags) if tags else None)
    return store.add_imported(prov, frame, vectors, replace=replace)
