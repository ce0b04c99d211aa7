"""Metrics between embedding spaces of the same items, and against labels.

Every space here holds the same items in the same row order (one shared
segment grid), so rows can be compared across models.  Neighbours are exact
and cosine: vectors are L2-normalised and scored by blocked matrix products,
which at 20,000 items is faster than building any index and gives the exact
answer.  Slices of one recording look alike, so every neighbour-based metric
can exclude neighbours that share the query's group (source file, speaker,
track); without that, nearest-neighbour accuracy is inflated enormously.

Collections above ``max_points`` are scored on a random sample with a fixed
seed, and the result says so.  Every function works on numpy arrays only;
reading stored spaces and caching the results is :mod:`core.analyses`'s work.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from core.errors import BadInput, check_k, check_level
from core.vectors import normalize

#: Items scored by :func:`metrics_table` before it samples (about 30 s for 3 models on 2 cores).
MAX_POINTS = 20_000

#: Items on which trustworthiness is computed; sklearn sorts a full distance matrix.
TRUSTWORTHINESS_MAX_POINTS = 5_000

#: Above this many items k-means uses sklearn's MiniBatchKMeans.
MINIBATCH_KMEANS_ABOVE = 10_000

#: Items the linear probe fits on: lbfgs at 16k × 512 × 50 labels takes about 0.7 s per iteration on 2 cores.
PROBE_MAX_POINTS = 5_000

#: Folds of the linear probe; no group is split across them.
PROBE_FOLDS = 3

#: Items the layer-by-layer figures use: 13 layers of k-NN and 91 CKA pairs at 768-D take about 20 s at this size.
LAYERS_MAX_POINTS = 5_000

#: Similarity values held at once by :func:`knn` (64 MB of float32).  Computing
#: each block once for its rows and its columns (similarity is symmetric) was
#: measured slower: transposing a block costs more than the product it saves.
_BLOCK_VALUES = 1 << 24

SEED = 0

#: Resamples of every bootstrap interval (:func:`bootstrap_ci`).
N_RESAMPLES = 1_000

#: Item weights held at once by :func:`bootstrap_ci` (32 MB of float32).
_BOOTSTRAP_BLOCK_VALUES = 1 << 23

#: One line per metric, for the UI.
EXPLANATIONS = {
    "knn_acc": "Share of items whose k nearest neighbours (cosine, own group excluded) vote for their own label; "
               "k=1 asks whether the single closest item agrees.",
    "macro_f1": "F1 of those k-NN votes averaged over labels, so rare labels count as much as common ones.",
    "silhouette": "How much closer items are to their own label than to the next label (cosine); "
                  "-1 to 1, higher means labels form tight, separate clusters.",
    "nmi": "Normalised mutual information between k-means clusters (k = number of labels) and the labels; "
           "0 is unrelated, 1 identical.",
    "ari": "Adjusted Rand index between k-means clusters and the labels; 0 is chance, 1 identical.",
    "hubness": "Skewness of how often each item appears among others' k nearest neighbours; "
               "high means a few 'hub' items are everybody's neighbour, which hurts search.",
    "linear_probe": "Accuracy of a logistic regression trained on the vectors (3 folds, no group split across them): "
                    "what a linear read-out can get from the space, where k-NN asks only what lies nearby.",
    "trustworthiness": "Share of the 2-D map's neighbourhoods that are true neighbours in the embedding space "
                       "(cosine); 1 means the map invents no false neighbours.",
    "cka": "Debiased linear CKA: how similar the two spaces' overall geometry is, from 0 (unrelated) to 1 "
           "(identical up to rotation and scale).",
    "chance": "Accuracy of the label of a random other item (Σ p² over the labels): what k=1 scores in a space "
              "that knows nothing; compare k-NN accuracy with it, not with 0.",
    "ci95": "95 % bootstrap interval (1,000 resamples of the items, or of whole groups when a group column is set): "
            "two models whose intervals overlap may not differ.",
    "jaccard_at_k": "Mean overlap of each item's k nearest neighbours in the two spaces (Jaccard); "
                    "1 − this is how much the models disagree about what sounds alike.",
}

#: For the UI, beside the metrics when a group column is excluded.
GROUP_NOTE = ("Neighbours from the query's own group are excluded: slices of one recording look alike, "
              "and log-mel 1-NN accuracy on UrbanSound8K falls from 0.91 to 0.31 once they are.")


#: A metric that cannot be computed raises the family's :class:`~core.errors.BadInput`.
CompareError = BadInput


def _codes(values: np.ndarray, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and distinct values of a column; missing values are refused rather than made a class."""
    v = np.asarray(values)
    if v.shape != (n,):
        raise CompareError(f"The {what} column has {v.size} values for {n} items.")
    if v.dtype.kind == "O":
        if any(x is None or (isinstance(x, float) and x != x) for x in v):
            raise CompareError(f"The {what} column has missing values; drop those items or fill them in.")
        v = v.astype(str)
    elif v.dtype.kind == "f" and np.isnan(v).any():
        raise CompareError(f"The {what} column has missing values; drop those items or fill them in.")
    uniques, codes = np.unique(v, return_inverse=True)
    return codes.reshape(n).astype(np.int64), uniques


def _nested(fine: np.ndarray, coarse: np.ndarray) -> bool:
    """Whether every group of ``fine`` lies inside one group of ``coarse``, so excluding ``coarse`` suffices."""
    return len(np.unique(fine * (coarse.max() + 1) + coarse)) == fine.max() + 1


def _group_columns(groups) -> list:
    """One group column or several, as a list."""
    if groups is None:
        return []
    return [groups] if np.ndim(groups) == 1 else list(groups)


