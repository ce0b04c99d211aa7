"""Tables behind the Explore and Compare maps: points joined to their segments and metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: Columns of :meth:`core.store.Store.segments_frame` that are not user metadata.
BASE_COLUMNS = ("segment_id", "track_id", "idx", "start_s", "end_s", "path",
                "track_duration_s", "track_sample_rate", "track_channels")

#: A categorical colour keeps this many categories; the long tail becomes "other".
MAX_CATEGORIES = 20


def metadata_columns(segments: pd.DataFrame) -> list[str]:
    return [c for c in segments.columns if c not in BASE_COLUMNS]


def map_frame(segments: pd.DataFrame, ids: np.ndarray, xy: np.ndarray, level: str = "segment") -> pd.DataFrame:
    """One row per map point: id, x, y, path, name, start/end and metadata.

    At track level a point is a track; it is played from its start and its
    ``end_s`` is the track's end.
    """
    if level == "segment":
        base = segments.set_index("segment_id").reindex(ids)
    else:
        tracks = segments.sort_values(["track_id", "start_s"]).groupby("track_id", sort=True)
        base = tracks.first().assign(end_s=tracks["end_s"].max()).reindex(ids)
    frame = base.reset_index(drop=True)
    frame.insert(0, "id", np.asarray(ids, dtype=np.int64))
    frame.insert(1, "x", xy[:, 0])
    frame.insert(2, "y", xy[:, 1])
    frame["name"] = [Path(p).name if isinstance(p, str) else "" for p in frame["path"]]
    return frame


def colour_column(values: pd.Series, max_categories: int = MAX_CATEGORIES) -> pd.Series:
    """Numbers stay numbers; text keeps its most frequent categories and folds the rest into 'other'."""
    if pd.api.types.is_numeric_dtype(values):
        return values
    text = values.astype("string").fillna("(missing)")
    counts = text.value_counts()
    if len(counts) <= max_categories:
        return text
    keep = set(counts.index[: max_categories - 1])
    return text.where(text.isin(keep), "other")
