"""Cosine top-k over stored vectors: text → audio, audio → audio, segment → track.

Search is exact: every stored vector is scored, and the top k are the true
top k.  A single query reads each stored value once, so its cost is the time
to stream the matrix from memory: about 0.15 s for 1,000,000 × 512 float32 on
two cores.  For large spaces the app therefore keeps a :class:`Sketch`, an
int8 copy of the matrix (a quarter of its bytes), scans that instead, and
rescores in float32 only the rows that a proven error bound cannot rule out
(:func:`search`).  The result is the same as a full float32 scan; only the
work changes.  The stored matrix is normalised once after loading
(:func:`normalize`), so that a cosine score is a plain dot product and no
per-query copy of the matrix is made.

Every function here works on numpy arrays (the sketch holds torch tensors for
its int8 kernel).  A query that cannot run raises :class:`SearchError` with
one sentence a user can act on, never an empty result.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from core.errors import BadInput, check_k, check_level
from core.jsonable import jsonable
from core.vectors import normalize

#: Stored values (rows × dimensions) above which even the int8 sketch scan
#: takes longer than about 100 ms on a two-core machine (it streams one byte
#: per value at roughly 10 GB/s); beyond it :func:`search_store` answers from
#: an approximate index (:mod:`core.index`).  Set it (or pass ``exact_max_values``)
#: to move the line.
EXACT_SEARCH_MAX_VALUES = 2_000_000 * 512

#: Below this many stored values a float32 scan takes under about 10 ms, and
#: a sketch would cost memory for nothing.
SKETCH_MIN_VALUES = 1 << 25

#: Rows quantised per step when a sketch is built (bounds the temporaries).
_SKETCH_BLOCK = 1 << 16

#: Score values held at once when many queries or labels are scored together (64 MB).
_SCORE_BLOCK_VALUES = 1 << 24

#: Relative tolerance of the check that stored rows are unit vectors.
_NORM_TOLERANCE = 1e-3


#: A search that cannot run raises the family's :class:`~core.errors.BadInput`.
SearchError = BadInput


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    """Catch an unnormalised or empty matrix here, where the reason is still known."""
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise SearchError(f"Stored vectors must be a 2-D array (rows × dimensions), not {m.ndim}-D.")
    if m.shape[0] == 0:
        raise SearchError("There are no stored vectors to search; extract embeddings with this model first.")
    if m.dtype != np.float32:
        raise SearchError(f"Stored vectors must be float32 (pass them through normalize once), not {m.dtype}.")
    probe = m[np.linspace(0, len(m) - 1, num=min(len(m), 32)).astype(np.int64)]
    norms = np.sqrt(np.einsum("ij,ij->i", probe, probe, dtype=np.float64))
    if not np.all((np.abs(norms - 1.0) < _NORM_TOLERANCE) | (norms == 0)):
        raise SearchError("Stored vectors are not L2-normalised; pass them through normalize once after loading.")
    return m


def _check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Normalise queries, refusing those that would give meaningless scores."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim not in (1, 2):
        raise SearchError(f"A query must be one vector or a 2-D array of vectors, not {q.ndim}-D.")
    if q.shape[-1] != dim:
        raise SearchError(
            f"The query has {q.shape[-1]} dimensions but the stored vectors have {dim}; "
            "embed the query with the same model as the stored vectors."
        )
    q2 = q.reshape(-1, dim)
    if len(q2) == 0:
        raise SearchError("No query vector was given.")
    if not np.all(np.isfinite(q2)):
        raise SearchError("The query vector contains NaN or infinity; check the query audio or text.")
    norms = np.linalg.norm(q2, axis=1)
    if np.any(norms == 0):
        raise SearchError("The query vector is all zeros (silent audio?); choose another query.")
    return (q2 / norms[:, None]).reshape(q.shape)


def _check_request(query: np.ndarray, dim: int, k: int, level: str) -> np.ndarray:
    """The unit query of a one-query search, once its ``k`` and ``level`` are known to be usable."""
    q = _check_queries(query, dim)
    if q.ndim != 1:
        raise SearchError("search takes one query vector; use top_k for several.")
    check_k(k)
    check_level(level)
    return q


def cosine_scores(matrix: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Score every stored vector against the queries with one matrix product.

    Parameters
    ----------
    matrix : np.ndarray [shape=(n, dim), dtype=float32]
        Stored vectors, L2-normalised by :func:`normalize`.
    queries : np.ndarray [shape=(dim,) or (m, dim)]
        Any scale; they are normalised here.

    Returns
    -------
    scores : np.ndarray [shape=(n,) or (m, n), dtype=float32]
        Cosine similarity in [-1, 1].

    Raises
    ------
    SearchError
        For an empty or unnormalised matrix, a dimension mismatch, or a zero
        or non-finite query.
    """
    m = _check_matrix(matrix)
    q = _check_queries(queries, m.shape[1])
    return m @ q if q.ndim == 1 else q @ m.T


