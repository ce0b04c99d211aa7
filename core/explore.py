"""Tables, selections, samples and charts behind the Explore and Compare maps, as plain functions.

The pages are thin shells over these so that every decision they make (what a
selection contains, which points are drawn, what an export holds) is tested
without a browser.

Linked views work in the browser alone: both maps are views of one Vega-Lite
chart over one table holding every view's coordinates (``x0, y0, x1, y1``),
and a selection in either view highlights through Vega conditions.  A click
therefore changes no chart data, and Streamlit re-sends nothing but the
selection (rebuilding the data costs 1.7 s per click at 100k points).
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

import altair as alt
import numpy as np
import pandas as pd

from core.analyses import store_k_occurrence
from core.cluster import cached_clusters
from core.errors import BadInput
from core.spaces import read_vectors
from core.store import Store

#: A categorical colour gives this many values a colour; the rest are drawn grey as "other".
MAX_CATEGORIES = 20

#: Labels of the values folded together, of a missing value and of HDBSCAN's noise.
OTHER, MISSING, NOISE = "other", "(missing)", "noise"

#: Categories that carry no class and are drawn in greys rather than a palette colour.
GREY_VALUES = {OTHER: "#c4c4c4", NOISE: "#dcdcdc", MISSING: "#a3a3a3"}

#: tableau10 and tableau20, their greys swapped for cyan and olive, so that only what carries no class is grey.
_TABLEAU10 = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
              "#17becf")
_TABLEAU20 = ("#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#59a14f", "#8cd17d", "#b6992d", "#f1ce63", "#499894",
              "#86bcb6", "#e15759", "#ff9d9a", "#17becf", "#bcbd22", "#d37295", "#fabfd2", "#b07aa1", "#d4a6c8",
              "#9d7660", "#d7b5a6")

#: Points drawn per chart before a stratified sample takes over.  In headless Chromium on
#: 2 idle cores (bench/bench_explore.py) two linked views of 10k points paint in about 4.3 s
#: and answer a click in about 0.8 s; at 20k they took 5.9 s and up to 1.5 s, past the
#: 5 s / 1 s targets.  Users can raise it; the caption always says when a sample is drawn.
DISPLAY_CAP = 10_000

#: Width of one column of a categorical legend, which sits below the maps.
LEGEND_COLUMN_PX = 170

#: The name under which the page hands :func:`chart_data`'s rows to the spec (``spec["datasets"]``).
DATASET = "points"

#: The dataset of the counts drawn under a sample (:func:`core.density.view_densities`).
DENSITY = "density"

#: Selections the chart reports: the clicked points and one box per view.
PICK = "pick"
TRACK = "track"


def brush_name(view: int) -> str:
    return f"brush{view}"


def selections(n_views: int, drag: str = "select") -> list[str]:
    """The selections a chart of :func:`linked_spec` reports: the clicked points, and a box per view when dragging selects."""
    return [PICK] + ([brush_name(i) for i in range(n_views)] if drag == "select" else [])


def points_frame(store: Store, ids: np.ndarray, level: str = "segment") -> pd.DataFrame:
    """Segments (or tracks) ``ids`` with their attributes, metadata and file name, in the order given.

    Only these rows are read (:meth:`core.store.Store.rows`), so a click
    costs a lookup, not a read of the collection.  ``id`` is the point's id
    at its level; at track level ``start_s``/``end_s`` span the track.
    """
    frame = store.rows(ids, level)
    if level == "segment":
        frame = frame.drop(columns="segment_id")
    frame.insert(0, "id", np.asarray(ids, dtype=np.int64))
    frame["name"] = file_names(frame["path"])
    return frame


def file_names(paths: pd.Series) -> np.ndarray:
    """Each path's file name (``""`` where missing), shape (n,).

    A track's segments share its path, so each distinct path is parsed once: a million segments of a thousand
    tracks cost a thousand ``Path`` objects, not a million (seconds on the first chart).
    """
    codes, distinct = pd.factorize(paths)
    names = np.array([Path(p).name if isinstance(p, str) else "" for p in distinct] + [""], dtype=object)
    return names[codes]  # a missing path's code, -1, takes the trailing ""


def linked_frame(store: Store, projections: list[tuple[np.ndarray, np.ndarray]],
                 level: str = "segment") -> pd.DataFrame:
    """Every point of every view in one table, with view ``i``'s coordinates in ``x{i}, y{i}``.

    Views of spaces with different segments (imported vectors keep their
    own) are joined on the segment id; a point missing from a view has NaN
    coordinates there, and Vega leaves it out of that view only.
    """
    ids = np.unique(np.concatenate([np.asarray(p[0], dtype=np.int64) for p in projections]))
    frame = points_frame(store, ids, level)
    for i, (view_ids, xy) in enumerate(projections):
        pos = np.searchsorted(ids, view_ids)
        for axis, name in enumerate((f"x{i}", f"y{i}")):
            column = np.full(len(ids), np.nan, dtype=np.float32)
            column[pos] = xy[:, axis]
            frame.insert(1 + 2 * i + axis, name, column)
    return frame


def coinciding(ids_a: np.ndarray, ids_b: np.ndarray) -> int:
    """Points present in both views (same path, start and end share one segment id)."""
    return int(len(np.intersect1d(ids_a, ids_b)))


def views_difference(frame: pd.DataFrame, level: str = "segment") -> str | None:
    """Why two views of :func:`linked_frame` draw different points, or None when they draw the same.

    Two models extracted on different files differ by whole tracks; only
    imported vectors, which keep their own segments, can differ inside a
    track that both views hold.  The sentence names the cause it sees.
    """
    in_a, in_b = frame["x0"].notna().to_numpy(), frame["x1"].notna().to_numpy()
    both, only_a, only_b = int((in_a & in_b).sum()), int((in_a & ~in_b).sum()), int((~in_a & in_b).sum())
    if not only_a and not only_b:
        return None
    tracks = frame["track_id"].to_numpy()
    shared_tracks = np.intersect1d(tracks[in_a], tracks[in_b])
    inside = np.isin(tracks[in_a ^ in_b], shared_tracks).any()
    cause = ("imported vectors keep their own segments" if inside
             else "the two models were extracted on different files")
    return (f"The views hold different {level}s ({cause}): {both:,} in both views (same path, start and end), "
            f"{only_a:,} only in A and {only_b:,} only in B, each drawn in its own view only.")


def carry_selection(segments: pd.DataFrame, ids: Sequence[int], from_level: str, to_level: str) -> list[int]:
    """The points of ``to_level`` that hold a selection made at ``from_level``.

    A segment becomes its track and a track its first segment, so that
    switching levels keeps the same audio rather than the same id (segment
    101 is not track 101).

    Parameters
    ----------
    segments : pd.DataFrame
        ``segment_id``, ``track_id`` and ``start_s`` of every segment (:meth:`core.store.Store.segment_table`).
    ids : sequence of int
        Selected ids at ``from_level``, clicked first.
    """
    if from_level == to_level:
        return list(ids)
    by_segment = segments.set_index("segment_id")["track_id"]
    if to_level == "track":
        return list(dict.fromkeys(int(by_segment[i]) for i in ids if i in by_segment.index))
    first = segments.sort_values("start_s", kind="stable").drop_duplicates("track_id").set_index("track_id")["segment_id"]
    return [int(first[t]) for t in ids if t in first.index]


def projection_note(projection: dict) -> str:
    """A map's caption: how far its 2-D layout can be trusted, and what it cost.

    ``projection`` is :func:`core.reduce.cached_projection`'s dict.
    """
    info = projection["info"]
    notes = []
    if info.get("explained_variance"):
        notes.append("explained variance " + " + ".join(f"{v:.1%}" for v in info["explained_variance"]))
    if info.get("fit_sample"):
        notes.append(f"fit on a random sample of {info['fit_sample']:,} points, the other {info['placed']:,} placed into it")
    if info.get("trustworthiness") is not None:
        sample = info.get("trust_sample", len(projection["ids"]))
        notes.append(f"trustworthiness@10 {info['trustworthiness']:.3f} on {sample:,} points")
    notes.append(f"computed in {projection['seconds']:.1f} s" + (" (stored)" if projection.get("cached") else ""))
    return " · ".join(notes)


def disagreement_points(store: Store, maps: dict, scored: dict, *, models: Sequence[str],
                        level: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Compare's linked maps as one table, with each point's disagreement beside it.

    Only points that every model holds and whose disagreement was scored
    are kept: on a large collection the disagreement is scored on a sample,
    and a point without a score would draw in no colour.

    Parameters
    ----------
    maps : dict
        :func:`core.analyses.store_maps`'s result; model ``models[i]``'s map goes to ``x{i}, y{i}``.
    scored : dict
        :func:`core.analyses.store_disagreement`'s result.

    Returns
    -------
    frame : pd.DataFrame
        As :func:`linked_frame`.
    disagreement : np.ndarray [shape=(len(frame),)]
        Aligned with ``frame``'s rows.
    """
    ids = np.intersect1d(maps["ids"], scored["ids"])
    pos = np.searchsorted(maps["ids"], ids)
    frame = linked_frame(store, [(ids, maps["maps"][m][pos]) for m in models], level=level)
    disagreement = pd.Series(scored["disagreement"], index=scored["ids"]).reindex(ids).to_numpy()
    return frame, disagreement


