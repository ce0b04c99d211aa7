"""Explore: two linked maps of the embedding spaces. Select in one, see the same segments in the other, listen, export."""

import json
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import ui
from core import analyses as an
from core import axes
from core import clips
from core import density as dn
from core import explore as ex
from core.cluster import ClusterError, default_min_cluster_size
from core.errors import AEBError
from core.preview import CONTEXT_S
from core.wording import count_label
from core.reduce import DEFAULT_PARAMS, METHODS, ReduceError, cached_projection

ui.page("Explore", "🗺️")
st.title("🗺️ Explore")
store, spaces, VERSION = ui.collection_or_stop("Nothing to explore yet: extract a collection first")
CFG = ui.cfg()

DB = str(store.path)
DATA_VERSION = dict(zip(spaces["space"], spaces["data_version"].astype(int)))
METADATA = ui.metadata_names(DB, VERSION)
SPACE_NAMES = list(spaces["space"])
N_PLAYERS = 10
CARRIED_KEY = "explore_selection"  # (level, ids) of the last selection, carried across a switch of level
N_HUBS = 5
AXIS_LABELS = {"reduction": "the reduction", "prompt": "similarity to a prompt",
               "prompt difference": "prompt A − prompt B", "tag": "a tag's score"}

# The map's layout sits in the sidebar, so that the maps start on the first screen.
with st.sidebar:
    st.markdown("**Map layout**")
    single = st.toggle("Single view", help="One map instead of two side by side, for small screens.")
    drag = st.radio("Drag to", ["select", "zoom"], horizontal=True,
                    format_func=lambda v: "select a box" if v == "select" else "pan (wheel zooms)")
    # The default fits the main column of a 1400 px window (two maps of 440 px and their gap); wider screens
    # may take the larger sizes.
    map_width = st.select_slider("Map size", [480, 640, 800, 960] if single else [320, 400, 440, 480, 520],
                                 value=800 if single else 440,
                                 help="Sizes above the default need a window wider than 1400 px.")
    cap = int(st.number_input("Points drawn", 10, 500_000, dn.draw_cap(), 5_000,
                              help="Above this count the map draws a stratified sample and says so."))


def view_controls(i: int, column) -> dict:
    """One view's model, reduction and the reduction's parameters, all on screen."""
    with column:
        default_space = SPACE_NAMES[min(i, len(SPACE_NAMES) - 1)]
        opened = st.session_state.get(ui.OPEN_IN_EXPLORE_KEY)  # a layer clicked in Compare
        if i == 0 and opened in SPACE_NAMES:
            default_space = opened
        default_method = "pca" if i == 0 or len(SPACE_NAMES) > 1 else "std-pca"  # instant; t-SNE/UMAP on request
        c1, c2 = st.columns(2)
        space = c1.selectbox(f"Model {'AB'[i]}", SPACE_NAMES, index=SPACE_NAMES.index(default_space), key=f"space{i}")
        method = c2.selectbox(f"Reduction {'AB'[i]}", METHODS, index=METHODS.index(default_method),
                              format_func=ui.METHOD_LABELS.get, key=f"method{i}")
        params = dict(DEFAULT_PARAMS[method])
        if method == "umap":
            p1, p2, p3 = st.columns(3)
            params["n_neighbors"] = p1.slider("Neighbours", 2, 200, 15, key=f"nn{i}")
            params["min_dist"] = p2.slider("Min. distance", 0.0, 1.0, 0.1, 0.05, key=f"md{i}")
            params["metric"] = p3.selectbox("Metric", ["cosine", "euclidean"], key=f"metric{i}")
        elif method == "tsne":
            params["perplexity"] = st.slider("Perplexity", 2.0, 100.0, 30.0, 1.0, key=f"perp{i}")
        chosen_axes = axis_controls(i, space)
    return {"space": space, "method": method, "params": params, "axes": chosen_axes}