_NOTHING_LEFT = ("Nothing is left to search once the excluded rows are left out (the query's own track, "
                 "a tag filter); include the own track or relax the filter.")


def _mask(exclude: np.ndarray, n: int) -> np.ndarray:
    """An exclusion mask as booleans, refused unless it has one value per stored vector."""
    mask = np.asarray(exclude, dtype=bool)
    if mask.shape != (n,):
        raise SearchError(f"The exclusion mask has shape {mask.shape} but there are {n} stored vectors.")
    return mask


def _masked(scores: np.ndarray, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Scores with excluded rows at -inf, and how many rows are left, refusing a search with nothing left."""
    s = np.asarray(scores, dtype=np.float32)
    check_k(k)
    if exclude is None:
        return s, len(s)
    mask = _mask(exclude, len(s))
    if mask.all():
        raise SearchError(_NOTHING_LEFT)
    return np.where(mask, np.float32(-np.inf), s), int(len(s) - mask.sum())


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first, ties broken by lower index so results are reproducible."""
    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        top = np.flatnonzero(scores >= kth)
    else:
        top = np.arange(len(scores))
    return top[np.lexsort((top, -scores[top]))][:k]


def rank_segments(
    scores: np.ndarray,
    *,
    k: int = 10,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best k segments for one query, from the scores of :func:`cosine_scores`.

    Parameters
    ----------
    scores : np.ndarray [shape=(n,)]
    k : int > 0
        Fewer are returned only when fewer segments remain.
    exclude : np.ndarray [shape=(n,), dtype=bool], optional
        Segments never to return, e.g. ``track_ids == query_track`` for
        "more like this" outside the query's own track.

    Returns
    -------
    indices : np.ndarray [shape=(min(k, n_left),), dtype=int64]
        Row numbers into the stored matrix, best first.
    scores : np.ndarray [shape=(min(k, n_left),), dtype=float32]
    """
    s, n_left = _masked(scores, k, exclude)
    idx = _best(s, min(k, n_left))
    return idx, s[idx]


def rank_tracks(
    scores: np.ndarray,
    track_ids: np.ndarray,
    *,
    k: int = 10,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best k tracks for one query, each scored by its best segment.

    A track's score is the maximum over its segments.  The user looks for a
    moment ("solo trumpet", "a dog barks"), and a track that contains it once
    should rank high however long it is; a mean over segments would bury it
    under the rest of the track.  The best segment is returned so the result
    can play exactly that moment.

    Parameters
    ----------
    scores : np.ndarray [shape=(n,)]
        Segment scores from :func:`cosine_scores`.
    track_ids : np.ndarray [shape=(n,)]
        The track of each segment (any sortable dtype).
    k : int > 0
    exclude : np.ndarray [shape=(n,), dtype=bool], optional
        Segments to ignore, e.g. those of the query's own track.

    Returns
    -------
    tracks : np.ndarray [shape=(min(k, n_tracks_left),)]
        Track ids, best first.
    track_scores : np.ndarray [shape=(min(k, n_tracks_left),), dtype=float32]
    best_segments : np.ndarray [shape=(min(k, n_tracks_left),), dtype=int64]
        Row of each track's best segment in the stored matrix.
    """
    s, n_left = _masked(scores, k, exclude)
    tid = np.asarray(track_ids)
    if tid.shape != s.shape:
        raise SearchError(f"There are {len(tid)} track ids for {len(s)} segment scores.")
    # The first k distinct tracks among the best segments are the k best
    # tracks under the max rule; widen the window until it holds k of them.
    window = min(n_left, 4 * k)
    while True:
        best = _best(s, window)
        _, first = np.unique(tid[best], return_index=True)
        first.sort()
        if len(first) >= k or window == n_left:
            break
        window = min(n_left, 4 * window)
    rows = best[first[:k]]
    return tid[rows], s[rows], rows


def top_k(
    matrix: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 10,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest stored vectors of one or more queries by cosine similarity.

    Parameters
    ----------
    matrix : np.ndarray [shape=(n, dim), dtype=float32]
        Stored vectors, L2-normalised by :func:`normalize`.
    queries : np.ndarray [shape=(dim,) or (m, dim)]
    k : int > 0
    exclude : np.ndarray [shape=(n,), dtype=bool], optional
        Rows never to return, for every query.

    Returns
    -------
    indices : np.ndarray [shape=(k',) or (m, k'), dtype=int64]
        Best first; ``k' = min(k, rows left after exclusion)``.
    scores : np.ndarray [shape=(k',) or (m, k'), dtype=float32]
    """
    q = np.asarray(queries)
    if q.ndim == 1:
        return rank_segments(cosine_scores(matrix, q), k=k, exclude=exclude)
    ranked = []
    step = max(1, _SCORE_BLOCK_VALUES // max(1, len(matrix)))
    for start in range(0, len(q), step):
        ranked += [rank_segments(row, k=k, exclude=exclude) for row in cosine_scores(matrix, q[start:start + step])]
    if not ranked:
        raise SearchError("No query vector was given.")
    return np.stack([r[0] for r in ranked]), np.stack([r[1] for r in ranked])


def _rank(scores: np.ndarray, k: int, level: str, track_ids, exclude) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the top k segments, or of each top-k track's best segment."""
    if level == "segment":
        return rank_segments(scores, k=k, exclude=exclude)
    _, track_scores, rows = rank_tracks(scores, track_ids, k=k, exclude=exclude)
    return rows, track_scores


@dataclass(frozen=True)
class Sketch:
    """An int8 copy of a unit matrix whose scoring error is bounded row by row.

    Row ``i`` is kept as ``codes[i] * scale[i]`` (symmetric int8 per row; the
    scale is bfloat16 because the int8 kernel takes it so), and
    ``residual[i]`` is ``||x_i - x̂_i||``, rounded up.  That is all
    :meth:`candidates` needs to prove which rows cannot reach the top k.
    Build it with :func:`build_sketch`.
    """

    codes: object  # torch.Tensor [shape=(n, dim), dtype=int8]
    scale: object  # torch.Tensor [shape=(n,), dtype=bfloat16]
    residual: np.ndarray  # [shape=(n,), dtype=float32]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + 2 * len(self.scale) + self.residual.nbytes

    def bounds(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sketch scores ``ŝ`` of a unit query, and how far each can be from the float32 score.

        The kernel multiplies the bfloat16 query ``q̂`` with ``x̂`` in float32
        and rounds to bfloat16, so

        ``|ŝ - q·x| ≤ ||q||·||x̂ - x|| + ||q̂ - q||·||x̂||``  (the roundings of rows and query)
        ``+ d·2⁻²³·||q̂||·||x̂||``                          (float32 accumulation, twice its textbook bound)
        ``+ 2⁻⁷·|ŝ|``                                      (the bfloat16 result, twice its bound),

        with ``||x̂|| ≤ 1.001 + ||x̂ - x||`` for rows normalised by :func:`normalize`.

        Returns
        -------
        scores, slack : np.ndarray [shape=(n,), dtype=float32]
        """
        import torch

        q = np.ascontiguousarray(query, dtype=np.float32)
        with torch.inference_mode():
            q_hat = torch.from_numpy(q[None]).to(torch.bfloat16)
            scores = torch._weight_int8pack_mm(q_hat, self.codes, self.scale)[0].float()
            q_hat = q_hat.float().numpy()[0].astype(np.float64)
            q_err = float(np.linalg.norm(q_hat - q))
            accumulation = len(q) * 2.0 ** -23 * float(np.linalg.norm(q_hat))
            per_residual = float(np.linalg.norm(q)) * (1 + 1e-6) + q_err + accumulation
            # In torch: four in-place passes on both cores instead of numpy temporaries.
            slack = scores.abs().mul_(2.0 ** -7)
            slack.add_(torch.from_numpy(self.residual), alpha=per_residual).add_(1.001 * (q_err + accumulation))
        return scores.numpy(), slack.numpy()

    def candidates(self, matrix: np.ndarray, query: np.ndarray, k: int, level: str, track_ids,
                   exclude) -> np.ndarray | None:
        """Rows that may belong to the exact top k; ``None`` where a full scan is as cheap.

        The rows with the best sketch scores are scored exactly; the k-th of
        them (over distinct tracks when ranking tracks) gives ``τ``, which the
        true k-th result reaches or beats.  A row whose sketch score plus its
        :meth:`bounds` slack stays below ``τ`` can then never be among the
        top k, nor be the best segment of a top-k track.
        """
        approx, slack = self.bounds(query)
        if exclude is not None:
            approx[np.asarray(exclude, dtype=bool)] = -np.inf
            if np.isinf(approx).sum() >= len(approx) - k:
                return None
        if level == "track":
            _, _, lead = rank_tracks(approx, track_ids, k=k)
            if len(lead) < k or not np.isfinite(approx[lead]).all():
                return None
        else:
            lead, _ = rank_segments(approx, k=k)
        tau = np.float32((matrix[lead] @ query).min())
        slack += approx
        rows = np.flatnonzero(slack >= tau)
        return rows if len(rows) <= len(approx) // 8 else None


def build_sketch(matrix: np.ndarray) -> Sketch | None:
    """An int8 sketch of a unit matrix, or ``None`` where it would not pay.

    It costs a quarter of the matrix's memory (plus 6 bytes a row) and is
    built once per loaded space.  ``None`` for matrices under
    :data:`SKETCH_MIN_VALUES`, and where this torch build lacks the int8
    kernel: :func:`search` then scans in float32, with the same results.

    Parameters
    ----------
    matrix : np.ndarray [shape=(n, dim), dtype=float32]
        Stored vectors, L2-normalised by :func:`normalize`.
    """
    import torch

    m = _check_matrix(matrix)
    if m.size < SKETCH_MIN_VALUES:
        return None
    n, dim = m.shape
    codes = torch.empty((n, dim), dtype=torch.int8)
    scale = torch.empty(n, dtype=torch.bfloat16)
    residual = np.empty(n, dtype=np.float32)
    with torch.inference_mode():
        try:
            torch._weight_int8pack_mm(torch.zeros((1, dim), dtype=torch.bfloat16), codes[:1], scale[:1])
        except (AttributeError, NotImplementedError, RuntimeError):
            return None
        for start in range(0, n, _SKETCH_BLOCK):
            stop = min(n, start + _SKETCH_BLOCK)
            with warnings.catch_warnings():
                # The app's matrices are read-only; this block is only read.
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                x = torch.from_numpy(m[start:stop])
            s = (torch.linalg.vector_norm(x, ord=float("inf"), dim=1) / 127).to(torch.bfloat16)
            s32 = s.float()[:, None]
            c = torch.div(x, torch.where(s32 > 0, s32, 1.0)).round_().clamp_(-127, 127)
            codes[start:stop] = c
            scale[start:stop] = s
            c.mul_(s32).sub_(x)  # x̂ - x; x̂ is exact: 7-bit codes times 8-bit scales
            r = torch.linalg.vector_norm(c, dim=1).numpy()
            # Float32 rounding of the norm over d terms is far below 1e-4 relative.
            residual[start:stop] = np.nextafter(r * np.float32(1 + 1e-4), np.float32(np.inf))
    return Sketch(codes, scale, residual)


def search(
    matrix: np.ndarray,
    query: np.ndarray,
    *,
    k: int = 10,
    level: str = "segment",
    track_ids: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    sketch: Sketch | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k segments, or top-k tracks by their best segment, for one query.

    With a ``sketch`` the int8 copy is scanned first and only the rows its
    error bound cannot rule out are scored in float32 (a few hundred of a
    million in ``bench/bench_search.py``); the result is that of the full
    float32 scan either way.

    Parameters
    ----------
    matrix : np.ndarray [shape=(n, dim), dtype=float32]
        Stored vectors, L2-normalised by :func:`normalize`.
    query : np.ndarray [shape=(dim,)]
    k : int > 0
    level : {"segment", "track"}
        See :func:`rank_tracks` for how tracks are scored.
    track_ids : np.ndarray [shape=(n,)], optional
        Required for ``level="track"``.
    exclude : np.ndarray [shape=(n,), dtype=bool], optional
        Rows never to return.
    sketch : Sketch, optional
        From :func:`build_sketch` on the same matrix.

    Returns
    -------
    rows : np.ndarray [shape=(k',), dtype=int64]
        Best first: the segments, or each track's best segment.
    scores : np.ndarray [shape=(k',), dtype=float32]
    """
    m = _check_matrix(matrix)
    q = _check_request(query, m.shape[1], k, level)
    if level == "track" and track_ids is None:
        raise SearchError("Ranking tracks needs the track of every stored segment.")
    rows = None
    if sketch is not None:
        if sketch.shape != m.shape:
            raise SearchError("The sketch was built from other vectors; rebuild it after reloading the space.")
        rows = sketch.candidates(m, q, k, level, track_ids, exclude)
    if rows is None:
        return _rank(m @ q, k, level, track_ids, exclude)
    sub_tracks = None if track_ids is None else np.asarray(track_ids)[rows]
    best, top = _rank(m[rows] @ q, k, level, sub_tracks, None)
    return rows[best], top


def mean_embedding(segment_embeddings: np.ndarray) -> np.ndarray:
    """One vector for audio longer than a segment: the normalised mean of its normalised segment vectors.

    This is the rule of the track-level vectors
    (:func:`core.spaces.track_means`), so an uploaded clip
    and the same audio stored as a track get the same vector, and no loud
    or high-norm segment outweighs the others.

    Parameters
    ----------
    segment_embeddings : np.ndarray [shape=(n_segments, dim)]

    Returns
    -------
    vector : np.ndarray [shape=(dim,), dtype=float32]
        Unit length.
    """
    e = np.asarray(segment_embeddings)
    if e.ndim != 2 or len(e) == 0:
        raise SearchError("The query audio gave no segment embeddings; is it shorter than the model's shortest input?")
    mean = normalize(e).mean(axis=0, dtype=np.float64)
    norm = np.linalg.norm(mean)
    if norm == 0:
        raise SearchError("The query audio's mean embedding is zero (silent audio?); choose another clip.")
    return (mean / norm).astype(np.float32)


def zero_shot(
    segment_vectors: np.ndarray,
    label_vectors: np.ndarray,
    *,
    logit_scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best text label for every segment, for colouring a map by what CLAP hears.

    Parameters
    ----------
    segment_vectors : np.ndarray [shape=(n, dim), dtype=float32]
        Stored vectors, L2-normalised by :func:`normalize`.
    label_vectors : np.ndarray [shape=(n_labels, dim)]
        Text embeddings of the labels, from the same model.
    logit_scale : float, optional
        Without it the score is the cosine similarity of the best label.
        With it the score is the softmax probability of the best label over
        the given labels, of ``logit_scale × cosine`` as CLAP's own zero-shot
        classifier computes it; for a transformers ``ClapModel`` pass
        ``model.logit_scale_a.exp().item()`` (about 1 / temperature).
        Probabilities depend on which other labels were entered.

    Returns
    -------
    best : np.ndarray [shape=(n,), dtype=int64]
        Index into ``label_vectors``.
    score : np.ndarray [shape=(n,), dtype=float32]
    """
    m = _check_matrix(segment_vectors)
    labels = _check_queries(label_vectors, m.shape[1])
    if labels.ndim == 1:
        labels = labels[None, :]
    best = np.empty(len(m), dtype=np.int64)
    score = np.empty(len(m), dtype=np.float32)
    step = max(1, _SCORE_BLOCK_VALUES // len(labels))
    for start in range(0, len(m), step):
        sims = m[start:start + step] @ labels.T
        best[start:start + step] = np.argmax(sims, axis=1)
        top = np.max(sims, axis=1)
        if logit_scale is not None:
            top = 1.0 / np.exp(logit_scale * (sims - top[:, None])).sum(axis=1)
        score[start:start + step] = top
    return best, score


# ---------------------------------------------------------------------- over a store


def exclude_below(ids: np.ndarray, scored_ids: np.ndarray, scores: np.ndarray, minimum: float) -> np.ndarray:
    """The exclusion mask of a score filter, e.g. "tag *calm* scores at least 0.3", for :func:`search_store`.

    Passing the filter to the search as a mask, rather than filtering its
    results, returns exactly k results that pass it whenever k rows do.

    Parameters
    ----------
    ids : np.ndarray [shape=(n,)]
        The searched space's rows (sorted, as in :class:`core.spaces.Space`).
    scored_ids, scores : np.ndarray [shape=(m,)]
        Another space's rows and their score, e.g. one column of a taggram.
    minimum : float

    Returns
    -------
    exclude : np.ndarray [shape=(n,), dtype=bool]
        True where the row's score is below ``minimum`` or it has none.
    """
    ids, scored_ids, scores = np.asarray(ids), np.asarray(scored_ids), np.asarray(scores)
    if len(scored_ids) == 0:
        return np.ones(len(ids), dtype=bool)
    order = np.argsort(scored_ids, kind="stable")
    pos = np.minimum(np.searchsorted(scored_ids[order], ids), len(order) - 1)
    row = order[pos]
    return ~((scored_ids[row] == ids) & (scores[row] >= minimum))


def _metadata_of(row, columns: list[str]) -> dict:
    """The metadata of one result row, JSON-safe, with its empty cells (None, NaN, NA) left out."""
    import pandas as pd

    return jsonable({c: row[c] for c in columns
                     if not (row[c] is None or row[c] is pd.NA or (isinstance(row[c], float) and row[c] != row[c]))})


def index_for(store, space, *, exact_max_values: int | None = None, progress=None):
    """The approximate index of a space too large for exact search, or ``None`` for one exact search can serve.

    Above ``exact_max_values`` (default :data:`EXACT_SEARCH_MAX_VALUES`)
    stored values, :func:`core.index.refresh` reads the space's index from
    beside the store, building it first (minutes at millions of rows) if
    the space changed since.  Long-lived callers (the app) keep the result.

    Parameters
    ----------
    store : core.store.Store
    space : core.spaces.Space
    progress : callable, optional
        ``progress(rows_added, total, step)`` while an index is built.

    Returns
    -------
    core.index.VectorIndex or None
    """
    from core import index

    limit = EXACT_SEARCH_MAX_VALUES if exact_max_values is None else exact_max_values
    if space.vectors.size <= limit:
        return None
    return index.refresh(store, space.key, progress=progress)


def search_store(store, space, query: np.ndarray, *, k: int = 10, level: str = "segment",
                 exclude_track: int | None = None, exclude: np.ndarray | None = None,
                 sketch: Sketch | None = None, index=None, labels=None) -> list[dict]:
    """Top-k segments, or top-k tracks ranked by their best segment, for one query vector, in the ``search`` JSON shape.

    Exact (:func:`search`) unless the space is large enough for
    :func:`index_for` to give an approximate index, or ``index`` is given.

    Parameters
    ----------
    store : core.store.Store
    space : core.spaces.Space
        Loaded at segment level: track ranking needs the segment scores.
    query : np.ndarray [shape=(dim,)]
    level : {"segment", "track"}
        At track level each track is scored by its best segment, and the
        result's ``start_s``/``end_s`` are those of that segment.
    exclude_track : int, optional
        Leave out the query's own track ("more like this" elsewhere).
    exclude : np.ndarray [shape=(n,), dtype=bool], optional
        Rows of ``space`` never to return, e.g. from :func:`exclude_below`;
        k results come back whenever k rows are left.
    sketch : Sketch, optional
        :func:`build_sketch` of ``space.vectors``, kept by a long-lived
        caller (the app) that runs many queries on one space.
    index : core.index.VectorIndex, optional
        :func:`index_for` of the space, kept by a long-lived caller.
    labels : core.labels.RowLabels, optional
        The store's row labels of the space's data version, kept by a
        long-lived caller: the results are labelled from memory instead of
        one lookup in the store, which costs a connection (30–50 ms).

    Returns
    -------
    list of dict
        Best first: ``path``, ``start_s``, ``end_s``, ``score``,
        ``metadata`` (JSON-safe, empty cells left out), ``segment_id`` and
        ``track_id``.  Only these k rows are read from the store (or ``labels``).
    """
    from core.store import metadata_columns

    if space.level != "segment":
        raise SearchError("Search runs over segment vectors; load the space at segment level.")
    if exclude_track is not None:
        own = space.track_ids == exclude_track
        exclude = own if exclude is None else own | _mask(exclude, len(own))
    index = index if index is not None else index_for(store, space)
    if index is None:
        indices, top = search(space.vectors, query, k=k, level=level, track_ids=space.track_ids,
                              exclude=exclude, sketch=sketch)
    else:
        indices, top = _search_index(index, space, query, k, level, exclude)
    frame = (store if labels is None else labels).rows(space.ids[indices])
    columns = metadata_columns(frame)
    return [{"path": row["path"], "path_escaped": bool(row["path_escaped"]),
             "start_s": float(row["start_s"]), "end_s": float(row["end_s"]),
             "score": float(score), "metadata": _metadata_of(row, columns),
             "segment_id": int(row["segment_id"]), "track_id": int(row["track_id"])}
            for (_, row), score in zip(frame.iterrows(), top)]


def _search_index(index, space, query: np.ndarray, k: int, level: str,
                  exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``space`` and scores of an approximate search, with the exact path's checks."""
    q = _check_request(query, space.vectors.shape[1], k, level)
    excluded = None
    if exclude is not None:
        mask = _mask(exclude, len(space.ids))
        if mask.all():
            raise SearchError(_NOTHING_LEFT)
        excluded = space.ids[mask]
    segment_ids, top = index.search(q, k=k, level=level, exclude=excluded)
    rows = np.minimum(np.searchsorted(space.ids, segment_ids), len(space.ids) - 1)
    if not np.array_equal(space.ids[rows], segment_ids):
        raise SearchError("The search index and the loaded vectors are of different versions; reload the space.")
    return rows, top


def embed_clip(adapter, path, window_s: float, hop_s: float, space: str | None = None, *,
               max_samples: int | None = None, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """A query vector for an audio file: the normalised mean of its segment embeddings on the store's grid.

    ``space`` picks one of the adapter's outputs (default: its main space),
    in any spelling a store may hold it under (``mert-v1-95m-l6``).
    ``start_s``/``end_s`` choose a region of the clip (the grid starts at
    ``start_s``); the default is all of it.  The clip's region is decoded
    whole, so ``max_samples`` (sample values, frames × channels; default
    :data:`core.audio.DEFAULT_MAX_SAMPLES`) bounds it: a server taking clips
    from strangers passes a small one.

    A stored file uploaded again scores a little below 1 against its own
    segments: the query is the mean of all its segments, not one of them,
    and a lossy file (MP3, Ogg) may decode to slightly different samples.
    """
    from core import audio
    from core.models.base import canonical_key

    y, sr = audio.load(path, offset_s=start_s, duration_s=None if end_s is None else end_s - start_s,
                       dtype=adapter.entry.input_dtype, max_samples=max_samples or audio.DEFAULT_MAX_SAMPLES)
    segments = audio.segment_grid(len(y) / sr, window_s, hop_s)
    return mean_embedding(adapter.embed(y, sr, segments)[canonical_key(space) if space else adapter.entry.key])


def precision_at_k(results: list[dict], column: str, query_value) -> float | None:
    """Share of the results whose ``column`` holds the query's value: how good this one search was.

    Parameters
    ----------
    results : list of dict
        :func:`search_store`'s results (their ``metadata``).
    column : str
        A metadata column.
    query_value
        The query's value in it; None (or NaN) when the query has none, and then so has the precision.
    """
    if query_value is None or query_value != query_value or not results:
        return None
    return sum(str(r["metadata"].get(column)) == str(query_value) for r in results) / len(results)