# ---------------------------------------------------------------------- colours


def colour_column(values: pd.Series, keep: np.ndarray | None = None, max_categories: int = MAX_CATEGORIES,
                  chosen: Sequence[str] | None = None) -> pd.Series:
    """Numbers stay numbers; text gives up to ``max_categories`` values a colour and folds the rest into "other".

    The values are ranked over the points shown (``keep``), not over the
    whole collection: after a filter to eight categories all eight get a
    colour.  ``chosen`` names the values to colour instead of the most
    frequent ones.  Labels come back as a pandas categorical so that the
    chart's Arrow payload carries each label once, not once per point; the
    categories are the coloured values in rank order, then those drawn grey
    (:data:`GREY_VALUES`).

    Parameters
    ----------
    values : pd.Series [shape=(n,)]
    keep : np.ndarray [shape=(n,), dtype=bool], optional
        The points shown; all when omitted.
    max_categories : int
    chosen : sequence of str, optional
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float32")
    text = values.astype("string").fillna(MISSING)
    counts = (text if keep is None else text[np.asarray(keep, dtype=bool)]).value_counts()
    ranked = [v for v in counts.index if v not in GREY_VALUES]
    coloured = ranked[:max_categories] if chosen is None else [v for v in chosen if v in counts.index][:max_categories]
    text = text.where(text.isin(set(coloured) | set(GREY_VALUES) - {OTHER}), OTHER)
    present = set(text if keep is None else text[np.asarray(keep, dtype=bool)])
    order = [*coloured, *[g for g in GREY_VALUES if g in present]]
    order += sorted(set(text) - set(order))  # hidden by the filter: drawn nowhere, but a valid category
    return pd.Categorical(text, categories=order)


def colour_values(values: pd.Series, keep: np.ndarray | None = None) -> list[str]:
    """Every text value among the points shown, most frequent first: the choice of values to colour."""
    text = values.astype("string").fillna(MISSING)
    counts = (text if keep is None else text[np.asarray(keep, dtype=bool)]).value_counts()
    return [v for v in counts.index if v not in GREY_VALUES]


def colour_range(categories: Sequence[str]) -> list[str]:
    """The colour of each category: tableau10 (up to ten values) or tableau20, grey for :data:`GREY_VALUES`.

    Grey marks what carries no class: the folded tail, HDBSCAN's noise and
    missing values, so they never take a colour a real value would need.
    """
    palette = _TABLEAU10 if sum(c not in GREY_VALUES for c in categories) <= 10 else _TABLEAU20
    colours, i = [], 0
    for c in categories:
        if c in GREY_VALUES:
            colours.append(GREY_VALUES[c])
        else:
            colours.append(palette[i % len(palette)])
            i += 1
    return colours


def top_tag(ids: np.ndarray, scores: np.ndarray, tag_names: list[str]) -> pd.Series:
    """The highest-scoring tag of each point, e.g. MusiCNN's taggram or a zero-shot space."""
    if scores.shape[1] != len(tag_names):
        raise BadInput(f"{scores.shape[1]} scores per point for {len(tag_names)} tag names; "
                       "pass the tag names stored with the same space.")
    names = np.asarray(tag_names, dtype=object)
    return pd.Series(names[np.argmax(scores, axis=1)] if len(scores) else [], index=np.asarray(ids), dtype=object)