def _group_codes(groups, n: int) -> list[np.ndarray]:
    """Code arrays of the group columns, without any that another one already excludes."""
    if n == 0:
        return []
    kept = [_codes(g, n, "group")[0] for g in _group_columns(groups)]
    for fine in list(kept):
        if any(other is not fine and _nested(fine, other) for other in kept):
            kept = [c for c in kept if c is not fine]
    return kept


def merged_groups(groups, n: int) -> np.ndarray:
    """One group code per item such that items sharing a value in any group column share a code.

    Folds must keep every group whole.  With one column (or
    columns nested in one another) that column is the answer; otherwise the
    groups are the connected components of "shares a value with".

    Parameters
    ----------
    groups : np.ndarray [shape=(n,)], sequence of them, or None
    n : int

    Returns
    -------
    codes : np.ndarray [shape=(n,), dtype=int64]
        ``arange(n)`` (every item its own group) when no column is given.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    columns = _group_codes(groups, n)
    if not columns:
        return np.arange(n, dtype=np.int64)
    if len(columns) == 1:
        return columns[0]
    offsets = np.cumsum([n] + [c.max() + 1 for c in columns[:-1]])
    values = np.concatenate([c + o for c, o in zip(columns, offsets)])
    items = np.tile(np.arange(n), len(columns))
    size = int(offsets[-1] + columns[-1].max() + 1)
    graph = coo_matrix((np.ones(len(items)), (items, values)), shape=(size, size))
    return connected_components(graph, directed=False)[1][:n].astype(np.int64)


def knn(
    vectors: np.ndarray,
    *,
    k: int = 10,
    groups: np.ndarray | Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k nearest neighbours of every item, never itself nor its own group.

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim)]
    k : int, 1 <= k <= n
    groups : np.ndarray [shape=(n,)] or sequence of them, optional
        Items sharing any of these values with the query (source file,
        speaker, track) are not its neighbours.

    Returns
    -------
    indices : np.ndarray [shape=(n, k), dtype=int64]
        Nearest first, equal similarities in index order (which of several
        items tied at the k-th place is kept is arbitrary but reproducible).
        ``-1`` where fewer than ``k`` items are left after exclusion.
    similarities : np.ndarray [shape=(n, k), dtype=float32]
        Cosine similarity; ``-inf`` where the index is ``-1``.
    """
    x = normalize(vectors)
    n = len(x)
    check_k(k, n)
    group_codes = _group_codes(groups, n)
    kk = min(k, n)
    indices = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    step = max(1, min(n, _BLOCK_VALUES // max(n, 1)))
    block = np.empty((step, n), dtype=np.float32)
    same = np.empty((step, n), dtype=bool)
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        s = block[:len(rows)]
        np.matmul(x[rows], x.T, out=s)
        s[np.arange(len(rows)), rows] = -np.inf
        for codes in group_codes:
            eq = same[:len(rows)]
            np.equal(codes[rows, None], codes[None, :], out=eq)
            np.copyto(s, -np.inf, where=eq)
        top = np.argpartition(s, n - kk, axis=1)[:, n - kk:]
        top_sims = np.take_along_axis(s, top, axis=1)
        order = np.lexsort((top, -top_sims), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        top_sims = np.take_along_axis(top_sims, order, axis=1)
        top[~np.isfinite(top_sims)] = -1
        indices[rows, :kk] = top
        sims[rows, :kk] = top_sims
    return indices, sims


def _vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """Majority label per row; a tie goes to the tied label whose first vote comes from the nearer neighbour."""
    valid = neighbour_labels >= 0
    counts = ((neighbour_labels[:, :, None] == neighbour_labels[:, None, :]) & valid[:, None, :]).sum(axis=2)
    counts[~valid] = -1
    winner = np.take_along_axis(neighbour_labels, np.argmax(counts, axis=1)[:, None], axis=1)[:, 0]
    winner[~valid.any(axis=1)] = -1
    return winner


def knn_classification(indices: np.ndarray, labels: np.ndarray, *, k: int | None = None) -> dict:
    """Leave-one-out k-NN classification from precomputed neighbours, so one neighbour search serves every k.

    The query itself is never among its neighbours (see :func:`knn`), which
    makes this leave-one-out.  Each item is predicted by the majority label
    of its k nearest neighbours; a tie goes to the tied label held by the
    nearest neighbour among them, which for k=2 means the 1-NN label.  An
    item with no neighbour left after group exclusion counts as wrong.

    Parameters
    ----------
    indices : np.ndarray [shape=(n, k_max), dtype=int64]
        From :func:`knn`, nearest first.
    labels : np.ndarray [shape=(n,)]
    k : int, optional
        Neighbours that vote (the first ``k`` columns); all by default.

    Returns
    -------
    dict
        ``accuracy`` (float), ``macro_f1`` (float, sklearn's macro-average
        over the true labels) and ``predictions`` (np.ndarray [shape=(n,)],
        values of ``labels``; ``None`` where no neighbour was left).
    """
    from sklearn.metrics import f1_score

    idx = np.asarray(indices)
    n = len(idx)
    k = idx.shape[1] if k is None else k
    if not 1 <= k <= idx.shape[1]:
        raise CompareError(f"k={k} needs at least that many neighbour columns; there are {idx.shape[1]}.")
    y, uniques = _codes(labels, n, "label")
    idx = idx[:, :k]
    pred = _vote(np.where(idx >= 0, y[np.maximum(idx, 0)], -1))
    predictions = np.where(pred >= 0, uniques[np.maximum(pred, 0)].astype(object), None)
    return {
        "accuracy": float(np.mean(pred == y)) if n else float("nan"),
        "macro_f1": float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)),
        "predictions": predictions,
    }


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    groups: np.ndarray | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = 0.95,
    seed: int = SEED,
) -> np.ndarray:
    """Percentile bootstrap interval of statistics over ``n`` items, resampling items or whole groups.

    Slices of one recording are not independent evidence: with ``groups``
    (source file, speaker) whole groups are drawn with replacement and each
    brings all its items, so the interval reflects how many independent
    sources were scored, not how many slices.  A resample is passed to
    ``statistic`` as item weights (how many times each item was drawn), so a
    statistic that is a weighted sum scores every resample of a block in one
    matrix product; any sklearn metric taking ``sample_weight`` works too.
    The same ``seed``, ``n`` and ``groups`` give the same resamples, so
    intervals of several statistics or models are paired.

    Parameters
    ----------
    statistic : callable
        ``statistic(weights) -> np.ndarray [shape=(b,) or (b, m)]`` for
        ``weights`` np.ndarray [shape=(b, n), dtype=float32]; NaN values
        (a resample where the statistic is undefined) are ignored.
    n : int > 0
        Items scored.
    groups : np.ndarray [shape=(n,)], optional
        The group of each item; resample groups instead of items.
    n_resamples : int > 0
    confidence : float in (0, 1)
    seed : int

    Returns
    -------
    interval : np.ndarray [shape=(2,) or (m, 2), dtype=float64]
        Low and high percentile of the resampled statistics; NaN where every
        resample was NaN.
    """
    if n < 1 or n_resamples < 1 or not 0 < confidence < 1:
        raise CompareError(f"A bootstrap needs items, resamples and a confidence in (0, 1); got n={n}, "
                           f"n_resamples={n_resamples}, confidence={confidence}.")
    if groups is None:
        units, n_units = np.arange(n), n
    else:
        units, uniques = _codes(groups, n, "group")
        n_units = len(uniques)
    rng = np.random.default_rng(seed)
    step = max(1, _BOOTSTRAP_BLOCK_VALUES // max(n, n_units))
    values = []
    for start in range(0, n_resamples, step):
        b = min(step, n_resamples - start)
        drawn = rng.integers(0, n_units, size=(b, n_units), dtype=np.int64) + (np.arange(b) * n_units)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=b * n_units).reshape(b, n_units).astype(np.float32)
        values.append(np.asarray(statistic(counts if groups is None else counts[:, units]), dtype=np.float64))
    stats = np.concatenate(values)
    tail = 100 * (1 - confidence) / 2
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as documented
        interval = np.nanpercentile(stats, [tail, 100 - tail], axis=0)
    return np.moveaxis(interval, 0, -1)


