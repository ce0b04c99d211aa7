"""Store-level Compare analyses: :mod:`core.compare`'s metrics over stored spaces, cached in the store.

:mod:`core.compare` holds the metrics as pure numpy; this module reads the
spaces a collection holds (only the items all chosen models share: imported
vectors keep their own segments), takes labels and groups from its metadata,
and keeps each result in the store under what it was asked with.  A result
is invalidated by any space's data version or the metadata version, so a
page reload or a second command-line call costs one lookup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import numpy as np

from core import spaces
from core.compare import (
    MAX_POINTS,
    N_RESAMPLES,
    SEED,
    TRUSTWORTHINESS_MAX_POINTS,
    metrics_table,
    neighbour_disagreement,
    procrustes_align,
    sample_rows,
    trustworthiness,
)
from core.errors import BadInput, check_k, check_level
from core.reduce import cached_projection
from core.store import Store

#: Space every other model must beat; always part of a stored collection's metrics when present.
BASELINE = "dsp"

#: Items whose disagreement :func:`store_disagreement` colours before it samples.
DISAGREEMENT_MAX_POINTS = MAX_POINTS

#: ``kind`` of each analysis's rows in the store's cached results.
METRICS_KIND = "metrics"
DISAGREEMENT_KIND = "disagreement"


def _check_models(store: Store, models: Sequence[str]) -> list[str]:
    """The models, deduplicated, in order; an unknown one is refused with what the store holds."""
    models = list(dict.fromkeys(models))
    if not models:
        raise BadInput("Choose at least one model.")
    for m in models:
        store.require_space(m)
    return models


def with_baseline(store: Store, models: Sequence[str]) -> list[str]:
    """``models`` with the stored ``dsp`` baseline first, so that every table shows the row to beat."""
    return list(dict.fromkeys(([BASELINE] if store.space(BASELINE) is not None else []) + list(models)))


def _versions(store: Store, models: Sequence[str]) -> str:
    """Everything a cached result depends on: each space's data version and the metadata version."""
    return json.dumps({"spaces": {m: store.data_version(m) for m in models}, "metadata": store.metadata_version()})


def _aligned_items(store: Store, models: Sequence[str], level: str):
    """Common ids, track ids and unit vectors of several spaces (imported ones keep their own segments)."""
    loaded = [spaces.load(store, m, level) for m in models]
    ids, vectors, track_ids = spaces.aligned(loaded)
    return ids, track_ids, dict(zip(models, vectors)), {m: len(s.ids) for m, s in zip(models, loaded)}


def _column(store: Store, track_ids: np.ndarray, name: str) -> np.ndarray:
    """A metadata column per item, by its track; object array with None where missing."""
    meta = store.track_metadata().set_index("track_id")
    if name not in meta.columns:
        raise BadInput(f"No metadata column {name!r} (columns: {', '.join(meta.columns) or 'none'}).")
    values = meta[name].reindex(track_ids).to_numpy(dtype=object)
    return np.array([None if v is None or (isinstance(v, float) and v != v) else v for v in values], dtype=object)


def store_metrics(
    store: Store,
    models: Sequence[str],
    *,
    label: str | None = None,
    group: str | None = None,
    k: int = 10,
    level: str = "segment",
    method: str | None = "pca",
    max_points: int = MAX_POINTS,
) -> dict:
    """:func:`~core.compare.metrics_table` for stored models, on the segments (or tracks) they all have, cached.

    Labels and groups are metadata columns.  At segment level neighbours
    from the query's own track are always excluded, since slices of one
    recording would otherwise vote for each other; ``group`` adds a coarser
    exclusion (source recording, speaker).  Items lacking a label or group
    value are left out and counted, rather than made a class of their own.
    With a group column the bootstrap intervals resample whole groups.  The
    result is cached under the models, label, group, k, level and map
    method.

    Parameters
    ----------
    store : core.store.Store
    models : sequence of str
        Stored space keys; the table keeps this order.
    label, group : str, optional
        Metadata column names.
    k : int > 0
    level : {"segment", "track"}
    method : str, optional
        Map (``core.reduce`` method) whose trustworthiness@10 is reported;
        the projection is read from, or added to, the store's cache.  None
        skips it.

    Returns
    -------
    dict
        :func:`~core.compare.metrics_table`'s result; ``info`` adds
        ``level``, ``label``, ``group``, ``method``, ``per_model`` (items
        each space holds), ``dropped`` (items without a label or group
        value), ``seconds`` and ``cached``.  NaN (a metric that cannot be
        computed) reads back from the cache as None.
    """
    models = _check_models(store, models)
    check_level(level)
    check_k(k)
    key = json.dumps({"models": models, "label": label, "group": group, "k": k, "level": level,
                      "method": method, "max_points": max_points, "n_resamples": N_RESAMPLES})
    version = _versions(store, models)
    hit = store.get_cached(METRICS_KIND, key, version)
    if hit is not None:
        hit["info"]["cached"] = True
        return hit
    started = time.perf_counter()
    ids, track_ids, vectors, per_model = _aligned_items(store, models, level)
    keep = np.ones(len(ids), dtype=bool)
    labels = _column(store, track_ids, label) if label else None
    extra = _column(store, track_ids, group) if group else None
    for values in (labels, extra):
        if values is not None:
            keep &= np.array([v is not None for v in values], dtype=bool)
    groups = ([track_ids[keep]] if level == "segment" else []) + ([extra[keep]] if extra is not None else [])
    table = metrics_table({m: v[keep] for m, v in vectors.items()}, labels=None if labels is None else labels[keep],
                          groups=groups or None, k=k, max_points=max_points,
                          resample_groups=None if extra is None else extra[keep])
    if method:
        for m in models:
            table[m]["trustworthiness"] = _map_trustworthiness(store, m, method, level)
        table["info"]["trustworthiness_points"] = min(max(per_model.values()), TRUSTWORTHINESS_MAX_POINTS)
    table["info"].update({"level": level, "label": label, "group": group, "method": method, "per_model": per_model,
                          "dropped": int((~keep).sum()), "seconds": time.perf_counter() - started})
    if not store.read_only:  # a published collection keeps what was computed at publish time only
        store.put_cached(METRICS_KIND, key, version, table)
    table["info"]["cached"] = False
    return table


