"""2-D projections of an embedding space, cached in the store.

PCA reads global structure, t-SNE and UMAP local structure (Tovstogan et al.,
SMC 2022); STD-PCA standardises each dimension first, as the seed paper does,
so that a few high-variance dimensions cannot dominate the map.  Every
projection is computed once per (space, level, method, parameters, data
version) and stored, because UMAP alone costs about 25 s of JIT compilation
in a fresh process and a minute at 100k points.

Above :data:`SAMPLE_ABOVE` points, t-SNE and UMAP are fit on a random sample
of :data:`FIT_SAMPLE` points and every other point is placed into that map
(umap-learn's ``transform``; openTSNE's ``prepare_partial``, each point at
the median of its nearest sample points), because their fits grow
with the point count: UMAP took 104 s at 100k points on two cores, and would
take tens of minutes at a million.  ``bench/README.md`` has the times and
the trustworthiness of both ways at 100k.  The map's ``info`` then says how
many points it was fit on, so that the screen can say so.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

import numpy as np

from core.compare import TRUSTWORTHINESS_MAX_POINTS, trustworthiness
from core.errors import BadInput, check_choice
from core.progress import ProgressFn
from core.spaces import read_vectors
from core.store import Store

METHODS = ("pca", "std-pca", "tsne", "umap")

#: Parameters a user can change, with their defaults.
DEFAULT_PARAMS = {
    "pca": {},
    "std-pca": {},
    "tsne": {"perplexity": 30.0},
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine"},
}

SEED = 42

#: t-SNE and UMAP maps of more points than this are fit on a sample (:data:`FIT_SAMPLE`).
SAMPLE_ABOVE = 100_000

#: Points a t-SNE or UMAP map is fit on when the set is larger than :data:`SAMPLE_ABOVE`.
FIT_SAMPLE = 50_000

#: Points placed into a sampled map per step; more than 10,000, where
#: umap-learn's ``transform`` switches from 100 to 30 epochs.
PLACE_BATCH = 20_000

#: A projection that cannot run raises the family's :class:`~core.errors.BadInput`.
ReduceError = BadInput

#: Visitors of a shared app compute new maps one at a time: two t-SNE runs at once would double the peak memory.
_VISITOR_JOB = threading.Lock()


def canonical_params(method: str, params: dict | None = None) -> dict:
    check_choice(method, METHODS, "method")
    merged = dict(DEFAULT_PARAMS[method])
    merged.update({k: v for k, v in (params or {}).items() if k in merged})
    return merged


def project(x: np.ndarray, method: str, params: dict | None = None, seed: int = SEED, *,
            sample_above: int | None = None, fit_sample: int | None = None,
            progress: ProgressFn | None = None) -> tuple[np.ndarray, dict]:
    """Project vectors to 2-D.

    Parameters
    ----------
    x : np.ndarray [shape=(n, dim)]
    method : {"pca", "std-pca", "tsne", "umap"}
    params : dict, optional
        ``perplexity`` for t-SNE; ``n_neighbors``, ``min_dist``, ``metric`` for UMAP.
    sample_above, fit_sample : int, optional
        t-SNE and UMAP of more than ``sample_above`` points (default
        :data:`SAMPLE_ABOVE`) are fit on ``fit_sample`` of them (default
        :data:`FIT_SAMPLE`), drawn at random (``seed``), and the others are
        placed into that map.
    progress : callable, optional
        ``progress(done, total, step)`` within each step (:mod:`core.progress`):
        fitting (t-SNE reports its iterations as a share of the points it is
        fit on, UMAP and PCA only the end), then placing, every
        :data:`PLACE_BATCH` points.

    Returns
    -------
    xy : np.ndarray [shape=(n, 2), dtype=float32]
    info : dict
        ``explained_variance`` (two ratios) for PCA and STD-PCA, the
        parameters actually used (t-SNE's perplexity is capped for tiny
        sets), and for a sampled map ``fit_sample`` (points it was fit on)
        and ``placed`` (points placed into it).
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    params = canonical_params(method, params)
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    info: dict = {"params": params}
    report = progress or (lambda done, total, step: None)
    if n == 0:
        return np.zeros((0, 2), np.float32), info
    if n < 3:
        return np.column_stack([np.arange(n), np.zeros(n)]).astype(np.float32), info
    if method in ("pca", "std-pca"):
        data = StandardScaler().fit_transform(x) if method == "std-pca" else x
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(data)
        info["explained_variance"] = [float(v) for v in pca.explained_variance_ratio_]
        report(n, n, f"{method.upper()} of {n:,} points")
        return np.asarray(xy, dtype=np.float32), info
    fit_size = _fit_size(method, n, sample_above, fit_sample)
    sampled = fit_size is not None
    fit_rows = np.sort(np.random.default_rng(seed).choice(n, fit_size, replace=False)) if sampled else None
    fit_x = x[fit_rows] if sampled else x
    m = len(fit_x)
    step = f"fitting {'t-SNE' if method == 'tsne' else 'UMAP'} on {m:,} points"
    report(0, m, step)
    fit = _fit_tsne if method == "tsne" else _fit_umap
    model, xy_fit, info["params"] = fit(fit_x, params, seed, lambda share: report(int(share * m), m, step))
    report(m, m, step)
    if not sampled:
        return np.asarray(xy_fit, dtype=np.float32), info
    xy = np.empty((n, 2), np.float32)
    xy[fit_rows] = xy_fit
    rest = np.flatnonzero(~np.isin(np.arange(n), fit_rows))
    for start in range(0, len(rest), PLACE_BATCH):
        rows = rest[start:start + PLACE_BATCH]
        xy[rows] = _place(model, x[rows])
        report(start + len(rows), len(rest), f"placing {len(rest):,} points into the map")
    info["fit_sample"], info["placed"] = m, len(rest)
    return xy, info


