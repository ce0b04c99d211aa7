"""Approximate nearest neighbours for spaces too large to scan on every query.

Exact search (:mod:`core.search`) reads every stored value per query.  Above
about 2,000,000 × 512 values even its int8 sketch takes more than 100 ms on
two cores, and the float32 matrix alone outgrows memory (10 GB at
5,000,000 × 512).  Such a space gets an inverted-file index (faiss
``IndexIVFScalarQuantizer``): spherical k-means cuts the unit sphere into
cells, every vector is kept as float16 in the list of its nearest cell
centre, and a query scores only the vectors of the cells nearest to it.

Why this index (measured in ``bench/README.md``, "Approximate search"):

* **float16 codes.**  Neighbours in a collection are near-ties (the segments
  of one track score within about 0.001 of each other), and int8 codes
  reorder them: at 1,000,000 × 512 recall@10 stops at 0.976 with int8 cells
  however many are probed, where float16 reaches 1.000.  float16 scores are
  within about 1e-4 of float32, so only the cells left unprobed cost recall;
  the codes take 5.1 GB at 5,000,000 × 512, half the float32 matrix.
* **Inverted lists, not a graph (HNSW).**  A scan of the probed cells costs
  the same for 10 results as for 2,560, which is what ranking tracks needs
  (each track is scored by its best segment, so many segments are fetched
  to find k distinct tracks); a graph must widen its beam for that.  At
  1,000,000 × 512 usearch's HNSW (float16) found 0.902 of the top 10 at
  beam 1,024, and built 4-5× slower.

An index is built once per data version and stored beside the DuckDB file,
in ``<db>.index/``, under a name made of the space, its data version and a
digest of its provenance (:func:`index_path`); :func:`refresh` builds it
when that name has no file yet and deletes the files of older versions.
Scores returned are those of the float16 codes (cosine similarity to about
1e-4), results are approximate: :func:`core.search.search_store` only uses
an index above :data:`core.search.EXACT_SEARCH_MAX_VALUES`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.errors import BadInput, StoreError, check_level
from core.progress import ProgressFn
from core.vectors import normalize

#: Training vectors per cell: faiss asks for at least 39, more buys little.
TRAIN_PER_CELL = 64

#: Rows read, normalised and added per step while building (128 MB of float32 at 512-D).
BATCH_ROWS = 65_536

#: Share of the cells a query probes.  Chosen on ``bench/bench_ann.py`` at
#: 5,000,000 × 512, where recall@10 is 0.985 for segments at 1/16 and 0.958
#: for tracks at 1/8: tracks need more, because the best segments of ten
#: different tracks lie in more cells than the ten best segments.
PROBE_SHARE = {"segment": 1 / 16, "track": 1 / 8}

#: Bumped whenever the files' layout or the index type changes, so old files count as stale.
FORMAT = 1

#: One batch of a space: ``(segment_ids, track_ids, vectors)``, shapes ``(n,), (n,), (n, dim)``.
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def cells_for(n: int) -> int:
    """How many cells (inverted lists) an index of ``n`` vectors gets.

    The power of two nearest to ``2·√n`` (2,048 at 1,000,000 rows, 4,096 at
    5,000,000), so a cell holds about ``√n / 2`` vectors and a query that
    probes a fixed share of cells scans a fixed share of the space; capped
    so that every cell has :data:`TRAIN_PER_CELL` training vectors.
    """
    if n < 1:
        raise BadInput("There are no vectors to index.")
    cells = 2 ** round(np.log2(max(1.0, 2 * np.sqrt(n))))
    return int(max(1, min(cells, 2 ** int(np.log2(max(1, n // TRAIN_PER_CELL))))))


@dataclass
class VectorIndex:
    """An IVF index of float16 unit vectors whose ids are segment ids, with each segment's track.

    Build it with :func:`build` (or :func:`refresh` for a stored space).
    """

    ivf: object  # faiss.IndexIVFScalarQuantizer, inner product
    segment_ids: np.ndarray  # [shape=(n,), dtype=int64], sorted
    track_ids: np.ndarray  # [shape=(n,), dtype=int64], the track of each segment id

    def __post_init__(self) -> None:
        # One query scans on one core (faiss's default, parallel_mode 0): splitting its probes over two
        # cores measured 2-3x slower at 5,000,000 x 512, more so while other jobs hold the cores.
        self.ivf.parallel_mode = 0
        self.segments_per_track = -(-len(self.segment_ids) // max(1, len(np.unique(self.track_ids))))

    @property
    def dim(self) -> int:
        return int(self.ivf.d)

    @property
    def nbytes(self) -> int:
        """Memory held: codes and ids of the lists, cell centres, and the segment → track table."""
        return int(self.ivf.ntotal * (self.ivf.code_size + 8) + self.ivf.nlist * self.dim * 4
                   + self.segment_ids.nbytes + self.track_ids.nbytes)

    def tracks_of(self, segment_ids: np.ndarray) -> np.ndarray:
        return self.track_ids[np.searchsorted(self.segment_ids, segment_ids)]

    def search(self, query: np.ndarray, *, k: int = 10, level: str = "segment", exclude: np.ndarray | None = None,
               probe_share: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k segments, or top-k tracks by their best segment, for one unit query.

        At track level the index is asked for ``k`` × (mean segments per
        track) segments, four times more while fewer than ``k`` distinct
        tracks come back (and more can); the first segment of each track in
        that ranking is its best, so the first ``k`` distinct tracks are the
        top k, as :func:`core.search.rank_tracks` ranks them.

        Parameters
        ----------
        query : np.ndarray [shape=(dim,), dtype=float32]
            Unit length (:func:`core.search.search_store` checks and normalises it).
        k : int > 0
        level : {"segment", "track"}
        exclude : np.ndarray [shape=(m,), dtype=int64], optional
            Segment ids never to return (the query's own track, a tag
            filter); the scan skips them through a bitmap of the ids.
        probe_share : float in (0, 1], optional
            Share of the cells to scan; default :data:`PROBE_SHARE` of the level.

        Returns
        -------
        segment_ids : np.ndarray [shape=(k',), dtype=int64]
            Best first: the segments, or each track's best segment.
        scores : np.ndarray [shape=(k',), dtype=float32]
            Cosine similarity of the float16 codes.
        """
        import faiss

        check_level(level)
        share = PROBE_SHARE[level] if probe_share is None else float(probe_share)
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        n_left = len(self.segment_ids)
        params = faiss.SearchParametersIVF(nprobe=max(1, min(self.ivf.nlist, round(share * self.ivf.nlist))))
        if exclude is not None and len(exclude):
            gone = np.unique(np.asarray(exclude, dtype=np.int64))
            pos = np.minimum(np.searchsorted(self.segment_ids, gone), n_left - 1)
            gone = gone[self.segment_ids[pos] == gone]  # ids the index holds
            n_left -= len(gone)
            # Bit i of the bitmap (little-endian within each byte) allows segment id i.
            allowed = np.full(int(self.segment_ids[-1]) // 8 + 1, 255, dtype=np.uint8)
            np.bitwise_and.at(allowed, gone >> 3, ~np.left_shift(1, gone & 7).astype(np.uint8))
            params.sel = faiss.IDSelectorBitmap(allowed)  # the wrapper keeps the bitmap alive
        if n_left < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if level == "segment":
            return self._search(q, min(k, n_left), params)
        fetch = min(n_left, k * self.segments_per_track)
        while True:
            ids, scores = self._search(q, fetch, params)
            _, first = np.unique(self.tracks_of(ids), return_index=True)
            first.sort()
            if len(first) >= k or fetch >= n_left or len(ids) < fetch:
                break
            fetch = min(n_left, 4 * fetch)
        first = first[:k]
        return ids[first], scores[first]

    def _search(self, q: np.ndarray, k: int, params) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.ivf.search(q, k, params=params)
        found = ids[0] >= 0  # fewer vectors than k in the probed cells
        return ids[0][found], scores[0][found]


def build(batches: Sequence[Callable[[], Batch]], n: int, dim: int, *, seed: int = 0,
          progress: ProgressFn | None = None) -> VectorIndex:
    """Build the index of a space read batch by batch, never holding it whole.

    Two passes: vectors drawn at random from a random subset of the batches
    train the cells, then every batch is normalised and added.

    Parameters
    ----------
    batches : sequence of callables
        ``batches[i]()`` returns batch ``i`` as ``(segment_ids, track_ids,
        vectors)`` (``vectors`` any scale, ``(rows, dim)``), the same each
        time it is called; a batch is read once or twice.
    n : int
        Rows in all batches together.
    dim : int
    seed : int
        For the training sample and k-means: one input, one index.
    progress : callable, optional
        ``progress(rows_added, n, step)`` after each batch (:mod:`core.progress`).
    """
    import faiss

    cells = cells_for(n)
    rng = np.random.default_rng(seed)
    wanted = cells * TRAIN_PER_CELL
    # Reading a batch costs the same for 1 row as for all, so sample 4× more batches than the rows need.
    n_read = min(len(batches), max(8, -(-4 * wanted * len(batches) // max(1, n))))
    sample = []
    for i in np.sort(rng.choice(len(batches), n_read, replace=False)):
        _, _, x = batches[i]()
        take = rng.choice(len(x), min(len(x), -(-wanted // n_read)), replace=False)
        sample.append(normalize(x[np.sort(take)]))
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, cells, faiss.ScalarQuantizer.QT_fp16,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True  # unit cell centres: the nearest by inner product is the nearest by cosine
    index.cp.seed = seed
    index.train(np.concatenate(sample))
    del sample
    ids, tracks = [], []
    for batch in batches:
        segment_ids, track_ids, x = batch()
        if x.ndim != 2 or x.shape[1] != dim:
            raise BadInput(f"A batch holds vectors of shape {x.shape}; the index is {dim}-D.")
        index.add_with_ids(normalize(x), np.asarray(segment_ids, dtype=np.int64))
        ids.append(np.asarray(segment_ids, dtype=np.int64))
        tracks.append(np.asarray(track_ids, dtype=np.int64))
        if progress is not None:
            progress(int(index.ntotal), n, f"indexing {n:,} vectors for approximate search")
    ids, tracks = np.concatenate(ids), np.concatenate(tracks)
    order = np.argsort(ids, kind="stable")
    return VectorIndex(index, ids[order], tracks[order])


# ---------------------------------------------------------------------- beside the store


def index_path(store, space: str) -> Path:
    """Where the index of a space's current data lives: ``<db>.index/<space>-v<data version>-<digest>``.

    The digest covers the provenance (a re-extraction with other weights
    restarts the data version at 0) and :data:`FORMAT`; the two files of an
    index add ``.faiss`` and ``.rows.npy`` to this path.
    """
    info = store.space(space)
    if info is None:
        raise StoreError(f"No embeddings for {space!r} in this store; extract it first.")
    provenance = [FORMAT, space, int(info["dim"]), info["adapter_version"], info["weights_sha256"],
                  info["source"], str(info["created_at"])]
    digest = hashlib.sha256(json.dumps(provenance, default=str).encode()).hexdigest()[:12]
    return _folder(store) / f"{_slug(space)}-v{int(info['data_version'])}-{digest}"


def refresh(store, space: str, *, progress: ProgressFn | None = None) -> VectorIndex:
    """The index of a stored space's current data: read from disk, or built, saved and returned.

    Call it when the data can change (after extraction or import, or when a
    collection is published) or before searching; the files of earlier
    versions of the space are deleted.  If the space changes while it is
    read, the build starts again.

    Parameters
    ----------
    store : core.store.Store
    space : str
    progress : callable, optional
        ``progress(rows_added, total, step)`` while building (:mod:`core.progress`).
    """
    for _ in range(3):
        path = index_path(store, space)
        if _complete(path):
            return load(path)
        ids = store.segment_ids(space)
        cuts = np.append(ids[::BATCH_ROWS], ids[-1] + 1) if len(ids) else np.zeros(1, np.int64)
        batches = [functools.partial(store.vectors_between, space, int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:])]
        index = build(batches, len(ids), int(store.space(space)["dim"]), progress=progress)
        if index_path(store, space) == path and len(index.segment_ids) == len(ids):
            save(index, path)
            _remove_stale(path)
            return index
    raise StoreError(f"{space} kept changing while its search index was built; search again once writing has finished.")


def save(index: VectorIndex, path: Path) -> None:
    """Write both files under temporary names, then rename: a reader never sees half an index."""
    import faiss

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    np.save(f"{tmp}.rows.npy", np.stack([index.segment_ids, index.track_ids]))
    faiss.write_index(index.ivf, f"{tmp}.faiss")
    os.replace(f"{tmp}.rows.npy", f"{path}.rows.npy")
    os.replace(f"{tmp}.faiss", f"{path}.faiss")


def load(path: Path) -> VectorIndex:
    import faiss

    rows = np.load(f"{path}.rows.npy")
    return VectorIndex(faiss.read_index(f"{path}.faiss"), rows[0], rows[1])


def _folder(store) -> Path:
    return store.path.with_name(store.path.name + ".index")


def _slug(space: str) -> str:
    """A file name for any space key (keys may hold ``/`` and ``:``), unique by its digest."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", space)[-48:]
    return f"{readable}-{hashlib.sha256(space.encode()).hexdigest()[:8]}"


def _complete(path: Path) -> bool:
    return Path(f"{path}.faiss").is_file() and Path(f"{path}.rows.npy").is_file()


def _remove_stale(path: Path) -> None:
    """Delete the files of the space's other versions (not temporary files of builds in progress)."""
    prefix = path.name.rsplit("-v", 1)[0] + "-v"
    for f in path.parent.iterdir():
        if f.name.startswith(prefix) and not f.name.startswith(path.name + "."):
            f.unlink(missing_ok=True)