def tagged_spaces(spaces: pd.DataFrame) -> list[str]:
    """Spaces whose dimensions are named tags (a tagger's taggram), which can colour a map by their top tag.

    ``spaces`` is :meth:`core.store.Store.spaces`, where ``tag_names`` is a JSON list or missing.
    """
    return [s for s, tags in zip(spaces["space"], spaces["tag_names"]) if isinstance(tags, str) and json.loads(tags)]


def derived_colour(store: Store, *, space: str, ids: np.ndarray, level: str, kind: str, k: int = 8,
                   min_cluster_size: int | None = None) -> tuple[str, pd.Series, str]:
    """A colour computed from an embedding space rather than read from metadata.

    The space need not be one that is drawn: a map of one model can be
    coloured by another's tags or clusters.  Clusters are found in the full
    space, not on the 2-D map, and kept in the store, so they are computed
    once per data version.

    Parameters
    ----------
    store : core.store.Store
    space : str
        The space the colour comes from.
    ids : np.ndarray [shape=(n,)]
        The drawn points: segment ids, or track ids at track level.
    level : {"segment", "track"}
    kind : {"top tag", "kmeans", "hdbscan", "k-occurrence"}
        The space's highest-scoring tag, a clustering of :mod:`core.cluster`,
        or how often each point is among the others' ``k`` nearest neighbours
        (:func:`core.analyses.store_k_occurrence`): hubs high, anti-hubs 0.
    k, min_cluster_size : int
        The clustering's parameters (see :func:`core.cluster.cluster`), or
        the neighbours counted for the k-occurrence.

    Returns
    -------
    title : str
        The legend's title.
    values : pd.Series [shape=(n,)]
        One label per point in the order of ``ids``; NaN where the space lacks the point.
    description : str
        How the clusters were found, for a caption; empty for a top tag.
    """
    if kind == "top tag":
        tag_ids, scores = read_vectors(store, space, level)
        values = top_tag(tag_ids, scores, store.space(space)["tag_names"])
        title, description = f"top tag ({space})", ""
    elif kind == "k-occurrence":
        found = store_k_occurrence(store, space, k=k, level=level)
        values = pd.Series(found["counts"], index=found["ids"], dtype="float64")
        title, description = f"k-occurrence@{k}", k_occurrence_note(found, space)
    else:
        found = cached_clusters(store, space, level, kind, k=k, min_cluster_size=min_cluster_size)
        values = pd.Series(found["labels"], index=found["ids"]).map(lambda v: NOISE if v < 0 else f"cluster {v}")
        title, description = "cluster", f"Clusters: {found['description']}, model {space}."
    return title, values.reindex(ids).reset_index(drop=True), description