def _one_hot(codes: np.ndarray, n_labels: int) -> np.ndarray:
    """float32 indicator matrix [shape=(n, n_labels)]; a code of -1 (no prediction) has no column."""
    out = np.zeros((len(codes), n_labels), dtype=np.float32)
    rows = np.flatnonzero(codes >= 0)
    out[rows, codes[rows]] = 1.0
    return out


def classification_scores(weights: np.ndarray, truth: np.ndarray, predicted: np.ndarray, n_labels: int) -> np.ndarray:
    """Accuracy and macro-F1 of weighted items, for many weightings at once (the bootstrap's statistic).

    With unit weights this is ``knn_classification``'s accuracy and
    sklearn's macro-F1 over the labels present among the true labels; a
    label absent from a resample is left out of its macro average, as
    sklearn leaves out a label absent from the data.

    Parameters
    ----------
    weights : np.ndarray [shape=(b, n)]
    truth, predicted : np.ndarray [shape=(n,), dtype=int]
        Label codes in ``[0, n_labels)``; ``-1`` in ``predicted`` is a
        missing prediction, always wrong.

    Returns
    -------
    np.ndarray [shape=(b, 2)]
        Accuracy and macro-F1 of each weighting.
    """
    w = np.asarray(weights, dtype=np.float32)
    correct = (predicted == truth).astype(np.float32)
    true_hot = _one_hot(truth, n_labels)
    support = w @ true_hot
    hits = w @ (true_hot * correct[:, None])
    claimed = w @ _one_hot(predicted, n_labels)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = (w @ correct) / total
        denom = support + claimed
        f1 = np.where(denom > 0, 2 * hits / np.where(denom > 0, denom, 1), 0.0)
        present = support > 0
        macro = (f1 * present).sum(axis=1) / present.sum(axis=1)
    return np.stack([accuracy, macro], axis=1)


