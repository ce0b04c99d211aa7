"""Parquet in and out: share a model's vectors, or bring your own from a batch job.

The layout is one row per segment: ``path``, ``start_s``, ``end_s``, every
metadata column under its own name, the track attributes as
``track_duration_s``, ``track_sample_rate`` and ``track_channels``, and
``vector`` as a fixed-size list of float32.  The space's provenance travels
in the file's key-value metadata (``aeb:provenance``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import BadInput, DimensionMismatch
from core.store import Provenance, Store, metadata_columns

PROVENANCE_KEY = b"aeb:provenance"


def export_parquet(store: Store, space: str, out: str | Path) -> int:
    """Write a space's vectors with their segments and metadata; returns the row count."""
    info = store.require_space(space)
    ids, vectors = store.vectors(space)
    frame = store.rows(ids)
    ordered = frame[["path", "start_s", "end_s", *metadata_columns(frame),
                     "track_duration_s", "track_sample_rate", "track_channels"]]
    table = pa.Table.from_pandas(ordered, preserve_index=False)
    table = table.append_column("vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]))
    provenance = {k: info[k] for k in ("space", "model", "dim", "adapter_version", "weights_sha256", "window_s", "hop_s", "source")}
    provenance["created_at"] = str(info["created_at"])
    provenance["tag_names"] = info["tag_names"]
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PROVENANCE_KEY: json.dumps(provenance, default=str).encode()})
    pq.write_table(table, str(out))
    return len(ids)


def import_parquet(store: Store, path: str | Path, space: str) -> int:
    """Store precomputed vectors (columns path, start_s, end_s, vector, optional metadata).

    Raises
    ------
    DimensionMismatch
        When the vectors' dimension differs from vectors already stored
        under the same key: never a silent mix.
    """
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise BadInput(f"{Path(path).name} cannot be read as Parquet ({str(exc).splitlines()[0]}); "
                       "give a file written by `python -m core export` or by pyarrow.") from None
    missing = {"path", "start_s", "end_s", "vector"} - set(table.column_names)
    if missing:
        raise BadInput(f"{Path(path).name} lacks the column(s) {', '.join(sorted(missing))}; "
                       "it needs path, start_s, end_s and vector.")
    name = Path(path).name
    if table.num_rows == 0:
        raise BadInput(f"{name} holds no rows; export some vectors into it first.")
    vec_col = table.column("vector").combine_chunks()
    if vec_col.null_count or not (pa.types.is_list(vec_col.type) or pa.types.is_large_list(vec_col.type)
                                  or pa.types.is_fixed_size_list(vec_col.type)):
        raise BadInput(f"{name}'s vector column must hold one list of numbers per row, with no empty rows.")
    if pa.types.is_fixed_size_list(vec_col.type):
        dim = vec_col.type.list_size
        vectors = vec_col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    else:
        rows = vec_col.to_pylist()
        dims = {len(r) for r in rows}
        if len(dims) != 1:
            raise DimensionMismatch(f"{name} mixes vector lengths {sorted(dims)}; write one length per file.")
        dim = dims.pop()
        vectors = np.asarray(rows, dtype=np.float32).reshape(-1, dim)
    if not np.isfinite(vectors).all():
        raise BadInput(f"{name} holds NaN or infinite vector values; fix or drop those rows.")
    existing = store.space(space)
    if existing is not None and int(existing["dim"]) != dim:
        raise DimensionMismatch(f"{space} holds {existing['dim']}-D vectors; {name} has {dim}-D ones. "
                                "Import under another --model key.")
    provenance = json.loads((table.schema.metadata or {}).get(PROVENANCE_KEY, b"{}"))
    frame = table.drop_columns(["vector"]).to_pandas()
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("track_")])
    frame["path"] = [str(Path(p).expanduser().resolve()) if not str(p).startswith(("http:", "https:")) else p
                     for p in frame["path"]]
    prov = Provenance(space, space, dim, str(provenance.get("adapter_version", "imported")),
                      str(provenance.get("weights_sha256", "")), source="imported",
                      tag_names=tuple(provenance["tag_names"]) if provenance.get("tag_names") else None)
    return store.add_imported(prov, frame, vectors.astype(np.float32))
