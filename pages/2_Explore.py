"""Explore: a 2-D map of one embedding space; click a point to hear that segment."""

import altair as alt
import pandas as pd
import streamlit as st

import ui
from core.explore import colour_column, map_frame, metadata_columns
from core.reduce import DEFAULT_PARAMS, METHODS, ReduceError, cached_projection

st.set_page_config(page_title="Explore · Audio embedding browser", page_icon="🗺️", layout="wide")
st.title("🗺️ Explore")
store = ui.store()
spaces = store.spaces()
if spaces.empty:
    st.info("Nothing to explore yet: extract a collection first (or load the demo on the home page).")
    st.stop()

METHOD_LABELS = {"pca": "PCA", "std-pca": "STD-PCA", "tsne": "t-SNE", "umap": "UMAP"}
c1, c2, c3, c4 = st.columns([3, 2, 2, 3])
space = c1.selectbox("Model", list(spaces["space"]))
method = c2.selectbox("Reduction", METHODS, format_func=METHOD_LABELS.get)
level = c3.selectbox("Level", ["segment", "track"])
version = ui.store_version(store)
segments = ui.segments_frame(str(store.path), version)
colour = c4.selectbox("Colour by", ["(none)", *metadata_columns(segments)])

params = dict(DEFAULT_PARAMS[method])
if method == "umap":
    with st.expander("UMAP parameters"):
        params["n_neighbors"] = st.slider("Neighbours", 2, 200, 15)
        params["min_dist"] = st.slider("Minimum distance", 0.0, 1.0, 0.1, 0.05)
        params["metric"] = st.selectbox("Metric", ["cosine", "euclidean"])
elif method == "tsne":
    with st.expander("t-SNE parameters"):
        params["perplexity"] = st.slider("Perplexity", 2.0, 100.0, 30.0, 1.0)


@st.cache_data(max_entries=16, show_spinner=False)
def projection(db: str, space: str, method: str, level: str, params_items: tuple, data_version: int):
    return cached_projection(ui.Store(db), space, method, level=level, params=dict(params_items))


data_version = int(spaces.set_index("space").loc[space, "data_version"])
try:
    with st.spinner(f"Computing {METHOD_LABELS[method]} (once; it is cached in the store)…"):
        proj = projection(str(store.path), space, method, level, tuple(sorted(params.items())), data_version)
except ReduceError as exc:
    st.error(str(exc))
    st.stop()


@st.cache_data(max_entries=16, show_spinner=False)
def chart_frame(db_version: tuple, space: str, method: str, level: str, params_items: tuple, colour: str) -> pd.DataFrame:
    frame = map_frame(segments, proj["ids"], proj["xy"], level=level)
    if colour != "(none)":
        frame["colour"] = colour_column(frame[colour])
    return frame


frame = chart_frame(version, space, method, level, tuple(sorted(params.items())), colour)
info = proj["info"]
notes = [f"{len(frame):,} points"]
if "explained_variance" in info:
    notes.append("explained variance " + " + ".join(f"{v:.1%}" for v in info["explained_variance"]))
if info.get("trustworthiness") is not None:
    notes.append(f"trustworthiness@10 {info['trustworthiness']:.3f} (on {info.get('trust_sample', len(frame)):,} points)")
notes.append(f"computed in {proj['seconds']:.1f} s")
st.caption(" · ".join(notes))

pick = alt.selection_point(name="pick", fields=["id"], on="click")
encoding = {
    "x": alt.X("x:Q", axis=None), "y": alt.Y("y:Q", axis=None),
    "tooltip": ["name:N", alt.Tooltip("start_s:Q", format=".1f"), *(["colour:N"] if colour != "(none)" else [])],
    "opacity": alt.condition(pick, alt.value(0.95), alt.value(0.35)),
}
if colour != "(none)":
    numeric = pd.api.types.is_numeric_dtype(frame["colour"])
    encoding["color"] = alt.Color("colour:Q" if numeric else "colour:N", title=colour,
                                  legend=alt.Legend(columns=2 if frame["colour"].nunique() > 12 else 1, symbolLimit=40))
chart = (alt.Chart(frame).mark_circle(size=40 if len(frame) < 5000 else 12).encode(**encoding)
         .add_params(pick).properties(height=560))
event = st.altair_chart(chart, on_select="rerun", selection_mode=["pick"], key="map", width="stretch")

picked = (event.get("selection", {}) if isinstance(event, dict) else event.selection).get("pick") or []
if picked:
    row = frame.set_index("id").loc[picked[0]["id"]]
    st.subheader(row["name"])
    ui.player(row["path"], float(row["start_s"]), float(row["end_s"]))
    st.caption(f"{row['start_s']:.2f}–{row['end_s']:.2f} s of `{row['path']}`")
    meta = {c: row[c] for c in metadata_columns(segments) if c in row.index and pd.notna(row[c])}
    if meta:
        st.dataframe(pd.DataFrame([meta]), hide_index=True)
else:
    st.caption("Click a point to hear that segment.")