def label_report(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """How k-NN votes fare per label, what chance would score, and the confusion behind it.

    Parameters
    ----------
    labels : np.ndarray [shape=(n,)]
        True labels, none missing.
    predictions : np.ndarray [shape=(n,)]
        From :func:`knn_classification`: label values, ``None`` where no
        neighbour was left.

    Returns
    -------
    dict
        ``per_class`` ({label: share of its items predicted right}),
        ``chance`` (Σ p², the accuracy of the label of a random other item:
        what a space with no information scores with k=1), ``majority`` (the
        largest label's share: what always answering it scores), and
        ``confusion`` (``labels``: the label names in order, ``counts``:
        list of rows, true label by predicted label, with a last column
        ``"(no neighbour)"`` when some item had none).
    """
    y, uniques = _codes(labels, len(np.asarray(labels)), "label")
    names = [str(u) for u in uniques]
    index = {name: i for i, name in enumerate(names)}
    pred = np.array([-1 if p is None else index.get(str(p), -1) for p in predictions], dtype=np.int64)
    n_labels = len(names)
    missing = bool((pred < 0).any())
    counts = np.zeros((n_labels, n_labels + missing), dtype=np.int64)
    np.add.at(counts, (y, np.where(pred >= 0, pred, n_labels)), 1)
    sizes = counts.sum(axis=1)
    share = sizes / max(1, sizes.sum())
    return {
        "per_class": {name: float(counts[i, i] / sizes[i]) for i, name in enumerate(names)},
        "chance": float(np.sum(share ** 2)),
        "majority": float(share.max(initial=0.0)),
        "confusion": {"labels": names + (["(no neighbour)"] if missing else []), "counts": counts.tolist()},
    }


def classification_ci(labels: np.ndarray, predictions: np.ndarray, *, groups: np.ndarray | None = None,
                      n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """Bootstrap 95 % intervals of a k-NN classification's accuracy and macro-F1 (:func:`bootstrap_ci`).

    Parameters
    ----------
    labels, predictions : np.ndarray [shape=(n,)]
        As for :func:`label_report`.
    groups : np.ndarray [shape=(n,)], optional
        Resample whole groups (source recordings, speakers) instead of items.

    Returns
    -------
    dict
        ``{"accuracy": [low, high], "macro_f1": [low, high]}``.
    """
    y, uniques = _codes(labels, len(np.asarray(labels)), "label")
    index = {str(u): i for i, u in enumerate(uniques)}
    pred = np.array([-1 if p is None else index.get(str(p), -1) for p in predictions], dtype=np.int64)
    interval = bootstrap_ci(lambda w: classification_scores(w, y, pred, len(uniques)), len(y), groups=groups,
                            n_resamples=n_resamples, seed=seed)
    return {"accuracy": interval[0].tolist(), "macro_f1": interval[1].tolist()}


def sample_rows(n: int, max_points: int, seed: int) -> np.ndarray:
    """The rows every sampled metric scores: all of them, or a sorted random sample that a seed makes repeatable.

    Returns
    -------
    rows : np.ndarray [shape=(min(n, max_points),), dtype=int64]
    """
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def silhouette(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Cosine silhouette of the labels, exact on every item.

    Equal to ``sklearn.metrics.silhouette_score(vectors, labels,
    metric="cosine")`` (tested), but computed from per-label vector sums:
    for unit vectors the mean cosine distance of an item to a label is
    ``1 − x · mean(label)``.  That costs O(n · labels · dim) instead of a full
    distance matrix, so no sampling is needed (sklearn takes 40 s at 20,000
    items on two cores).

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]

    Returns
    -------
    float
        In [-1, 1]; items alone in their label count 0, as in sklearn.  NaN
        with fewer than two labels, or when every item has its own label.
    """
    x = normalize(vectors)
    n = len(x)
    y = _codes(labels, n, "label")[0]
    n_labels = y.max(initial=-1) + 1
    if not 2 <= n_labels <= n - 1:
        return float("nan")
    sums = np.zeros((n_labels, x.shape[1]))
    np.add.at(sums, y, x)
    sizes = np.bincount(y, minlength=n_labels).astype(np.float64)
    values = np.empty(n)
    step = max(1, (1 << 22) // n_labels)
    for start in range(0, n, step):
        xb, yb = x[start:start + step].astype(np.float64), y[start:start + step]
        rows = np.arange(len(xb))
        sims = xb @ sums.T
        own_size = sizes[yb]
        self_distance = 1.0 - np.einsum("ij,ij->i", xb, xb)
        a = (own_size - sims[rows, yb] - self_distance) / np.maximum(own_size - 1, 1)
        mean_distance = 1.0 - sims / sizes
        mean_distance[rows, yb] = np.inf
        b = mean_distance.min(axis=1)
        denom = np.maximum(a, b)
        s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
        values[start:start + step] = np.where(own_size > 1, s, 0.0)
    return float(values.mean())


def kmeans_agreement(vectors: np.ndarray, labels: np.ndarray, *, seed: int = SEED) -> dict:
    """NMI and ARI between k-means clusters (k = number of labels) and the labels.

    k-means runs on L2-normalised vectors, so that its clusters follow the
    same cosine geometry as every other metric here; above
    ``MINIBATCH_KMEANS_ABOVE`` items it is sklearn's MiniBatchKMeans.  It runs
    on one thread: sklearn's k-means++ spends most of its time waiting on
    its own threads when the cores are shared (10× the CPU time measured on
    a loaded two-core machine), and one thread takes about a second at
    20,000 × 512 with 50 labels.

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]

    Returns
    -------
    dict
        ``nmi`` and ``ari`` (floats; NaN with fewer than two labels).
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from threadpoolctl import threadpool_limits

    x = normalize(vectors)
    y = _codes(labels, len(x), "label")[0]
    n_clusters = len(np.unique(y))
    if n_clusters < 2 or n_clusters > len(x):
        return {"nmi": float("nan"), "ari": float("nan")}
    if len(x) > MINIBATCH_KMEANS_ABOVE:
        model = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, n_init=3)
    else:
        model = KMeans(n_clusters=n_clusters, random_state=seed, n_init=3)
    with threadpool_limits(limits=1):
        clusters = model.fit_predict(x)
    return {"nmi": float(normalized_mutual_info_score(y, clusters)), "ari": float(adjusted_rand_score(y, clusters))}


