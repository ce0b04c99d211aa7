"""Embedding spaces as numpy, ready for search and comparison.

Search, Compare and Explore all need the same thing from the store: a
space's L2-normalised vectors at segment or track level, the track of every
row, and for several models only the segments they share (imported vectors
keep their own segments, so spaces need not cover the same rows).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from core.store import Store, StoreError
from core.vectors import normalize

LEVELS = ("segment", "track")


@dataclasses.dataclass
class Space:
    """One space at one level.

    ``ids`` are segment ids (or track ids at track level), sorted;
    ``vectors`` are unit rows; ``track_ids`` gives each row's track.
    """

    key: str
    level: str
    ids: np.ndarray
    vectors: np.ndarray
    track_ids: np.ndarray
    dim: int
    tag_names: list[str] | None = None


def load(store: Store, key: str, level: str = "segment") -> Space:
    """Read a space and normalise its rows once, so that cosine is a dot product."""
    if level not in LEVELS:
        raise StoreError(f"level must be 'segment' or 'track', not {level!r}")
    info = store.space(key)
    if info is None:
        have = ", ".join(store.spaces()["space"]) or "none"
        raise StoreError(f"No embeddings for {key!r} in this store (stored: {have}); extract it first.")
    ids, x = store.vectors(key, level=level)
    if level == "track":
        track_ids = ids
    else:
        track_ids = segment_tracks(store).reindex(ids).to_numpy(np.int64)
    return Space(key, level, ids, normalize(x), track_ids, int(info["dim"]), info["tag_names"])


def segment_tracks(store: Store) -> pd.Series:
    """segment_id -> track_id for every segment."""
    with store.connect(read_only=True) as con:
        seg = con.sql("SELECT segment_id, track_id FROM segments").fetchnumpy()
    return pd.Series(seg["track_id"], index=seg["segment_id"])


def aligned(spaces: list[Space]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Restrict several spaces to the rows they all have, in one order.

    Returns
    -------
    ids : np.ndarray [shape=(n,)]
    vectors : list of np.ndarray [shape=(n, dim_i)]
    track_ids : np.ndarray [shape=(n,)]
    """
    common = spaces[0].ids
    for s in spaces[1:]:
        common = np.intersect1d(common, s.ids, assume_unique=True)
    out = []
    for s in spaces:
        pos = np.searchsorted(s.ids, common)
        out.append(s.vectors[pos])
    pos0 = np.searchsorted(spaces[0].ids, common)
    return common, out, spaces[0].track_ids[pos0]


def rows_frame(store: Store, ids: np.ndarray, level: str = "segment") -> pd.DataFrame:
    """Path, start, end and metadata for result rows, in the order of ``ids``.

    At track level, ``start_s``/``end_s`` span the whole track.
    """
    seg = store.segments_frame()
    if level == "segment":
        frame = seg.set_index("segment_id").reindex(ids)
    else:
        grouped = seg.groupby("track_id")
        frame = grouped.first().assign(start_s=grouped["start_s"].min(), end_s=grouped["end_s"].max()).reindex(ids)
    return frame.reset_index(names="segment_id" if level == "segment" else "track_id")


def metadata_of(row: pd.Series, columns: list[str]) -> dict:
    """The JSON-safe metadata of one row (missing values left out)."""
    out = {}
    for c in columns:
        v = row.get(c)
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            continue
        out[c] = v.item() if hasattr(v, "item") else v
    return json.loads(json.dumps(out, default=str))