def axis_controls(i: int, space: str) -> tuple:
    """Either axis as a prompt's cosine or a tag's score, where the space allows it; None keeps the reduction's."""
    text_model, tags_in = axes.text_model(space), axes.tag_space(space, spaces)
    kinds = ["reduction", *(["prompt", "prompt difference"] if text_model else []), *(["tag"] if tags_in else [])]
    if len(kinds) == 1:
        return (None, None)
    chosen = []
    for a, (column, name) in enumerate(zip(st.columns(2), ("Horizontal", "Vertical"))):
        with column:
            kind = st.selectbox(f"{name} axis {'AB'[i]}", kinds, key=f"axis{i}{a}", format_func=AXIS_LABELS.get)
            if kind == "tag":
                names = json.loads(spaces.set_index("space").loc[tags_in, "tag_names"])
                chosen.append({"kind": "tag", "space": tags_in, "tag": st.selectbox("Tag", names, key=f"tag{i}{a}")})
            elif kind != "reduction":
                text = st.text_input("Prompt", key=f"prompt{i}{a}", placeholder="calm")
                minus = (st.text_input("minus the prompt", key=f"minus{i}{a}", placeholder="aggressive")
                         if kind == "prompt difference" else None)
                ready = text.strip() and (kind == "prompt" or (minus or "").strip())
                chosen.append({"kind": kind, "model": text_model, "text": text.strip(),
                               "minus": minus.strip() if minus else None} if ready else None)
            else:
                chosen.append(None)
    return tuple(chosen)


def view_key(view: dict, with_axes: bool = True) -> tuple:
    """What a view's map depends on: the store, the space and its data version, the reduction, its parameters, the level,
    and the axes that replace the reduction's."""
    key = (DB, view["space"], view["method"], level, tuple(sorted(view["params"].items())), DATA_VERSION[view["space"]])
    return key + (json.dumps(view["axes"], sort_keys=True),) if with_axes and any(view["axes"]) else key


def view_title(i: int, view: dict) -> str:
    reduction = ui.METHOD_LABELS[view["method"]]
    if not any(view["axes"]):
        return f"{'AB'[i]}: {view['space']} · {reduction}"
    x, y = (axes.axis_label(a) if a else f"{reduction} {n}" for a, n in zip(view["axes"], (1, 2)))
    return f"{'AB'[i]}: {view['space']} · x: {x} · y: {y}"


@st.cache_resource(max_entries=16, show_spinner=False)
def tag_values(db: str, version: tuple, space: str, tag: str, level: str) -> pd.Series:
    return axes.tag_scores(ui.opened_store(db), space, tag, level)


def axis_values(view: dict, axis: dict) -> pd.Series:
    """An axis's value per point, indexed by id; prompts are embedded once per text (``ui.text_embedding``)."""
    if axis["kind"] == "tag":
        return tag_values(DB, VERSION, axis["space"], axis["tag"], level)
    loaded = ui.space(DB, view["space"], level, VERSION)
    minus = ui.text_embedding(axis["model"], axis["minus"]) if axis["minus"] else None
    return pd.Series(axes.prompt_scores(loaded.vectors, ui.text_embedding(axis["model"], axis["text"]), minus),
                     index=loaded.ids)


@st.cache_resource(max_entries=16, show_spinner=False)
def _projections() -> dict:
    """Projections already read this server session; the store keeps them across sessions."""
    return {}


def projection(view: dict, column) -> dict:
    """A view's map: read from the store once per server, or (shared mode) computed within a visitor's budget for this session only."""
    key = view_key(view, with_axes=False)
    visitor = st.session_state.setdefault(ui.VISITOR_MAPS_KEY, {})
    if key in visitor:
        return visitor[key]
    memo = _projections()
    if key not in memo:
        label = f"{ui.METHOD_LABELS[view['method']]} of {view['space']}"
        box = column.empty()
        started = {}

        def announce(n: int) -> None:
            started["status"] = box.status(f"Computing {label} for {n:,} points, once: it is stored for next time…")
            started["progress"] = ui.step_progress(started["status"])

        try:
            found = cached_projection(store, view["space"], view["method"], level=level, params=view["params"],
                                      on_compute=announce, progress=lambda *step: started["progress"](*step),
                                      max_points=CFG.visitor_max_points if CFG.shared_mode else None)
        except ReduceError as exc:
            box.error(str(exc))
            st.stop()
        kept = found["cached"] or not CFG.shared_mode
        (memo if kept else visitor)[key] = found
        if "status" in started:
            where = "stored" if kept else "kept for this visit only"
            started["status"].update(label=f"{label}: computed in {found['seconds']:.1f} s and {where}",
                                     state="complete", expanded=False)
        return found
    return memo[key]


