"""Every segment's path, times and track metadata, held in memory to label search results.

A search answers in tens of milliseconds; labelling its k results through
:meth:`core.store.Store.rows` costs a fresh DuckDB connection and a join on
top (30–50 ms on two cores), which would double a query.  A long-lived
caller (the app) therefore reads the labels once per data version and looks
results up here with ``np.searchsorted``: about 40 bytes a segment plus one
row per track (about 45 MB at 1,000,000 segments in 5,000 tracks).  One-shot
callers (the command line) ask the store instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import StoreError
from core.store import RESERVED_COLUMNS, Store

#: Columns of :meth:`Store.rows` that describe the track, from the ``tracks`` table.
_TRACK_COLUMNS = {"duration_s": "track_duration_s", "sample_rate": "track_sample_rate", "channels": "track_channels"}


class RowLabels:
    """The rows :meth:`core.store.Store.rows` gives at segment level, answered from memory.

    Parameters
    ----------
    segments : dict of np.ndarray [shape=(n,)]
        :meth:`core.store.Store.segment_table`: ``segment_id`` (sorted),
        ``track_id``, ``idx``, ``start_s``, ``end_s``.
    tracks : pd.DataFrame [shape=(n_tracks, ...)]
        Indexed by ``track_id``: ``path``, ``path_escaped``, the
        ``track_*`` attributes, then one column per metadata key.
    """

    def __init__(self, segments: dict[str, np.ndarray], tracks: pd.DataFrame):
        self.segments = segments
        self.tracks = tracks

    @classmethod
    def read(cls, store: Store) -> RowLabels:
        """Read every segment's labels in three queries: no string per segment, one row per track."""
        segments = store.segment_table()
        tracks = store.tracks_frame()[["track_id", "path", "path_escaped", *_TRACK_COLUMNS]].rename(columns=_TRACK_COLUMNS)
        tracks = tracks.merge(store.track_metadata(), on="track_id", how="left").set_index("track_id")
        return cls(segments, tracks)

    def rows(self, ids: np.ndarray) -> pd.DataFrame:
        """Path, times, track attributes and metadata of some segments, as :meth:`core.store.Store.rows`.

        Parameters
        ----------
        ids : np.ndarray [shape=(k,), dtype=int]
            Segment ids, any order, repeats allowed.

        Returns
        -------
        pd.DataFrame [shape=(k, ...)]
            In the order of ``ids``: :data:`core.store.RESERVED_COLUMNS`, then
            the metadata keys that these segments' tracks hold.

        Raises
        ------
        StoreError
            If an id is not among the labels (they are of an older version than the ids).
        """
        wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
        known = self.segments["segment_id"]
        pos = np.minimum(np.searchsorted(known, wanted), max(len(known) - 1, 0))
        if len(wanted) and (len(known) == 0 or not np.array_equal(known[pos], wanted)):
            missing = int(np.sum(~np.isin(wanted, known)))
            raise StoreError(f"{missing} of the {len(wanted)} segment ids asked for are not in this store; "
                             "it changed since they were read: reload the view.")
        frame = pd.DataFrame({c: self.segments[c][pos] for c in ("segment_id", "track_id", "idx", "start_s", "end_s")})
        track = self.tracks.loc[frame["track_id"].to_numpy()].reset_index(drop=True)
        out = pd.concat([frame, track], axis=1)
        meta = [c for c in out.columns if c not in RESERVED_COLUMNS and out[c].notna().any()]
        return out[[*RESERVED_COLUMNS, *meta]]

    def of_track(self, track_id: int) -> np.ndarray:
        """Segment ids of one track by start time: a picker lists a track's segments, never all of them."""
        mask = self.segments["track_id"] == track_id
        ids, starts = self.segments["segment_id"][mask], self.segments["start_s"][mask]
        return ids[np.lexsort((ids, starts))]