def _map_trustworthiness(store: Store, model: str, method: str, level: str) -> float:
    """Trustworthiness@10 of a model's whole map, as ``core.reduce`` stored it with the projection.

    Reusing the stored value saves recomputing it (seconds per model); the
    map covers all the model's items, as the map the user sees does.
    """
    proj = cached_projection(store, model, method, level=level)
    value = proj["info"].get("trustworthiness")
    if value is None:
        value = trustworthiness(spaces.read_vectors(store, model, level)[1], proj["xy"], k=10)
    return float("nan") if value is None else float(value)


def store_disagreement(
    store: Store,
    model_a: str,
    model_b: str,
    *,
    k: int = 10,
    level: str = "segment",
    max_points: int = DISAGREEMENT_MAX_POINTS,
) -> dict:
    """1 − Jaccard@k of every shared item's neighbours in two stored models, cached in the store.

    Neighbours are searched in embedding space among the items both models
    hold, never in the query's own track at segment level.  Above
    ``max_points`` items one random sample (fixed seed) is scored, within
    itself, and the others get no value.

    Returns
    -------
    dict
        ``ids`` (list of the scored ids), ``disagreement`` (list of floats,
        same order), ``n`` (items both models hold), ``sampled`` (items
        scored, or None when all were), ``k``, ``level``, ``cached``.
    """
    models = _check_models(store, [model_a, model_b])
    if len(models) != 2:
        raise BadInput("Choose two different models to see where they disagree.")
    check_level(level)
    check_k(k)
    key = json.dumps({"models": models, "k": k, "level": level, "max_points": max_points})
    version = _versions(store, models)
    hit = store.get_cached(DISAGREEMENT_KIND, key, version)
    if hit is not None:
        return {**hit, "cached": True}
    ids, track_ids, vectors, _ = _aligned_items(store, models, level)
    rows = sample_rows(len(ids), max_points, SEED)
    groups = track_ids[rows] if level == "segment" else None
    values = neighbour_disagreement(vectors[model_a][rows], vectors[model_b][rows], k=k, groups=groups)
    result = {"ids": ids[rows].tolist(), "disagreement": values.tolist(), "n": int(len(ids)),
              "sampled": int(len(rows)) if len(rows) < len(ids) else None, "k": k, "level": level}
    if not store.read_only:  # a published collection keeps what was computed at publish time only
        store.put_cached(DISAGREEMENT_KIND, key, version, result)
    return {**result, "cached": False}


def store_maps(store: Store, models: Sequence[str], method: str, *, level: str = "segment",
               params: dict | None = None, max_points: int | None = None) -> dict:
    """Each model's 2-D map on the items all of them hold, turned and scaled onto the first model's map.

    Projections come from (or go to) the store's cache; only the alignment
    (orthogonal Procrustes plus scale, :func:`~core.compare.procrustes_align`)
    is redone, which is instant, so that the same region sits in the same
    place in every map and a moving point means the models disagree about it.

    Returns
    -------
    dict
        ``ids`` (np.ndarray [shape=(n,)], shared, sorted), ``maps`` (model →
        np.ndarray [shape=(n, 2)]), ``per_model`` (model → items it holds),
        ``projections`` (model → :func:`core.reduce.cached_projection`'s dict).

    ``max_points`` is a shared app's budget for a visitor's maps that the
    store does not hold (see :func:`core.reduce.cached_projection`).
    """
    models = _check_models(store, models)
    projections = {}
    for m in models:
        projections[m] = cached_projection(store, m, method, level=level, params=params, max_points=max_points)
    ids = projections[models[0]]["ids"]
    for m in models[1:]:
        ids = np.intersect1d(ids, projections[m]["ids"], assume_unique=True)
    maps = {m: p["xy"][np.searchsorted(p["ids"], ids)] for m, p in projections.items()}
    if len(ids):
        target = maps[models[0]]
        maps = {m: xy if m == models[0] else procrustes_align(xy, target) for m, xy in maps.items()}
    return {"ids": ids, "maps": maps, "per_model": {m: int(len(p["ids"])) for m, p in projections.items()},
            "projections": projections}