def placed(view: dict, column) -> dict:
    """The view's points: the reduction's map, with either axis replaced by a prompt's or a tag's values."""
    if not any(view["axes"]):
        return projection(view, column)
    key, memo = view_key(view), _projections()
    if key not in memo:
        both = all(view["axes"])
        base = None if both else projection(view, column)
        try:
            with column.spinner("Scoring every point against the axes (prompts are embedded once)…"):
                values = [None if a is None else axis_values(view, a) for a in view["axes"]]
        except AEBError as exc:  # no text model here, or a tag gone: the reduction stays
            column.warning(f"{exc} The view keeps its reduction's axes.")
            view["axes"] = (None, None)
            return projection(view, column)
        ids = ui.space(DB, view["space"], level, VERSION).ids if both else base["ids"]
        ids, xy = axes.replace_axes(ids, None if both else base["xy"], values)
        memo[key] = {"ids": ids, "xy": xy, "reduction": base}
    return memo[key]


def placement_note(proj: dict) -> str:
    if "reduction" not in proj:
        return ex.projection_note(proj)
    note = "axes: cosine to each prompt in the embedding space, or a tag's score"
    return note + (" · the other axis: " + ex.projection_note(proj["reduction"]) if proj["reduction"] else "")


view_columns = st.columns(1 if single else 2)
views = [view_controls(i, col) for i, col in enumerate(view_columns)]


