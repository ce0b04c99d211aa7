"""2-D projections of an embedding space, cached in the store.

PCA reads global structure, t-SNE and UMAP local structure (Tovstogan et al.,
SMC 2022); STD-PCA standardises each dimension first, as the seed paper does,
so that a few high-variance dimensions cannot dominate the map.  Every
projection is computed once per (space, level, method, parameters, data
version) and stored, because UMAP alone costs about 25 s of JIT compilation
in a fresh process and a minute at 100k points.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from core.compare import TRUSTWORTHINESS_MAX_POINTS, trustworthiness
from core.errors import BadInput, check_choice
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


#: A projection that cannot run raises the family's :class:`~core.errors.BadInput`.
ReduceError = BadInput


def canonical_params(method: str, params: dict | None = None) -> dict:
    check_choice(method, METHODS, "method")
    merged = dict(DEFAULT_PARAMS[method])
    merged.update({k: v for k, v in (params or {}).items() if k in merged})
    return merged


def project(x: np.ndarray, method: str, params: dict | None = None, seed: int = SEED) -> tuple[np.ndarray, dict]:
    """Project vectors to 2-D.

    Parameters
    ----------
    x : np.ndarray [shape=(n, dim)]
    method : {"pca", "std-pca", "tsne", "umap"}
    params : dict, optional
        ``perplexity`` for t-SNE; ``n_neighbors``, ``min_dist``, ``metric`` for UMAP.

    Returns
    -------
    xy : np.ndarray [shape=(n, 2), dtype=float32]
    info : dict
        ``explained_variance`` (two ratios) for PCA and STD-PCA, and the
        parameters actually used (t-SNE's perplexity is capped for tiny sets).
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    params = canonical_params(method, params)
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    info: dict = {"params": params}
    if n == 0:
        return np.zeros((0, 2), np.float32), info
    if n < 3:
        return np.column_stack([np.arange(n), np.zeros(n)]).astype(np.float32), info
    if method in ("pca", "std-pca"):
        data = StandardScaler().fit_transform(x) if method == "std-pca" else x
        pca = PCA(n_components=2, random_state=seed)
        xy = pca.fit_transform(data)
        info["explained_variance"] = [float(v) for v in pca.explained_variance_ratio_]
    elif method == "tsne":
        from openTSNE import TSNE

        perplexity = float(min(params["perplexity"], max(2.0, (n - 1) / 3.0)))
        info["params"] = {**params, "perplexity": perplexity}
        # Barnes-Hut below 10k points: FFT interpolation has a fixed cost per iteration that dominates there.
        xy = np.asarray(TSNE(perplexity=perplexity, metric="cosine", n_jobs=-1, random_state=seed,
                             negative_gradient_method="bh" if n < 10_000 else "fft",
                             initialization="pca" if n > 50 else "random").fit(x))
    else:
        import umap

        n_neighbors = int(min(params["n_neighbors"], n - 1))
        info["params"] = {**params, "n_neighbors": n_neighbors}
        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=float(params["min_dist"]), metric=params["metric"],
                            random_state=seed, init="spectral" if n > n_neighbors + 2 else "random")
        xy = reducer.fit_transform(x)
    return np.asarray(xy, dtype=np.float32), info


def cached_projection(store: Store, space: str, method: str, level: str = "segment", params: dict | None = None,
                      with_trust: bool = True, on_compute: Callable[[int], None] | None = None) -> dict:
    """The projection of a space, from the store's cache or computed and stored.

    ``on_compute(n)`` is called before a computation starts (not on a cache
    hit), so that the app can say what it is waiting for.

    Returns
    -------
    dict
        ``ids`` (segment or track ids), ``xy``, ``seconds`` (compute time),
        ``info`` (explained variance, trustworthiness, parameters) and
        ``cached`` (whether it came from the store).
    """
    params = canonical_params(method, params)
    key = json.dumps(params, sort_keys=True)
    version = store.data_version(space)
    hit = store.get_projection(space, level, method, key, version)
    if hit is not None:
        return {**hit, "cached": True}
    ids, x = read_vectors(store, space, level)
    if on_compute is not None:
        on_compute(len(ids))
    t = time.perf_counter()
    xy, info = project(x, method, params)
    seconds = time.perf_counter() - t
    if with_trust:
        info["trustworthiness"] = trustworthiness(x, xy, k=10)
        info["trust_sample"] = int(min(len(x), TRUSTWORTHINESS_MAX_POINTS))
    store.put_projection(space, level, method, key, version, ids, xy, seconds, info)
    return {"ids": ids, "xy": xy, "seconds": seconds, "info": info, "cached": False}