def _fit_size(method: str, n: int, sample_above: int | None, fit_sample: int | None) -> int | None:
    """How many of ``n`` points a ``method`` map is fit on when not on all of them (``None``: all)."""
    sample_above = SAMPLE_ABOVE if sample_above is None else sample_above
    fit_sample = FIT_SAMPLE if fit_sample is None else fit_sample
    return fit_sample if method in ("tsne", "umap") and n > sample_above and fit_sample < n else None


def _fit_tsne(x: np.ndarray, params: dict, seed: int, share_done: Callable[[float], None]):
    """openTSNE's fitted embedding (it can place new points), its coordinates, and the parameters used."""
    from openTSNE import TSNE

    n = len(x)
    perplexity = float(min(params["perplexity"], max(2.0, (n - 1) / 3.0)))
    iterations = {"done": 0}
    tsne = TSNE(perplexity=perplexity, metric="cosine", n_jobs=-1, random_state=seed,
                # Barnes-Hut below 10k points: FFT interpolation has a fixed cost per iteration that dominates there.
                negative_gradient_method="bh" if n < 10_000 else "fft",
                initialization="pca" if n > 50 else "random", callbacks_every_iters=25)

    def tick(*_) -> None:
        iterations["done"] += tsne.callbacks_every_iters
        share_done(min(1.0, iterations["done"] / (tsne.early_exaggeration_iter + tsne.n_iter)))

    tsne.callbacks = [tick]
    embedding = tsne.fit(x)
    return embedding, np.asarray(embedding), {**params, "perplexity": perplexity}


def _fit_umap(x: np.ndarray, params: dict, seed: int, share_done: Callable[[float], None]):
    """The fitted UMAP (it can place new points), its coordinates, and the parameters used."""
    import umap

    n = len(x)
    n_neighbors = int(min(params["n_neighbors"], n - 1))
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=float(params["min_dist"]), metric=params["metric"],
                        random_state=seed, init="spectral" if n > n_neighbors + 2 else "random")
    xy = reducer.fit_transform(x)
    return reducer, xy, {**params, "n_neighbors": n_neighbors}


