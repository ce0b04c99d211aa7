"""Embedding spaces as numpy, at segment or track level, ready for search and comparison.

Search, Compare, Explore, the projections and the clusters all need the same
thing from the store: a space's vectors at segment or track level, the track
of every row, and for several models only the segments they share (imported
vectors keep their own segments, so spaces need not cover the same rows).
The store holds segment vectors only; the track level is derived here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.errors import check_level
from core.store import Store
from core.vectors import normalize


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


def read_vectors(store: Store, key: str, level: str = "segment") -> tuple[np.ndarray, np.ndarray]:
    """A space's vectors at a level: the segment vectors as stored, or each track's scene embedding.

    Parameters
    ----------
    store : Store
    key : str
        A stored space.
    level : {"segment", "track"}
        At track level each track is the L2-normalised mean of its segments'
        L2-normalised vectors (:func:`track_means`), the scene embedding of
        every model.

    Returns
    -------
    ids : np.ndarray [shape=(n,), dtype=int64]
        Sorted segment ids (or track ids).
    vectors : np.ndarray [shape=(n, dim), dtype=float32]
    """
    check_level(level)
    ids, x = store.vectors(key)
    if level == "segment":
        return ids, x
    return track_means(x, store.segment_tracks(ids))


def track_means(segment_vectors: np.ndarray, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scene embedding of each track: the normalised mean of its normalised segment vectors.

    Normalising the segments first means no loud or high-norm segment
    outweighs the others; an uploaded clip queried with
    :func:`core.search.mean_embedding` gets the same vector by the same rule.

    Parameters
    ----------
    segment_vectors : np.ndarray [shape=(n, dim)]
    track_ids : np.ndarray [shape=(n,)]
        The track of each row.

    Returns
    -------
    tracks : np.ndarray [shape=(n_tracks,), dtype=int64]
        Sorted.
    means : np.ndarray [shape=(n_tracks, dim), dtype=float32]
        Unit rows.
    """
    from scipy.sparse import csr_matrix

    tracks, inverse = np.unique(np.asarray(track_ids), return_inverse=True)
    n = len(inverse)
    membership = csr_matrix((np.ones(n, np.float32), (inverse.reshape(-1), np.arange(n))), shape=(len(tracks), n))
    return tracks.astype(np.int64), normalize(membership @ normalize(segment_vectors))


def load(store: Store, key: str, level: str = "segment") -> Space:
    """Read a space and normalise its rows once, in place, so that cosine is a dot product.

    The read array is this call's own, so normalising it in place keeps one
    copy of the vectors resident (2 GB at 1,000,000 × 512), not two.
    """
    info = store.require_space(key)
    ids, x = read_vectors(store, key, level)
    track_ids = ids if level == "track" else store.segment_tracks(ids)
    return Space(key, level, ids, normalize(x, copy=False), track_ids, int(info["dim"]), info["tag_names"])


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
