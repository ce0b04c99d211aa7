"""Cluster ids computed in the embedding space, never on the 2-D map.

A 2-D projection tears and glues neighbourhoods, so clusters found there
would echo the projection's artefacts; these are found on the unit vectors
themselves (cosine geometry, like every other comparison in the project).

* k-means: exact ``KMeans`` up to :data:`FULL_KMEANS_MAX` points,
  ``MiniBatchKMeans`` above, where the exact one takes minutes.
* HDBSCAN (scikit-learn) on a 50-D PCA reduction, up to :data:`HDBSCAN_MAX`
  points: in 512-D it took 75 s at 10k points, and its cost grows with the
  square of the point count.  Points it leaves unassigned are "noise".
"""

from __future__ import annotations

import json

import numpy as np

from core.errors import BadInput, check_choice
from core.spaces import read_vectors
from core.store import Store
from core.vectors import normalize

METHODS = ("kmeans", "hdbscan")
FULL_KMEANS_MAX = 10_000
HDBSCAN_MAX = 10_000
HDBSCAN_PCA_DIM = 50
SEED = 42


#: A clustering that cannot run raises the family's :class:`~core.errors.BadInput`.
ClusterError = BadInput


def default_min_cluster_size(n: int) -> int:
    """About 1% of the points: fewer, larger clusters than sklearn's fixed 5, which shatters 10k points."""
    return int(max(5, round(n / 100)))


def cluster(x: np.ndarray, method: str = "kmeans", k: int = 8, min_cluster_size: int | None = None,
            seed: int = SEED) -> tuple[np.ndarray, str]:
    """Cluster the rows of ``x`` by direction.

    Parameters
    ----------
    x : np.ndarray [shape=(n, dim)]
    method : {"kmeans", "hdbscan"}
    k : int
        Clusters for k-means.
    min_cluster_size : int, optional
        For HDBSCAN; :func:`default_min_cluster_size` when omitted.

    Returns
    -------
    labels : np.ndarray [shape=(n,), dtype=int64]
        Cluster ids from 0; -1 is HDBSCAN's noise.
    description : str
        What was run, for the screen (which algorithm, on what).
    """
    check_choice(method, METHODS, "clustering")
    x = normalize(x)
    n, dim = x.shape
    if n == 0:
        return np.zeros(0, np.int64), "no points"
    if method == "kmeans":
        from sklearn.cluster import KMeans, MiniBatchKMeans

        k = int(max(1, min(k, n)))
        if n <= FULL_KMEANS_MAX:
            model, name = KMeans(n_clusters=k, n_init=3, random_state=seed), "k-means"
        else:
            model, name = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed), "MiniBatchKMeans"
        labels = model.fit_predict(x)
        return labels.astype(np.int64), f"{name}, k={k}, on the {dim}-D unit vectors"
    if method == "hdbscan":
        if n > HDBSCAN_MAX:
            raise ClusterError(f"HDBSCAN is limited to {HDBSCAN_MAX:,} points here ({n:,} asked); use k-means, "
                               "or filter the map to fewer points.")
        from sklearn.cluster import HDBSCAN
        from sklearn.decomposition import PCA

        size = int(min_cluster_size or default_min_cluster_size(n))
        comps = int(min(HDBSCAN_PCA_DIM, dim, n))
        reduced = PCA(n_components=comps, random_state=seed).fit_transform(x) if dim > comps else x
        labels = HDBSCAN(min_cluster_size=min(size, max(2, n)), copy=True).fit_predict(reduced)
        found = len(set(labels.tolist()) - {-1})
        noise = int((labels == -1).sum())
        return labels.astype(np.int64), (f"HDBSCAN, min cluster size {size}, on a {comps}-D PCA of the {dim}-D unit vectors: "
                                         f"{found} clusters, {noise:,} noise points")


def cached_clusters(store: Store, space: str, level: str = "segment", method: str = "kmeans", k: int = 8,
                    min_cluster_size: int | None = None) -> dict:
    """Cluster labels of a space, from the store's cache or computed and stored.

    Returns
    -------
    dict
        ``ids`` (np.ndarray of segment or track ids), ``labels`` (aligned
        with ids) and ``description``.
    """
    key = json.dumps({"space": space, "level": level, "method": method,
                      "k": int(k) if method == "kmeans" else None, "min_cluster_size": min_cluster_size}, sort_keys=True)
    version = str(store.data_version(space))
    hit = store.get_cached("clusters", key, version)
    if hit is None:
        ids, x = read_vectors(store, space, level)
        labels, description = cluster(x, method, k=k, min_cluster_size=min_cluster_size)
        hit = {"ids": ids.tolist(), "labels": labels.tolist(), "description": description}
        store.put_cached("clusters", key, version, hit)
    return {"ids": np.asarray(hit["ids"], dtype=np.int64), "labels": np.asarray(hit["labels"], dtype=np.int64),
            "description": hit["description"]}