def _place(model, x: np.ndarray) -> np.ndarray:
    """Coordinates of new points in a fitted t-SNE or UMAP map, which stays as it is."""
    if hasattr(model, "prepare_partial"):  # openTSNE: the median of the nearest fitted points
        return np.asarray(model.prepare_partial(x))
    return np.asarray(model.transform(x))


def cached_projection(store: Store, space: str, method: str, level: str = "segment", params: dict | None = None,
                      with_trust: bool = True, on_compute: Callable[[int], None] | None = None,
                      progress: ProgressFn | None = None, max_points: int | None = None,
                      sample_above: int | None = None, fit_sample: int | None = None) -> dict:
    """The projection of a space, from the store's cache or computed and stored.

    ``on_compute(n)`` is called before a computation starts (not on a cache
    hit), so that the app can say what it is waiting for; ``progress`` is
    passed to :func:`project`.

    ``max_points`` is a visitor's budget in a shared app: a projection the
    store does not hold is computed only for at most that many points, one
    visitor at a time, and is returned without being stored (the store is
    shared, or read-only).  A read-only store never stores one either.

    ``sample_above`` and ``fit_sample`` go to :func:`project`.  Given, they
    also decide whether the stored map will do: one fit on another sample (or
    on every point, where a sample is asked for) is computed again and
    replaced.  Left out, any stored map of these parameters is used, however
    it was fit, so that a map computed once in full on a big machine is the
    one the app shows.

    Raises
    ------
    ReduceError
        For an unknown method, or a computation over the budget or while
        another visitor's runs.

    Returns
    -------
    dict
        ``ids`` (segment or track ids), ``xy``, ``seconds`` (compute time),
        ``info`` (explained variance, trustworthiness, parameters, and
        ``fit_sample``/``placed`` for a map fit on a sample) and ``cached``
        (whether it came from the store).
    """
    params = canonical_params(method, params)
    key = json.dumps(params, sort_keys=True)
    version = store.data_version(space)
    hit = store.get_projection(space, level, method, key, version)
    if hit is not None and (sample_above is None and fit_sample is None
                            or hit["info"].get("fit_sample") == _fit_size(method, len(hit["ids"]), sample_above,
                                                                          fit_sample)):
        return {**hit, "cached": True}
    ids, x = read_vectors(store, space, level)
    sampling = {"sample_above": sample_above, "fit_sample": fit_sample}
    if max_points is None:
        return _computed(store, space, method, level, params, ids, x, with_trust, on_compute, progress,
                         keep=not store.read_only, **sampling)
    if len(ids) > max_points:
        raise ReduceError(f"This shared app computes new maps of at most {max_points:,} points for a visitor, and this "
                          f"one has {len(ids):,}; choose the default settings, whose maps are stored.")
    if not _VISITOR_JOB.acquire(blocking=False):
        raise ReduceError("Another visitor's map is being computed; try again in a moment.")
    try:
        return _computed(store, space, method, level, params, ids, x, with_trust, on_compute, progress, keep=False,
                         **sampling)
    finally:
        _VISITOR_JOB.release()


def _computed(store: Store, space: str, method: str, level: str, params: dict, ids: np.ndarray, x: np.ndarray,
              with_trust: bool, on_compute: Callable[[int], None] | None, progress: ProgressFn | None,
              keep: bool, sample_above: int | None, fit_sample: int | None) -> dict:
    """:func:`cached_projection`'s computation, stored when ``keep``."""
    if on_compute is not None:
        on_compute(len(ids))
    t = time.perf_counter()
    xy, info = project(x, method, params, progress=progress, sample_above=sample_above, fit_sample=fit_sample)
    seconds = time.perf_counter() - t
    if with_trust:
        info["trustworthiness"] = trustworthiness(x, xy, k=10)
        info["trust_sample"] = int(min(len(x), TRUSTWORTHINESS_MAX_POINTS))
    if keep:
        store.put_projection(space, level, method, json.dumps(params, sort_keys=True), store.data_version(space),
                             ids, xy, seconds, info)
    return {"ids": ids, "xy": xy, "seconds": seconds, "info": info, "cached": False}