def linear_probe(
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    groups: np.ndarray | Sequence[np.ndarray] | None = None,
    folds: int = PROBE_FOLDS,
    max_points: int = PROBE_MAX_POINTS,
    seed: int = SEED,
) -> dict:
    """Grouped cross-validated accuracy of a logistic regression on the vectors: the linear probe of SSL papers.

    k-NN asks whether an item's neighbours share its label; a probe asks
    whether the label can be read off the space by a hyperplane, which
    rewards spaces whose information is there but not in their distances.
    Folds never split a group (:func:`merged_groups`: the track and any
    source column), or slices of one recording would be learnt and tested
    at once.  The folds are sklearn's ``StratifiedGroupKFold``, the model a
    ``StandardScaler`` followed by an L2-regularised (C = 1) multinomial
    ``LogisticRegression`` (lbfgs, up to 1,000 iterations).

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or sequence of them, optional
    folds : int >= 2
        Fewer when there are fewer groups: two sources (soundfonts, say)
        give two folds, each trained on one source and tested on the other.
    max_points : int
        Above this many items a random sample (fixed seed) is probed, and
        ``n`` says so.
    seed : int

    Returns
    -------
    dict
        ``accuracy`` and ``macro_f1`` (floats, over every probed item's
        out-of-fold prediction; NaN with fewer than two labels or two
        groups), ``n`` (items probed), ``of`` (items given) and ``folds``
        (those used; 0 when it could not run).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(vectors)
    n = len(x)
    y_all = _codes(labels, n, "label")[0]
    rows = sample_rows(n, max_points, seed)
    units = merged_groups(groups, n)[rows]
    x, y = x[rows], y_all[rows]
    result = {"accuracy": float("nan"), "macro_f1": float("nan"), "n": int(len(rows)), "of": int(n), "folds": 0}
    folds = min(folds, len(np.unique(units)))
    if len(np.unique(y)) < 2 or folds < 2:
        return result
    predicted = np.empty_like(y)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rare labels and slow convergence are expected, and do not change the answer's meaning
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        for train, test in splitter.split(x, y, units):
            if len(np.unique(y[train])) < 2:
                predicted[test] = y[train][0]
                continue
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            predicted[test] = model.fit(x[train], y[train]).predict(x[test])
    return {**result, "folds": folds, "accuracy": float(np.mean(predicted == y)),
            "macro_f1": float(f1_score(y, predicted, labels=np.unique(y), average="macro", zero_division=0))}


def _hsic_terms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row norms² and K̃·1 of the linear Gram matrix with zeroed diagonal, without forming it."""
    sq = np.einsum("ij,ij->i", x, x)
    return sq, x @ x.sum(axis=0) - sq


def _hsic(x: np.ndarray, y: np.ndarray, cross: float) -> float:
    """Unbiased HSIC of linear kernels (Song et al. 2012), given ‖XᵀY‖²_F, in feature space."""
    n = len(x)
    sq_x, k1 = _hsic_terms(x)
    sq_y, l1 = _hsic_terms(y)
    trace = cross - np.dot(sq_x, sq_y)
    return (trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * np.dot(k1, l1)) / (n * (n - 3))


def cka(a: np.ndarray, b: np.ndarray, *, debiased: bool = True) -> float:
    """Linear CKA between two spaces of the same items: similarity of geometry, blind to rotation and scale.

    The debiased form uses the unbiased HSIC estimator (Song et al. 2012;
    Nguyen et al. 2021), because plain linear CKA of two *independent*
    random 512-D spaces is about 0.3 at n ≈ 800 rather than 0.  The Gram
    matrices are never formed: every term is computed from ``XᵀY`` and row
    sums, in O(n · dim_a · dim_b) time and O(dim_a · dim_b) memory.
    Vectors are used as given (not normalised), as in Kornblith et al. 2019.

    Parameters
    ----------
    a : np.ndarray [shape=(n, dim_a)]
    b : np.ndarray [shape=(n, dim_b)]
    debiased : bool
        ``False`` gives plain linear CKA (centred Gram matrices).

    Returns
    -------
    float
        1 for identical spaces up to orthogonal transform and isotropic
        scale; near 0 for unrelated ones (the debiased value can be slightly
        negative).  NaN when a space is constant.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise CompareError(f"CKA needs two 2-D spaces of the same items, got shapes {x.shape} and {y.shape}.")
    if len(x) < 4:
        raise CompareError(f"CKA needs at least 4 items, got {len(x)}.")
    if debiased:
        return _debiased_cka(x, y, _self_hsic(x), _self_hsic(y))
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    denom = np.sqrt(np.sum((x.T @ x) ** 2) * np.sum((y.T @ y) ** 2))
    return float(np.sum((x.T @ y) ** 2) / denom) if denom > 0 else float("nan")


def _self_hsic(x: np.ndarray) -> float:
    """HSIC of a float64 space with itself, computed once per space when a table compares many pairs."""
    return _hsic(x, x, np.sum((x.T @ x) ** 2))


def _debiased_cka(x: np.ndarray, y: np.ndarray, hxx: float, hyy: float) -> float:
    denom = np.sqrt(hxx * hyy)
    return float(_hsic(x, y, np.sum((x.T @ y) ** 2)) / denom) if denom > 0 else float("nan")


def cka_matrix(spaces: Sequence[np.ndarray], others: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Debiased linear CKA between every pair of spaces, and of each space against others: the layer × layer map.

    Each space's self-HSIC is computed once, so ``L`` layers cost
    ``L (L + 1) / 2`` cross products.

    Parameters
    ----------
    spaces : sequence of np.ndarray [shape=(n, dim_i)]
        The same n items in each, e.g. the hidden states of one model.
    others : sequence of np.ndarray [shape=(n, dim_j)]
        Other models' spaces of the same items.

    Returns
    -------
    within : np.ndarray [shape=(len(spaces), len(spaces)), dtype=float64]
        Symmetric; the diagonal is 1 (up to rounding) unless a space is constant.
    against : np.ndarray [shape=(len(spaces), len(others)), dtype=float64]
    """
    wide = [np.asarray(x, dtype=np.float64) for x in spaces]
    other = [np.asarray(x, dtype=np.float64) for x in others]
    for x in wide + other:
        if x.ndim != 2 or len(x) != len(wide[0]):
            raise CompareError(f"CKA needs 2-D spaces of the same items, got shape {x.shape} for {len(wide[0])} items.")
    if wide and len(wide[0]) < 4:
        raise CompareError(f"CKA needs at least 4 items, got {len(wide[0])}.")
    hsic = [_self_hsic(x) for x in wide]
    other_hsic = [_self_hsic(x) for x in other]
    within = np.empty((len(wide), len(wide)))
    for i, j in itertools.combinations_with_replacement(range(len(wide)), 2):
        within[i, j] = within[j, i] = _debiased_cka(wide[i], wide[j], hsic[i], hsic[j])
    against = np.array([[_debiased_cka(x, y, hx, hy) for y, hy in zip(other, other_hsic)]
                        for x, hx in zip(wide, hsic)]).reshape(len(wide), len(other))
    return within, against


