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
    LAYERS_MAX_POINTS,
    MAX_POINTS,
    N_RESAMPLES,
    PROBE_MAX_POINTS,
    SEED,
    TRUSTWORTHINESS_MAX_POINTS,
    hubness,
    k_occurrence,
    knn,
    layer_table,
    linear_probe,
    metrics_table,
    neighbour_disagreement,
    procrustes_align,
    sample_rows,
    trustworthiness,
)
from core.errors import BadInput, check_k, check_level
from core.models.base import layer_of, split_key
from core.reduce import ReduceError, cached_projection
from core.store import Store

#: Space every other model must beat; always part of a stored collection's metrics when present.
BASELINE = "dsp"

#: Items whose disagreement :func:`store_disagreement` colours before it samples.
DISAGREEMENT_MAX_POINTS = MAX_POINTS

#: ``kind`` of each analysis's rows in the store's cached results.
METRICS_KIND = "metrics"
DISAGREEMENT_KIND = "disagreement"
PROBE_KIND = "linear_probe"
LAYERS_KIND = "layers"
OCCURRENCE_KIND = "k_occurrence"


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


def _labelled(store: Store, track_ids: np.ndarray, label: str | None, group: str | None, level: str):
    """Which items have every asked-for value, their labels, and the groups excluded from their neighbours.

    At segment level the track is always a group, since slices of one
    recording would otherwise vote for each other; ``group`` adds a coarser
    one (source recording, speaker).

    Returns
    -------
    keep : np.ndarray [shape=(n,), dtype=bool]
        Items with a label and a group value (those asked for).
    labels : np.ndarray [shape=(keep.sum(),)] or None
    groups : list of np.ndarray [shape=(keep.sum(),)] or None
        The track (segment level) and the group column.
    column : np.ndarray [shape=(keep.sum(),)] or None
        The group column alone, what a bootstrap resamples.
    """
    keep = np.ones(len(track_ids), dtype=bool)
    labels = _column(store, track_ids, label) if label else None
    extra = _column(store, track_ids, group) if group else None
    for values in (labels, extra):
        if values is not None:
            keep &= np.array([v is not None for v in values], dtype=bool)
    groups = ([track_ids[keep]] if level == "segment" else []) + ([extra[keep]] if extra is not None else [])
    return (keep, None if labels is None else labels[keep], groups or None,
            None if extra is None else extra[keep])


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
    probe: bool = False,
    map_max_points: int | None = None,
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
    probe : bool
        With a label, add each model's ``linear_probe``
        (:func:`store_linear_probe`, cached on its own).
    map_max_points : int, optional
        A shared app's budget for a visitor's maps (see
        :func:`core.reduce.cached_projection`): a map the store lacks is
        computed only within it; over it, trustworthiness is NaN, ``info``
        says why under ``trustworthiness_note``, and the table is not cached.

    Returns
    -------
    dict
        :func:`~core.compare.metrics_table`'s result; ``info`` adds
        ``level``, ``label``, ``group``, ``method``, ``per_model`` (items
        each space holds), ``dropped`` (items without a label or group
        value), ``seconds`` and ``cached``.  NaN (a metric that cannot be
        computed) reads back from the cache as None.
    """
    table = _metrics(store, models, label=label, group=group, k=k, level=level, method=method, max_points=max_points,
                     map_max_points=map_max_points)
    if probe and label:
        for m in _check_models(store, models):
            found = store_linear_probe(store, m, label=label, group=group, level=level)
            table[m]["linear_probe"] = {key: v for key, v in found.items() if key != "cached"}
    return table


def _metrics(store: Store, models: Sequence[str], *, label, group, k, level, method, max_points,
             map_max_points=None) -> dict:
    """:func:`store_metrics` without the probe, which is cached apart so that the app can ask for it alone."""
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
    keep, labels, groups, extra = _labelled(store, track_ids, label, group, level)
    table = metrics_table({m: v[keep] for m, v in vectors.items()}, labels=labels, groups=groups, k=k,
                          max_points=max_points, resample_groups=extra)
    if method:
        for m in models:
            try:
                table[m]["trustworthiness"] = _map_trustworthiness(store, m, method, level, map_max_points)
            except ReduceError as exc:  # a visitor's map over the shared app's budget: the rest still stands
                table[m]["trustworthiness"] = float("nan")
                table["info"]["trustworthiness_note"] = str(exc)
        table["info"]["trustworthiness_points"] = min(max(per_model.values()), TRUSTWORTHINESS_MAX_POINTS)
    table["info"].update({"level": level, "label": label, "group": group, "method": method, "per_model": per_model,
                          "dropped": int((~keep).sum()), "seconds": time.perf_counter() - started})
    if not store.read_only and "trustworthiness_note" not in table["info"]:  # published: only what publish computed
        store.put_cached(METRICS_KIND, key, version, table)
    table["info"]["cached"] = False
    return table


def _map_trustworthiness(store: Store, model: str, method: str, level: str, max_points: int | None = None) -> float:
    """Trustworthiness@10 of a model's whole map, as ``core.reduce`` stored it with the projection.

    Reusing the stored value saves recomputing it (seconds per model); the
    map covers all the model's items, as the map the user sees does.
    """
    proj = cached_projection(store, model, method, level=level, max_points=max_points)
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


def store_linear_probe(store: Store, model: str, *, label: str, group: str | None = None, level: str = "segment",
                       max_points: int = PROBE_MAX_POINTS) -> dict:
    """:func:`~core.compare.linear_probe` of one stored model, cached until its data or the metadata change.

    Cached per model rather than per table, because the app computes it on
    demand, model by model, and a second table with the same model reuses it.
    Folds keep each track whole at segment level, and each ``group`` value
    whole; items without a label or group value are left out.

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``, ``n`` (items probed), ``of`` (items
        with a label), ``folds``, and ``cached``.
    """
    (model,) = _check_models(store, [model])
    check_level(level)
    key = json.dumps({"model": model, "label": label, "group": group, "level": level, "max_points": max_points})
    version = _versions(store, [model])
    hit = store.get_cached(PROBE_KIND, key, version)
    if hit is not None:
        return {**hit, "cached": True}
    space = spaces.load(store, model, level)
    keep, labels, groups, _ = _labelled(store, space.track_ids, label, group, level)
    result = linear_probe(space.vectors[keep], labels, groups=groups, max_points=max_points)
    store.put_cached(PROBE_KIND, key, version, result)
    return {**result, "cached": False}


def layered_models(store: Store) -> dict[str, dict[int, str]]:
    """Models with stored layer spaces: model -> {hidden state: stored space}, layers in order.

    Both spellings count (``mert-v1-95m/l6`` and the legacy
    ``mert-v1-95m-l6``); where a store holds both, the current one is used.
    """
    found: dict[str, dict[int, str]] = {}
    for space in store.spaces()["space"]:
        named = layer_of(space)
        if named is None:
            continue
        model, layer = named
        if layer not in found.get(model, {}) or split_key(space)[1]:  # the current spelling has an output part
            found.setdefault(model, {})[layer] = space
    return {m: dict(sorted(layers.items())) for m, layers in found.items()}


def store_layers(
    store: Store,
    model: str,
    *,
    label: str | None = None,
    group: str | None = None,
    k: int = 10,
    level: str = "segment",
    against: Sequence[str] = (),
    max_points: int = LAYERS_MAX_POINTS,
) -> dict:
    """A stored model's layers compared (:func:`~core.compare.layer_table`), on the items all the spaces share, cached.

    Parameters
    ----------
    model : str
        A model key with stored layer spaces (:func:`layered_models`).
    label, group : str, optional
        Metadata columns, as in :func:`store_metrics`; the bootstrap
        interval draws whole ``group`` values when one is given.
    against : sequence of str
        Other stored spaces each layer's CKA is measured against.

    Returns
    -------
    dict
        :func:`~core.compare.layer_table`'s figures plus ``model``,
        ``layers`` (hidden-state numbers), ``spaces`` (stored names, same
        order), ``k``, ``level``, ``label``, ``group``, ``dropped``,
        ``seconds`` and ``cached``.

    Raises
    ------
    BadInput
        When the store holds no layer space of ``model``.
    """
    check_level(level)
    check_k(k)
    stored = layered_models(store)
    if model not in stored:
        have = ", ".join(stored) or "none"
        raise BadInput(f"No layer spaces of {model!r} are stored (models with layers: {have}); "
                       f"extract it with --layers, e.g. --model {model} --layers all.")
    layers = stored[model]
    names = list(layers.values())
    others = [m for m in dict.fromkeys(against) if m not in names]
    _check_models(store, names + others)
    key = json.dumps({"model": model, "spaces": names, "against": others, "label": label, "group": group, "k": k,
                      "level": level, "max_points": max_points})
    version = _versions(store, names + others)
    hit = store.get_cached(LAYERS_KIND, key, version)
    if hit is not None:
        return {**hit, "cached": True}
    started = time.perf_counter()
    _, track_ids, vectors, _ = _aligned_items(store, names + others, level)
    keep, labels, groups, column = _labelled(store, track_ids, label, group, level)
    table = layer_table([vectors[m][keep] for m in names], labels=labels, groups=groups, resample_groups=column, k=k,
                        others={m: vectors[m][keep] for m in others}, max_points=max_points)
    result = {"model": model, "layers": list(layers), "spaces": names, **table, "k": k, "level": level, "label": label,
              "group": group, "dropped": int((~keep).sum()), "seconds": time.perf_counter() - started}
    store.put_cached(LAYERS_KIND, key, version, result)
    return {**result, "cached": False}


def store_k_occurrence(store: Store, space: str, *, k: int = 10, level: str = "segment",
                       max_points: int = MAX_POINTS) -> dict:
    """How often each item of a stored space is someone's k-th nearest neighbour, cached: hubs to listen to.

    Neighbours are those of :func:`store_metrics` (cosine, never the query's
    own track at segment level), so the skewness is its ``hubness``.  Above
    ``max_points`` items one random sample (fixed seed) is scored within
    itself and the others get no count.

    Returns
    -------
    dict
        ``ids`` and ``counts`` (lists, same order; counts sum to about
        ``k · len(ids)``), ``skewness``, ``k``, ``level``, ``n`` (items the
        space holds), ``sampled`` (items scored, or None) and ``cached``.
    """
    (space,) = _check_models(store, [space])
    check_level(level)
    check_k(k)
    key = json.dumps({"space": space, "k": k, "level": level, "max_points": max_points})
    version = _versions(store, [space])
    hit = store.get_cached(OCCURRENCE_KIND, key, version)
    if hit is not None:
        return {**hit, "cached": True}
    loaded = spaces.load(store, space, level)
    rows = sample_rows(len(loaded.ids), max_points, SEED)
    neighbours, _ = knn(loaded.vectors[rows], k=k, groups=loaded.track_ids[rows] if level == "segment" else None)
    result = {"ids": loaded.ids[rows].tolist(), "counts": k_occurrence(neighbours).tolist(),
              "skewness": hubness(neighbours), "k": k, "level": level, "n": int(len(loaded.ids)),
              "sampled": int(len(rows)) if len(rows) < len(loaded.ids) else None}
    store.put_cached(OCCURRENCE_KIND, key, version, result)
    return {**result, "cached": False}