def k_occurrence_note(found: dict, space: str) -> str:
    """A caption for :func:`core.analyses.store_k_occurrence`'s counts: what they are, their skewness, the sample."""
    own = ", own track excluded" if found["level"] == "segment" else ""
    sampled = (f" Counted within a random sample of {found['sampled']:,} of {found['n']:,} {found['level']}s; "
               "the others are not drawn." if found["sampled"] else "")
    anti = sum(1 for c in found["counts"] if c == 0)
    return (f"k-occurrence: how often each {found['level']} is among the others' {found['k']} nearest neighbours in "
            f"{space} (cosine{own}); the mean is {found['k']}. Skewness {found['skewness']:.2f} (the hubness of "
            f"Compare): hubs turn up in everyone's results, {anti:,} anti-hubs are nobody's neighbour.{sampled}")


def hubs(store: Store, found: dict, n: int = 5, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` points most often among the others' neighbours, and ``n`` that are nobody's, to listen to.

    Hubs are what a space pulls every query towards (often silence, noise or
    a loud broadband sound); anti-hubs are what search never returns.  The
    anti-hubs are a seeded random draw among the points counted 0, since
    they tie.

    Parameters
    ----------
    found : dict
        :func:`core.analyses.store_k_occurrence`'s result.

    Returns
    -------
    hubs, anti_hubs : pd.DataFrame
        :func:`points_frame` rows with a ``k_occurrence`` column, hubs most
        frequent first.
    """
    counts = pd.Series(found["counts"], index=found["ids"])
    top = counts.sort_values(ascending=False, kind="stable").head(n)
    zero = counts[counts == 0]
    anti = zero.sample(min(n, len(zero)), random_state=seed) if len(zero) else zero

    def rows(picked: pd.Series) -> pd.DataFrame:
        frame = points_frame(store, picked.index.to_numpy(), found["level"])
        frame["k_occurrence"] = picked.to_numpy()
        return frame

    return rows(top), rows(anti)


def to_level(values: pd.Series, store: Store, level: str) -> pd.Series:
    """Bring a per-segment series (indexed by segment id) to the map's level.

    At track level a number becomes its track's maximum (a search score is
    as good as the track's best segment) and a label its most frequent value.
    """
    if level == "segment":
        return values
    frame = pd.DataFrame({"track_id": store.segment_tracks(values.index.to_numpy()), "v": values.to_numpy()}).dropna()
    grouped = frame.groupby("track_id")["v"]
    if pd.api.types.is_numeric_dtype(frame["v"]):
        return grouped.max()
    return grouped.agg(lambda s: s.value_counts().index[0])


# ---------------------------------------------------------------------- filters and samples


def filter_mask(frame: pd.DataFrame, column: str | None = None, values=None,
                value_range: tuple[float, float] | None = None, name_contains: str = "") -> np.ndarray:
    """Points kept by a metadata filter (a set of values, or a numeric range) and a file-name substring."""
    keep = np.ones(len(frame), dtype=bool)
    if column:
        if value_range is not None:
            col = pd.to_numeric(frame[column], errors="coerce")
            keep &= col.between(*value_range).to_numpy()
        elif values:
            keep &= frame[column].astype("string").fillna("(missing)").isin([str(v) for v in values]).to_numpy()
    if name_contains:
        keep &= frame["name"].str.contains(name_contains, case=False, regex=False, na=False).to_numpy()
    return keep


def stratified_sample(strata: pd.Series | np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Positions of a sample of ``size`` rows, proportional per stratum with at least one from each.

    Rare categories keep a visible share instead of vanishing from the map;
    the same seed gives the same points, so a rerun redraws nothing.

    Returns
    -------
    np.ndarray [shape=(min(size, n),), dtype=int64]
        Sorted row positions.
    """
    labels = pd.Series(np.asarray(strata)).astype("string").fillna("(missing)")
    n = len(labels)
    if n <= size:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    groups = labels.groupby(labels, sort=True).indices
    counts = np.array([len(v) for v in groups.values()])
    quota = np.maximum(1, np.floor(counts * size / n)).astype(int)
    quota = np.minimum(quota, counts)
    spare = size - quota.sum()
    if spare > 0:  # hand the rounding remainder to the largest strata
        for i in np.argsort(-(counts - quota))[:spare]:
            quota[i] += 1 if quota[i] < counts[i] else 0
    elif spare < 0:  # more strata than room: keep one from the largest ones
        for i in np.argsort(counts)[: -spare]:
            quota[i] = 0
    picked = [rng.choice(idx, size=q, replace=False) for idx, q in zip(groups.values(), quota) if q]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def chart_data(frame: pd.DataFrame, keep: np.ndarray, cap: int = DISPLAY_CAP, strata: str | None = None,
               colour: pd.Series | None = None, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """The rows a chart draws and a sentence saying how they relate to all points.

    Only the columns the chart needs travel to the browser; above ``cap``
    points a stratified sample is drawn and the sentence says so.
    """
    n_all, n_kept = len(frame), int(keep.sum())
    kept = frame.loc[keep]
    columns = ["id", "track_id", "idx", *[c for c in frame.columns if c[:1] in "xy" and c[1:].isdigit()],
               "name", "start_s"]
    data = kept[columns].copy()
    data["name"] = pd.Categorical(data["name"])
    data["start_s"] = data["start_s"].astype("float32")
    if colour is not None:
        data["colour"] = colour[keep] if isinstance(colour, pd.Categorical) else np.asarray(colour)[keep]
    note = f"{n_kept:,} of {n_all:,} points after filters" if n_kept < n_all else f"{n_all:,} points"
    if n_kept > cap:
        by = data["colour"] if strata == "colour" and "colour" in data and not _is_numeric(data["colour"]) else None
        pos = stratified_sample(by if by is not None else np.zeros(n_kept), cap, seed=seed)
        data = data.iloc[pos]
        how = "stratified by colour" if by is not None else "random"
        note += f"; drawing a {how} sample of {cap:,} (raise “Points drawn” to see more)"
    return data.reset_index(drop=True), note


def _is_numeric(values) -> bool:
    return not isinstance(getattr(values, "dtype", None), pd.CategoricalDtype) and pd.api.types.is_numeric_dtype(values)


# ---------------------------------------------------------------------- selection


def selected_ids(selection: dict | None, data: pd.DataFrame) -> list[int]:
    """The ids a chart selection covers: clicked points first, then those inside any box.

    Parameters
    ----------
    selection : dict
        Streamlit's ``event.selection``: ``{"pick": [{"id": 3}, …],
        "brush0": {"x0": [lo, hi], "y0": [lo, hi]}, …}``.
    data : pd.DataFrame
        The drawn rows; a box selects only points that are drawn.
    """
    ids: list[int] = []
    for name, value in (selection or {}).items():
        if name == PICK and isinstance(value, list):
            ids.extend(int(v["id"]) for v in value if isinstance(v, dict) and "id" in v)
    for name, value in (selection or {}).items():
        if name.startswith("brush") and isinstance(value, dict) and value:
            inside = np.ones(len(data), dtype=bool)
            for field, bounds in value.items():
                if field not in data or not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
                    inside[:] = False
                    break
                lo, hi = sorted(float(b) for b in bounds)
                inside &= data[field].between(lo, hi).to_numpy()
            ids.extend(int(i) for i in data.loc[inside, "id"])
    return list(dict.fromkeys(ids))


def selection_table(frame: pd.DataFrame, ids: list[int], coordinate_names: dict[str, str] | None = None) -> pd.DataFrame:
    """The selected points in selection order, with coordinates renamed after their views."""
    table = frame.set_index("id").loc[[i for i in ids if i in set(frame["id"])]].reset_index()
    table = table.rename(columns=coordinate_names or {})
    first = ["id", "name", "start_s", "end_s", "path"]
    return table[[*first, *[c for c in table.columns if c not in first]]]


def to_csv_bytes(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode("utf-8")


def to_parquet_bytes(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def space_parquet_bytes(store, space: str, visible: Callable[[str], str] | None = None) -> bytes:
    """A space's embeddings as ``core export`` writes them, for a download button.

    ``visible`` rewrites each path as the person downloading may see it (a
    shared app shows no absolute path of its server).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.exchange import export_parquet

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export.parquet"
        export_parquet(store, space, out)
        if visible is not None:
            table = pq.read_table(out)
            at = table.schema.get_field_index("path")
            paths = pa.array([visible(p) for p in table.column("path").to_pylist()], pa.string())
            pq.write_table(table.set_column(at, "path", paths), out)
        return out.read_bytes()


# ---------------------------------------------------------------------- chart


def colour_scale(values) -> list[str] | str | None:
    """What the chart's colour encoding needs to know: ``"numeric"``, the categories in legend order, or None."""
    if values is None:
        return None
    if _is_numeric(values):
        return "numeric"
    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories] if hasattr(values, "cat") else [str(c) for c in values.categories]
    return sorted(pd.Series(values).astype(str).unique())


def mark_bucket(n_points: int) -> int:
    """The smallest point count drawn with the same marks and renderer as ``n_points``.

    :func:`linked_spec` depends on the number of points only through this,
    so a spec built for the bucket serves every count in it and a changed
    filter need not rebuild the chart.
    """
    return 0 if n_points < 2_000 else 2_000 if n_points < 20_000 else 20_000


def linked_spec(n_points: int, titles: Sequence[str], colour: Sequence[str] | str | None = None,
                colour_title: str | None = None, drag: str = "select", trajectory: bool = False, width: int = 520,
                height: int = 500, density: bool = False) -> dict:
    """A Vega-Lite spec with a view per projection; a selection in any view highlights the same points in all.

    The spec holds no data: every view reads the dataset named
    :data:`DATASET`, to which the page hands :func:`chart_data`'s rows (``id,
    track_id, idx, x0, y0[, x1, y1], name, start_s[, colour]``).  It is built once per layout and
    reused, because Altair validates compound charts on every build (about
    1.5 s here), which a click must not pay.

    Parameters
    ----------
    n_points : int
        Drawn points; sets the mark size and the renderer (see :func:`mark_bucket`).
    titles : sequence of str
        One per view; the number of views is ``len(titles)``.
    colour : "numeric", sequence of str, or None
        From :func:`colour_scale`.
    drag : {"select", "zoom"}
        Whether dragging draws a selection box or pans (the wheel then zooms).
    trajectory : bool
        Join the segments of the clicked track in time order.
    density : bool
        Draw each view's counts of every point (the dataset :data:`DENSITY`,
        :func:`core.density.view_densities`) in grey under the points, when
        the points are a sample: the sample alone makes a crowded region look
        as sparse as the cap allows.  A cell's tooltip gives its count, which
        also replaces a point's tooltip once the pointer leaves that point.
    """
    bucket = mark_bucket(n_points)
    size = {0: 60, 2_000: 20, 20_000: 8}[bucket]
    pick = alt.selection_point(name=PICK, fields=["id"], on="click", clear="dblclick")
    track = alt.selection_point(name=TRACK, fields=["track_id"], on="click", clear="dblclick", empty=False)
    brushes = [alt.selection_interval(name=brush_name(i), encodings=["x", "y"]) if drag == "select"
               else alt.selection_interval(name=f"zoom{i}", bind="scales") for i in range(len(titles))]
    stores = selections(len(titles), drag)
    # Each point's state is computed once per selection change, as 2 (selected), 1 (something else is) or 0, and the
    # four channels below read it: testing the selections in every channel's condition cost each of the 10,000 drawn
    # points per view sixteen interpreted selection tests (Streamlit runs Vega's expressions through an interpreter).
    chosen = " || ".join(f"(length(data('{s}_store')) > 0 && vlSelectionTest('{s}_store', datum))" for s in stores)
    anything = " || ".join(f"length(data('{s}_store')) > 0" for s in stores)
    state = f"({chosen}) ? 2 : (({anything}) ? 1 : 0)"
    on = "datum.highlight == 2"
    # Below the maps the legend never widens the chart past the column (at 1400 px two maps and a legend beside
    # them overflowed); it takes as many columns as fit under the maps.
    total_width = len(titles) * width + 24 * (len(titles) - 1)
    colour_enc = _colour_encoding(colour, colour_title, max(1, total_width // LEGEND_COLUMN_PX))
    views = []
    for i, title in enumerate(titles):
        x = alt.X(f"x{i}:Q", axis=None, scale=alt.Scale(zero=False))
        y = alt.Y(f"y{i}:Q", axis=None, scale=alt.Scale(zero=False))
        tooltip = ["name:N", alt.Tooltip("start_s:Q", format=".1f", title="start (s)"), "id:Q"]
        if colour_enc is not None:
            tooltip.append(alt.Tooltip("colour", title=colour_title, type="quantitative" if colour == "numeric" else "nominal"))
        points = alt.Chart().mark_circle(size=size).encode(
            x=x, y=y, tooltip=tooltip, description=alt.Description("id:N"),
            opacity=alt.OpacityValue(0.75, condition=[{"test": on, "value": 1.0},
                                                      {"test": "datum.highlight == 1", "value": 0.12}]),
            size=alt.SizeValue(size, condition=[{"test": on, "value": max(4 * size, 90)}]),
            stroke=alt.StrokeValue("transparent", condition=[{"test": on, "value": "#111111"}]),
            strokeWidth=alt.StrokeWidthValue(0, condition=[{"test": on, "value": 1.5}]),
            **({"color": colour_enc} if colour_enc is not None else {}),
        ).transform_calculate(highlight=state).add_params(pick, brushes[i], *([track] if trajectory else []))
        layers = [points]
        if density:  # no aria label: the points alone are addressable, as without it
            cells = alt.Chart(alt.NamedData(name=DENSITY)).mark_rect(color="#52606d", aria=False).encode(
                x=alt.X("left:Q", axis=None, scale=alt.Scale(zero=False)), x2="right:Q",
                y=alt.Y("bottom:Q", axis=None, scale=alt.Scale(zero=False)), y2="top:Q",
                opacity=alt.Opacity("count:Q", scale=alt.Scale(type="log", range=[0.15, 0.6]), legend=None),
                tooltip=[alt.Tooltip("count:Q", format=",", title="points in this cell")],
            ).transform_filter(f"datum.view == {i}")
            layers.insert(0, cells)
        if trajectory:
            line = alt.Chart().mark_line(color="#111111", strokeWidth=1.2).encode(
                x=x, y=y, detail="track_id:N", order="idx:Q").transform_filter(track)
            layers.insert(0, line)
        views.append(alt.layer(*layers, data=alt.NamedData(name=DATASET)).properties(width=width, height=height, title=title))
    with warnings.catch_warnings():  # sharing pick/track between the views is the point of linking them
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        chart = alt.hconcat(*views, spacing=24).configure_view(strokeWidth=0).configure_title(fontSize=13, anchor="start")
        spec = chart.properties(autosize={"type": "pad", "contains": "padding"}).to_dict()
    # SVG keeps small maps crisp and their points addressable (aria-label = id); canvas draws large ones fast.
    spec["usermeta"] = {"embedOptions": {"renderer": "svg" if bucket == 0 else "canvas"}}
    return spec


def _colour_encoding(colour, title: str | None, columns: int):
    if colour is None:
        return None
    if colour == "numeric":
        return alt.Color("colour:Q", title=title, scale=alt.Scale(scheme="viridis"),
                         legend=alt.Legend(orient="bottom", direction="horizontal", titleLimit=0))
    return alt.Color("colour:N", title=title, sort=list(colour),
                     scale=alt.Scale(domain=list(colour), range=colour_range(colour)),
                     legend=alt.Legend(orient="bottom", direction="horizontal", columns=min(columns, len(colour)),
                                       symbolLimit=0, labelLimit=LEGEND_COLUMN_PX - 30, titleLimit=0))