def jaccard(indices_a: np.ndarray, indices_b: np.ndarray) -> np.ndarray:
    """Per-item Jaccard overlap of two neighbour lists of the same items, e.g. from two models.

    Parameters
    ----------
    indices_a, indices_b : np.ndarray [shape=(n, k), dtype=int64]
        From :func:`knn`; ``-1`` entries are ignored.

    Returns
    -------
    overlap : np.ndarray [shape=(n,), dtype=float64]
        |A ∩ B| / |A ∪ B|; 1 where both lists are empty.  ``1 - overlap`` is
        the disagreement shown on the Compare maps.
    """
    ia, ib = np.asarray(indices_a), np.asarray(indices_b)
    if ia.shape != ib.shape:
        raise CompareError(f"Neighbour lists of shapes {ia.shape} and {ib.shape} cannot be compared.")
    overlap = np.empty(len(ia), dtype=np.float64)
    step = max(1, (1 << 22) // max(1, ia.shape[1] ** 2))
    for start in range(0, len(ia), step):
        a, b = ia[start:start + step], ib[start:start + step]
        inter = ((a[:, :, None] == b[:, None, :]) & (a >= 0)[:, :, None]).sum(axis=(1, 2))
        union = (a >= 0).sum(axis=1) + (b >= 0).sum(axis=1) - inter
        overlap[start:start + step] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return overlap


def neighbour_disagreement(
    a: np.ndarray,
    b: np.ndarray,
    *,
    k: int = 10,
    groups: np.ndarray | Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """1 − Jaccard@k of each item's neighbours in two spaces: where the models hear the collection differently.

    Parameters
    ----------
    a : np.ndarray [shape=(n, dim_a)]
    b : np.ndarray [shape=(n, dim_b)]
    k : int > 0
    groups : np.ndarray [shape=(n,)] or sequence of them, optional
        Excluded from neighbours as in :func:`knn`.

    Returns
    -------
    disagreement : np.ndarray [shape=(n,), dtype=float64]
        0 where both spaces give the same k neighbours, 1 where none is shared.
    """
    return 1.0 - jaccard(knn(a, k=k, groups=groups)[0], knn(b, k=k, groups=groups)[0])


def k_occurrence(indices: np.ndarray) -> np.ndarray:
    """How often each item is among the others' k nearest neighbours: a hub's count is high, an anti-hub's 0.

    Parameters
    ----------
    indices : np.ndarray [shape=(n, k), dtype=int64]
        From :func:`knn`; ``-1`` entries are ignored.

    Returns
    -------
    counts : np.ndarray [shape=(n,), dtype=int64]
        They sum to the number of valid neighbour entries (``n · k`` without exclusions).
    """
    idx = np.asarray(indices)
    return np.bincount(idx[idx >= 0], minlength=len(idx)).astype(np.int64)


def hubness(indices: np.ndarray) -> float:
    """Skewness of the k-occurrence distribution of :func:`knn`'s ``indices`` (see :func:`k_occurrence`).

    A few hubs that are everybody's neighbour give a large positive value;
    0 when every item occurs equally often.
    """
    from scipy.stats import skew

    counts = k_occurrence(indices).astype(np.float64)
    if counts.std() == 0:
        return 0.0
    return float(skew(counts))


def trustworthiness(vectors: np.ndarray, coords: np.ndarray, *, k: int = 10,
                    max_points: int = TRUSTWORTHINESS_MAX_POINTS, seed: int = SEED) -> float:
    """sklearn's trustworthiness of a 2-D map at k, cosine in the embedding space and euclidean on the map.

    A random sample of at most ``max_points`` items keeps the cost bounded
    (sklearn sorts a full distance matrix: 25 s at 20,000 items otherwise).

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim)]
    coords : np.ndarray [shape=(n, 2)]

    Returns
    -------
    float
        In [0, 1]; NaN with too few items for k.
    """
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    x, xy = np.asarray(vectors), np.asarray(coords)
    if len(x) != len(xy):
        raise CompareError(f"The map has {len(xy)} points for {len(x)} vectors.")
    rows = sample_rows(len(x), max_points, seed)
    k = min(k, (len(rows) - 1) // 2)
    if k < 1:
        return float("nan")
    return float(sk_trustworthiness(x[rows], xy[rows], n_neighbors=k, metric="cosine"))


def procrustes_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate, reflect, scale and shift one 2-D map onto another, so the same items sit in the same place.

    Reflections are allowed because a flipped t-SNE or UMAP map is the same map.

    Parameters
    ----------
    source : np.ndarray [shape=(n, 2)]
        The map to move.
    target : np.ndarray [shape=(n, 2)]
        The reference map, of the same items in the same order.

    Returns
    -------
    aligned : np.ndarray [shape=(n, 2), dtype=float64]
        ``s · (source − mean) · R + mean(target)`` with the orthogonal ``R``
        and scale ``s`` that minimise the squared distance to ``target``.
    """
    from scipy.linalg import orthogonal_procrustes

    a, b = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise CompareError(f"Maps of shapes {a.shape} and {b.shape} cannot be aligned; they need the same items.")
    a0, b_mean = a - a.mean(axis=0), b.mean(axis=0)
    norm = np.sum(a0 ** 2)
    if norm == 0:
        return np.broadcast_to(b_mean, a.shape).copy()
    rotation, singular_sum = orthogonal_procrustes(a0, b - b_mean)
    return (singular_sum / norm) * a0 @ rotation + b_mean


def metrics_table(
    spaces: Mapping[str, np.ndarray],
    *,
    labels: np.ndarray | None = None,
    groups: np.ndarray | Sequence[np.ndarray] | None = None,
    k: int = 10,
    maps: Mapping[str, np.ndarray] | None = None,
    max_points: int = MAX_POINTS,
    seed: int = SEED,
    resample_groups: np.ndarray | None = None,
    n_resamples: int = N_RESAMPLES,
) -> dict:
    """Every metric for several spaces of the same items, in the shape of the ``metrics`` command's JSON.

    Above ``max_points`` items one random sample (fixed seed) is drawn and
    every metric is computed within it, neighbours included, so that all
    models are scored on the same items.

    Parameters
    ----------
    spaces : mapping of model key → np.ndarray [shape=(n, dim)]
        The same n items in the same order in every space.
    labels : np.ndarray [shape=(n,)], optional
        Adds k-NN accuracy, macro-F1, silhouette, NMI and ARI.
    groups : np.ndarray [shape=(n,)] or sequence of them, optional
        Neighbours sharing any group value with the query are excluded
        (pass the track ids at segment level, plus a user's group column).
    k : int > 0
        k of the k-NN accuracy (alongside k=1), macro-F1, hubness and Jaccard@k.
    maps : mapping of model key → np.ndarray [shape=(n, 2)], optional
        2-D maps whose trustworthiness at k is added to their model.
    max_points : int
    seed : int
        Of the sample and of the bootstrap.
    resample_groups : np.ndarray [shape=(n,)], optional
        The bootstrap intervals resample these groups (a user's group column)
        rather than items.
    n_resamples : int
        Resamples of each bootstrap interval.

    Returns
    -------
    dict
        ``{MODEL: {"knn_acc_k1", "knn_acc_k{k}", "macro_f1", "silhouette",
        "nmi", "ari", "hubness", "trustworthiness", "chance", "majority",
        "per_class", "ci95", "confusion"}, …, "pairs": {"A|B": {"cka",
        "jaccard_at_k"}}, "info": {…}}``, scalars first, accuracy first.
        Label metrics only with labels: ``chance`` and ``majority`` as in
        :func:`label_report`, ``per_class`` and ``confusion`` at k, ``ci95``
        ``{metric: [low, high]}`` for the k-NN accuracies and macro-F1
        (:func:`classification_ci`).  Trustworthiness only with a map.
        ``info`` holds ``n`` (items given), ``sampled`` (items scored, or
        None when all were), ``k``, ``seed``, ``groups_excluded``,
        ``resampled`` (``"groups"`` or ``"items"``, with labels),
        ``n_resamples`` and ``trustworthiness_points`` (the sample size of
        trustworthiness).
    """
    names = list(spaces)
    if not names:
        raise CompareError("No embedding space was given; extract at least one model first.")
    n = len(spaces[names[0]])
    for name in names:
        if len(spaces[name]) != n:
            raise CompareError(f"{name} has {len(spaces[name])} vectors but {names[0]} has {n}; "
                               "compare models extracted on the same segments.")
    if n < 4:
        raise CompareError(f"Metrics need at least 4 items, got {n}.")
    rows = sample_rows(n, max_points, seed)
    group_rows = [np.asarray(g)[rows] for g in _group_columns(groups)] or None
    label_rows = None if labels is None else np.asarray(labels)[rows]
    boot_rows = None if resample_groups is None else np.asarray(resample_groups)[rows]

    table: dict = {}
    neighbours: dict[str, np.ndarray] = {}
    for name in names:
        x = np.asarray(spaces[name])[rows]
        idx, _ = knn(x, k=k, groups=group_rows)
        neighbours[name] = idx
        row: dict = {}
        nested: dict = {}
        if label_rows is not None:
            intervals = {}
            for kv in sorted({1, k}):
                scores = knn_classification(idx, label_rows, k=kv)
                ci = classification_ci(label_rows, scores["predictions"], groups=boot_rows,
                                       n_resamples=n_resamples, seed=seed)
                row[f"knn_acc_k{kv}"], intervals[f"knn_acc_k{kv}"] = scores["accuracy"], ci["accuracy"]
                if kv == k:
                    row["macro_f1"], intervals["macro_f1"] = scores["macro_f1"], ci["macro_f1"]
                    report = label_report(label_rows, scores["predictions"])
            row["silhouette"] = silhouette(x, label_rows)
            row.update(kmeans_agreement(x, label_rows, seed=seed))
            nested = {"chance": report["chance"], "majority": report["majority"], "per_class": report["per_class"],
                      "ci95": intervals, "confusion": report["confusion"]}
        row["hubness"] = hubness(idx)
        if maps is not None and name in maps:
            row["trustworthiness"] = trustworthiness(spaces[name], maps[name], k=k, seed=seed)
        table[name] = {**row, **nested}

    wide = {name: np.asarray(spaces[name])[rows].astype(np.float64) for name in names}
    self_hsic = {name: _self_hsic(x) for name, x in wide.items()}
    table["pairs"] = {
        f"{a}|{b}": {
            "cka": _debiased_cka(wide[a], wide[b], self_hsic[a], self_hsic[b]),
            "jaccard_at_k": float(jaccard(neighbours[a], neighbours[b]).mean()),
        }
        for a, b in itertools.combinations(names, 2)
    }
    table["info"] = {
        "n": n,
        "sampled": len(rows) if len(rows) < n else None,
        "k": k,
        "seed": seed,
        "groups_excluded": groups is not None,
        **({"resampled": "groups" if resample_groups is not None else "items", "n_resamples": n_resamples}
           if labels is not None else {}),
        "trustworthiness_points": min(n, TRUSTWORTHINESS_MAX_POINTS) if maps else None,
    }
    return table


def metric_rows(table: Mapping, models: Sequence[str]) -> pd.DataFrame:
    """:func:`metrics_table`'s scalars as one row per model, each interval beside its metric as ``[low, high]``.

    The columns keep the table's order (accuracy first); ``chance`` and
    ``majority`` are the label's, the same for every model, and are said once
    by the page rather than repeated per row.
    """
    rows = []
    for m in models:
        row = {}
        for name, value in table[m].items():
            if name in ("chance", "majority") or isinstance(value, (dict, list)):
                continue
            row[name] = value
            if name in table[m].get("ci95", {}):
                low, high = table[m]["ci95"][name]
                row[f"{name} 95% CI"] = f"[{low:.3f}, {high:.3f}]"
        rows.append(row)
    return pd.DataFrame(rows, index=list(models))


def confusion_frame(confusion: Mapping) -> pd.DataFrame:
    """:func:`label_report`'s confusion as long rows (``true``, ``predicted``, ``count``, ``share`` of the true label)."""
    labels, counts = confusion["labels"], np.asarray(confusion["counts"], dtype=np.int64)
    sizes = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    true, predicted = np.meshgrid(np.arange(counts.shape[0]), np.arange(counts.shape[1]), indexing="ij")
    return pd.DataFrame({"true": np.asarray(labels)[true.ravel()], "predicted": np.asarray(labels)[predicted.ravel()],
                         "count": counts.ravel(), "share": (counts / sizes).ravel()})


def layer_table(
    layers: Sequence[np.ndarray],
    *,
    labels: np.ndarray | None = None,
    groups: np.ndarray | Sequence[np.ndarray] | None = None,
    resample_groups: np.ndarray | None = None,
    k: int = 10,
    others: Mapping[str, np.ndarray] | None = None,
    max_points: int = LAYERS_MAX_POINTS,
    seed: int = SEED,
) -> dict:
    """A model's layers side by side: k-NN accuracy per layer, layer × layer CKA, and each layer's CKA against other models.

    This is the layer-wise probing of the MERT paper and of MARBLE, read
    with the same neighbour rules as :func:`metrics_table`; above
    ``max_points`` items one random sample (fixed seed) is scored.

    Parameters
    ----------
    layers : sequence of np.ndarray [shape=(n, dim)]
        One space per layer, the same n items in each.
    labels : np.ndarray [shape=(n,)], optional
        Adds k-NN accuracy per layer with its bootstrap interval.
    groups : np.ndarray [shape=(n,)] or sequence of them, optional
        Excluded from neighbours (as in :func:`knn`).
    resample_groups : np.ndarray [shape=(n,)], optional
        What the bootstrap draws whole (a user's group column); items when None.
    k : int > 0
    others : mapping of name → np.ndarray [shape=(n, dim_j)], optional
        Spaces each layer's CKA is measured against.

    Returns
    -------
    dict
        ``knn_acc`` (list of floats per layer, k-NN accuracy at ``k``) and
        ``ci95`` (list of ``[low, high]``), only with labels; ``cka`` (list of
        lists, layer × layer); ``against`` ({name: list of floats per
        layer}); ``n`` (items given) and ``sampled`` (items scored, or None).
    """
    if not layers:
        raise CompareError("No layer space was given; extract the model with --layers first.")
    n = len(layers[0])
    rows = sample_rows(n, max_points, seed)
    group_rows = [np.asarray(g)[rows] for g in _group_columns(groups)] or None
    out: dict = {}
    if labels is not None:
        label_rows = np.asarray(labels)[rows]
        resample = None if resample_groups is None else np.asarray(resample_groups)[rows]
        out["knn_acc"], out["ci95"] = [], []
        for x in layers:
            scores = knn_classification(knn(np.asarray(x)[rows], k=k, groups=group_rows)[0], label_rows, k=k)
            out["knn_acc"].append(scores["accuracy"])
            out["ci95"].append(classification_ci(label_rows, scores["predictions"], groups=resample, seed=seed)["accuracy"])
    names = list(others or {})
    within, against = cka_matrix([np.asarray(x)[rows] for x in layers], [np.asarray(others[m])[rows] for m in names])
    out["cka"] = within.tolist()
    out["against"] = {m: against[:, j].tolist() for j, m in enumerate(names)}
    out.update({"n": n, "sampled": len(rows) if len(rows) < n else None})
    return out


def point_neighbours(ids: np.ndarray, track_ids: np.ndarray, vectors: np.ndarray, item: int, *, k: int = 10,
                     level: str = "segment") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest items to one item of a space, as the disagreement colour counts them.

    One matrix-vector product, so a click needs no stored neighbour lists.

    Parameters
    ----------
    ids, track_ids : np.ndarray [shape=(n,)]
        From :func:`core.spaces.aligned`.
    vectors : np.ndarray [shape=(n, dim)]
        Unit rows.
    item : int
        The id (segment or track) of the query.

    Returns
    -------
    neighbour_ids : np.ndarray [shape=(≤k,)]
    similarities : np.ndarray [shape=(≤k,)]
        Cosine, nearest first.
    """
    check_level(level)
    check_k(k)
    row = int(np.searchsorted(ids, item))
    if row >= len(ids) or ids[row] != item:
        raise CompareError(f"Item {item} is not among the compared items.")
    sims = vectors @ vectors[row]
    sims[row] = -np.inf
    if level == "segment":
        sims[track_ids == track_ids[row]] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    order = order[np.isfinite(sims[order])]
    return ids[order], sims[order]