@st.cache_resource(max_entries=4, show_spinner=False)
def linked(db: str, version: tuple, level: str, keys: tuple, _projs: list) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Every point with every view's coordinates, and each view's coordinates (n, 2) as one array for the zoom
    (copying them out of the table cost every rerun 30 ms at a million points); read-only, shared by the reruns
    that clicks cause."""
    frame = ex.linked_frame(ui.opened_store(db), [(p["ids"], p["xy"]) for p in _projs], level=level)
    return frame, [frame[[f"x{i}", f"y{i}"]].to_numpy() for i in range(len(keys))]



# ---------------------------------------------------------------------------- colour and filter
extra = st.session_state.get(ui.EXTRA_COLOURS_KEY) or {}
HUBS = "k-occurrence · hubs"
colour_options = ["(none)", *METADATA, *[f"top tag · {s}" for s in ex.tagged_spaces(spaces)],
                  "clusters · k-means", "clusters · HDBSCAN", HUBS, *[f"from Search · {name}" for name in extra]]
c0, c1, c2, c3 = st.columns([3, 3, 2, 2])
level = c0.radio("Points", list(ui.LEVEL_LABELS), horizontal=True, format_func=ui.LEVEL_LABELS.get)
colour_choice = c1.selectbox("Colour by", colour_options,
                             help="Metadata, a tagger's top tag, clusters found in the embedding space, or scores sent by the Search page.")
trajectory = c2.toggle("Trajectory", disabled=level == "track",
                       help="Join the clicked track's segments in time order, in every view.")
name_filter = c3.text_input("File name contains", "")

projections = [placed(v, col) for v, col in zip(views, view_columns)]
for col, proj in zip(view_columns, projections):
    col.caption(f"{len(proj['ids']):,} points · " + placement_note(proj))
keys = tuple(view_key(v) for v in views)
frame, coordinates = linked(DB, VERSION, level, keys, projections)
if len(views) == 2 and views[0]["space"] != views[1]["space"]:
    difference = ex.views_difference(frame, level)
    if difference:
        st.caption(difference)

with st.expander("Filter by metadata", expanded=False):
    f1, f2 = st.columns([1, 3])
    filter_column = f1.selectbox("Column", ["(none)", *METADATA])
    filter_values, filter_range = None, None
    if filter_column != "(none)":
        values = frame[filter_column]
        if pd.api.types.is_numeric_dtype(values) and values.notna().any():
            lo, hi = float(values.min()), float(values.max())
            filter_range = f2.slider("Range", lo, hi, (lo, hi)) if hi > lo else None
        else:
            options = sorted(values.astype("string").fillna("(missing)").unique())
            filter_values = f2.multiselect("Values", options, placeholder="all values")


@st.cache_resource(max_entries=8, show_spinner=False)
def derived_colour(db: str, version: tuple, level: str, keys: tuple, kind: str, space: str, k: int,
                   min_size: int | None) -> tuple[str, pd.Series, str]:
    """:func:`core.explore.derived_colour` for the drawn points, kept for the reruns that clicks cause."""
    ids = linked(db, version, level, keys, projections)[0]["id"].to_numpy()
    return ex.derived_colour(ui.opened_store(db), space=space, ids=ids, level=level, kind=kind, k=k,
                             min_cluster_size=min_size)


colour_title, colour_values, colour_key = None, None, (colour_choice,)
if colour_choice in METADATA:
    colour_title, colour_values = colour_choice, frame[colour_choice]
elif colour_choice.startswith("top tag · "):
    space = colour_choice.removeprefix("top tag · ")
    colour_title, colour_values, _ = derived_colour(DB, VERSION, level, keys, "top tag", space, 0, None)
elif colour_choice.startswith("clusters · "):
    k1, k2 = st.columns([2, 3])
    cluster_space = k1.selectbox("Cluster in the space of", SPACE_NAMES, index=SPACE_NAMES.index(views[0]["space"]))
    n_space = int(spaces.set_index("space").loc[cluster_space, "n"])
    method = "kmeans" if colour_choice.endswith("k-means") else "hdbscan"
    if method == "kmeans":
        k, min_size = k2.slider("Clusters (k)", 2, 40, 8), None
    else:
        k, min_size = 0, k2.slider("Minimum cluster size", 2, 500, default_min_cluster_size(n_space))
    try:
        with st.spinner("Clustering in the embedding space (once; it is stored)…"):
            colour_title, colour_values, description = derived_colour(DB, VERSION, level, keys, method,
                                                                      cluster_space, k, min_size)
        st.caption(description)
        colour_key = (colour_choice, cluster_space, k, min_size)
    except ClusterError as exc:
        st.warning(f"{exc}")
elif colour_choice == HUBS:
    h1, h2 = st.columns([2, 3])
    hub_space = h1.selectbox("Neighbours in the space of", SPACE_NAMES, index=SPACE_NAMES.index(views[0]["space"]))
    n_hub_space = int(spaces.set_index("space").loc[hub_space, "n"])
    hub_k = h2.slider("k (neighbours counted)", 1, max(2, min(50, n_hub_space - 1)), min(10, max(1, n_hub_space - 1)))
    try:
        with st.spinner("Counting every point's appearances among the others' neighbours (once; it is stored)…"):
            colour_title, colour_values, description = derived_colour(DB, VERSION, level, keys, "k-occurrence",
                                                                      hub_space, hub_k, None)
        st.caption(description)
        colour_key = (colour_choice, hub_space, hub_k)
    except AEBError as exc:
        st.warning(str(exc))
        hub_space = None
elif colour_choice.startswith("from Search · "):
    name = colour_choice.removeprefix("from Search · ")
    if callable(extra[name]):  # search scores: scored once, when first asked for, then kept
        extra[name] = extra[name]()
    values = ex.to_level(pd.Series(extra[name]), store, level)
    colour_title, colour_values = name, values.reindex(frame["id"]).reset_index(drop=True)
    colour_key = (colour_choice, int(pd.util.hash_pandas_object(values).sum()))

keep = ex.filter_mask(frame, None if filter_column == "(none)" else filter_column, filter_values, filter_range, name_filter)
coloured = None
if colour_values is not None and not pd.api.types.is_numeric_dtype(colour_values):
    coloured = st.multiselect(
        "Values with a colour", ex.colour_values(colour_values, keep), key=f"coloured-{colour_key}",
        max_selections=ex.MAX_CATEGORIES, placeholder=f"the {ex.MAX_CATEGORIES} most frequent among the points shown",
        help=f"Up to {ex.MAX_CATEGORIES} values get a colour; the others are drawn grey as “other”.") or None

# ---------------------------------------------------------------------------- zoom: density overview of view A
@st.cache_resource(max_entries=8, show_spinner=False)
def overview_bins(keys: tuple, version: tuple, colour_key: tuple, filter_key: tuple, zoomed: tuple, _xy, _keep, _region,
                  _colour) -> pd.DataFrame:
    """Every point of the region binned, once per (views, colour, filter, zoom region): a click or a new visitor
    reruns the page but reuses them (0.1-0.3 s at a million points)."""
    classes = ex.colour_column(_colour[_keep]) if _colour is not None else None
    return dn.bin_points(_xy[_keep], _region, classes=None if classes is None else classes.to_numpy())


def zoom_in(stack: dn.ZoomStack, chart_key: str) -> None:
    """The box drawn on the overview or on a map becomes the region, before the button's rerun: one rerun per zoom,
    not two."""
    box = dn.Box.dragged(st.session_state[chart_key]["selection"])
    if box is not None:
        stack.push(box)


filter_key = (filter_column, tuple(filter_values or ()), filter_range, name_filter)
zoom = st.session_state.setdefault("explore-zoom", {}).setdefault(keys, dn.ZoomStack())
xy_a = coordinates[0]
if zoom.boxes:
    keep &= zoom.mask(*coordinates)
    crumbs = ["whole map", *[f"zoom {i + 1}" + (" (B)" if box.view else "") for i, box in enumerate(zoom.boxes)]]
    z1, z2, z3 = st.columns([1, 1, 4])
    z1.button("⬅ Back", key="zoom-back", on_click=zoom.back)
    z2.button("Whole map", key="zoom-out", on_click=zoom.to_level, args=(0,), disabled=len(zoom.boxes) < 2)
    z3.caption(" › ".join(crumbs) + f" — {int(keep.sum()):,} points in this region")
# The overview bins map A: a box dragged on B has no extent there, so the region's points set it.
extent = dn.Box.around(xy_a[keep]) if keep.any() else None
on_a = zoom.current if zoom.current is not None and zoom.current.view == 0 else None
region = on_a or extent if extent is not None else None
if region is not None and keep.sum() > cap:
    if not extent.splittable():  # the points, not the dragged box: a heap inside it stays a heap
        st.subheader(f"{int(keep.sum()):,} points on one spot")
        page_rows = frame[keep].reset_index(drop=True)
        page = int(st.number_input("Page", 1, max(1, -(-len(page_rows) // N_PLAYERS)), 1, key="zoom-page"))
        for _, row in page_rows.iloc[(page - 1) * N_PLAYERS:page * N_PLAYERS].iterrows():
            r1, r2 = st.columns([2, 3])
            r1.write(ui.span_label(f"**{row['name']}**", row["start_s"], row["end_s"]))
            with r2:
                ui.player(row, label=row["name"])
        st.stop()
    bins = overview_bins(keys, VERSION, colour_key, filter_key, tuple(zoom.boxes), xy_a, keep, region, colour_values)
    colour = (alt.Color("majority:N", title=colour_title) if colour_values is not None
              else alt.Color("count:Q", scale=alt.Scale(type="log")))
    box = alt.selection_interval(name="zoom", encodings=["x", "y"])
    overview = (alt.Chart(bins).mark_rect().encode(x=alt.X("x0:Q", title="x (A)"), x2="x1", y=alt.Y("y0:Q", title="y (A)"),
                                                   y2="y1", color=colour, tooltip=["count"]).add_params(box))
    st.caption(f"{int(keep.sum()):,} points, more than the {cap:,} drawn: every point is counted below; "
               "drag a box here and press “Zoom in”, or on either map and press “Zoom to the box”, to draw each "
               "point of a region.")
    chart_key = f"zoom-overview-{len(zoom.boxes)}"
    event = st.altair_chart(overview, on_select="rerun", key=chart_key, width="stretch")
    picked = (event or {}).get("selection", {}).get("zoom") or {}
    st.button("Zoom in", key="zoom-in", disabled=not picked.get("x0"), on_click=zoom_in, args=(zoom, chart_key))


@st.cache_resource(max_entries=8, show_spinner=False)
def drawn(keys: tuple, version: tuple, colour_key: tuple, filter_key: tuple, zoomed: tuple, coloured: tuple | None,
          cap: int, _frame, _keep, _colour):
    """The chart's rows, and every point's counts under them when they are a sample, built once per (views,
    colour, filter, zoom region, cap): a click reruns the page but reuses them."""
    colour = ex.colour_column(_colour, _keep, chosen=coloured) if _colour is not None else None
    data, note = ex.chart_data(_frame, _keep, cap=cap, strata="colour", colour=colour)
    density = dn.view_densities(_frame, _keep, len(keys)) if int(_keep.sum()) > len(data) else None
    return data, note, density


data, note, density = drawn(keys, VERSION, colour_key, filter_key, tuple(zoom.boxes),
                   None if coloured is None else tuple(coloured), cap, frame, keep, colour_values)
if data.empty:
    st.warning(f"No point passes the filters ({note}).")
    st.stop()

st.caption(f"{note}. Click a point to hear it, shift-click to add, drag a box to select many; double-click clears.")
map_key = f"map-{len(views)}-{drag}-{level}-{len(zoom.boxes)}"  # a zoom starts its maps with no box left over
chosen = ui.linked_maps(data, [view_title(i, v) for i, v in enumerate(views)], key=map_key,
                        colour=ex.colour_scale(data["colour"]) if "colour" in data else None,
                        colour_title=colour_title, drag=drag, trajectory=trajectory and level == "segment", width=map_width,
                        density=density)
if density is not None and drag == "select":
    st.button("Zoom to the box", key="zoom-map", on_click=zoom_in, args=(zoom, map_key),
              disabled=dn.Box.dragged(ui.selection_of(st.session_state.get(map_key))) is None,
              help="Narrow both maps to the points inside the box dragged on either map, until each is drawn.")
# Each level has its own chart, so ids of one level are never read as the other's; a selection follows a switch.
carried = st.session_state.get(CARRIED_KEY)
if not chosen and carried and carried[0] != level:
    chosen = ex.carry_selection(pd.DataFrame(ui.row_labels(DB, VERSION).segments), carried[1], carried[0], level)
st.session_state[CARRIED_KEY] = (level, chosen)

# ---------------------------------------------------------------------------- listening
coordinates = {f"{a}{i}": f"{a}_{'AB'[i]}_{v['space']}_{v['method']}" for i, v in enumerate(views) for a in "xy"}
table = ex.selection_table(frame, chosen, coordinates)
label_column = colour_choice if colour_choice in METADATA else None  # shown beside each item
if table.empty:
    st.caption("Nothing selected.")
else:
    first = table.iloc[0]
    st.subheader(f"▶ {first['name']}")
    p1, p2 = st.columns([3, 1])
    context = p2.toggle(f"Player includes ±{CONTEXT_S:g} s", disabled=level == "track",
                        help="Hear the segment with the context drawn around it.")
    with p1:
        ui.player(first, label=first["name"], context_s=CONTEXT_S if context and level == "segment" else 0.0)
        st.caption(f"{first['start_s']:.2f}–{first['end_s']:.2f} s of `{CFG.visible(first['path'])}`"
                   + (f"; outlined in red inside ±{CONTEXT_S:g} s of context" if level == "segment" else ""))
        if level == "segment":
            ui.look(first, width=640)
    if p2.button("Play the whole track from here", key=f"whole-{first['id']}"):
        with p1:
            ui.player(first, to_end=True, label=first["name"])
    if level == "segment":
        st.session_state[ui.PICKED_KEY] = int(first["id"])
        if p2.button("🔎 More like this", key=f"like-{first['id']}"):
            ui.more_like_this(int(first["id"]))
    meta = {c: first[c] for c in METADATA if c in first.index and pd.notna(first[c])}
    if meta:
        st.dataframe(pd.DataFrame([meta]), hide_index=True)

    if len(table) > 1:
        n_tracks = table["path"].nunique()
        st.subheader(f"Selection: {count_label(len(table), level)} from {count_label(n_tracks, 'track')}")
        shown = table.head(N_PLAYERS)
        if len(table) > N_PLAYERS:
            st.caption(f"Players for the first {N_PLAYERS} of {len(table):,} selected; the table below lists all {len(table):,}.")
        for _, row in shown.iterrows():
            r1, r2, r3 = st.columns([2, 2, 2])
            r1.write(ui.labelled(f"**{row['name']}**", row, label_column))
            with r2:
                ui.player(row, label=row["name"])
            if level == "segment":
                with r3:
                    ui.look(row, compact=True, width=260)
        st.dataframe(ui.visible_paths(table), hide_index=True, width="stretch")

# ---------------------------------------------------------------------------- hubs
if colour_choice == HUBS and hub_space is not None:
    found = an.store_k_occurrence(store, hub_space, k=hub_k, level=level)
    top, anti = ex.hubs(store, found, n=N_HUBS)
    st.subheader(f"Hubs and anti-hubs of {hub_space}")
    st.caption(f"The {N_HUBS} {level}s most often among the others' {hub_k} nearest neighbours, and {len(anti)} drawn "
               "at random among those that are nobody's neighbour: listen for what the space over- and under-serves.")
    for column, rows, heading in zip(st.columns(2), (top, anti), ("Hubs", "Anti-hubs")):
        with column:
            st.markdown(f"**{heading}**")
            for _, row in rows.iterrows():
                st.write(f"{ui.span_label(row['name'], row['start_s'], row['end_s'])} · in "
                         f"{int(row['k_occurrence'])} neighbour lists")
                ui.player(row, label=row["name"])
            if rows.empty:
                st.caption("None: every point is someone's neighbour.")

# ---------------------------------------------------------------------------- export
st.subheader("Export")
st.caption("Clips, playlists and lists play or mark exactly the selected segments; the CSV and Parquet hold the "
           "selection's rows with their coordinates and metadata.")
stem, none = "selection", table.empty
shown = ui.visible_paths(table)  # what leaves the app names files as a visitor may see them; clips read the real ones
visible = CFG.visible if CFG.shared_mode else None
e = st.columns(6)
e[0].download_button("Clips (ZIP)", lambda: clips.clips_zip(table, resolve=ui.cfg().check_readable), f"{stem}.zip",
                     "application/zip", disabled=none, on_click="ignore", key="export-zip",
                     help="One WAV per selected segment, cut exactly, with segments.csv of their metadata.")
e[1].download_button("Playlist (M3U8)", clips.m3u8(shown) if not none else "", f"{stem}.m3u8", "audio/x-mpegurl",
                     disabled=none, on_click="ignore", help="Each entry plays only its segment in VLC (start and stop options).")
e[2].download_button("mpv EDL", clips.mpv_edl(shown) if not none else b"", f"{stem}.edl", "text/plain", disabled=none,
                     on_click="ignore", help="`mpv selection.edl` plays the segments one after the other.")
e[3].download_button("Segments (CSV)", ex.to_csv_bytes(shown) if not none else b"", f"{stem}.csv", "text/csv",
                     disabled=none, on_click="ignore", help="`python -m core export --clips DIR --ids` takes this file.")
e[4].download_button("Segments (Parquet)", (lambda: ex.to_parquet_bytes(shown)), f"{stem}.parquet",
                     "application/octet-stream", disabled=none, on_click="ignore")
export_space = e[5].selectbox("Embeddings of", SPACE_NAMES, index=SPACE_NAMES.index(views[0]["space"]),
                              label_visibility="collapsed")
e[5].download_button(f"Embeddings of {export_space} (Parquet)", lambda: ex.space_parquet_bytes(ui.Store(DB), export_space, visible),
                     f"{export_space.replace('/', '_')}.parquet", "application/octet-stream", on_click="ignore",
                     help="All vectors of the model with segments and metadata, as `python -m core export` writes them.")
if level == "segment" and not none:
    t1, t2, t3 = st.columns([3, 1, 1])
    tracks = list(dict.fromkeys(table["path"]))
    track = t1.selectbox("Labels of one track's selected segments", tracks, format_func=lambda p: p.rsplit("/", 1)[-1])
    one = table[table["path"] == track]
    track_stem = Path(track).stem
    t2.download_button("Audacity labels", clips.audacity_labels(one, label_column), f"{track_stem}.labels.txt",
                       "text/plain", on_click="ignore", help="File › Import › Labels… in Audacity, with the track open.")
    t3.download_button("REAPER regions", clips.reaper_regions(one, label_column), f"{track_stem}.regions.csv",
                       "text/csv", on_click="ignore", help="Import in REAPER's Region/Marker Manager.")
