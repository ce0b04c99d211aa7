"""Home: what the store holds, and the demo collection for a first start (``streamlit_app.py`` lists the pages)."""

import streamlit as st

import ui
from core.demo import load_demo

ui.page("", "🎧")
st.title("🎧 Audio embedding browser")
st.write(
    "Cut a collection of sounds or music into segments, embed every segment with several pretrained models, "
    "and explore, compare and search those spaces. Start on **Extract**, then open **Explore**, **Compare** or **Search**."
)

store = ui.store()
info = store.info()

if info["tracks"] == 0 and store.read_only:
    st.info("This published collection is empty.")
elif info["tracks"] == 0:
    st.info("The store is empty. Load the demo collection (144 labelled synthetic sounds in 8 families, made offline), "
            "or import your own folder on the Extract page.")
    if st.button("Load the demo collection", type="primary"):
        with st.status("Building and embedding the demo collection…", expanded=True) as status:
            bar = st.progress(0.0)
            report = load_demo(store.path, progress=lambda d, n, p: bar.progress(d / n, text=f"{d}/{n} files"))
            status.update(label=f"Demo loaded: {report.stored} clips in {report.seconds:.0f} s", state="complete")
        st.rerun()
else:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Tracks", info["tracks"])
    c2.metric("Segments", info["segments"])
    c3.metric("Failed files", info["failures"])
    c4.metric("Missing files", info["missing_files"])
    grid = info["grid"]
    st.caption(f"Segment grid: {grid['window_s']:g} s windows, {grid['hop_s']:g} s hop · database `{store.path.name}`")
    spaces = store.spaces()
    st.dataframe(
        spaces[["space", "dim", "n", "adapter_version", "source", "created_at"]].rename(columns={"n": "vectors"}),
        hide_index=True, width="stretch",
    )

st.page_link("pages/1_Extract.py", label="Extract: import audio and run models", icon="📥")
st.page_link("pages/2_Explore.py", label="Explore: maps of an embedding space", icon="🗺️")
st.page_link("pages/3_Compare.py", label="Compare: which model hears the collection best", icon="⚖️")
st.page_link("pages/4_Search.py", label="Search: text, query by example, zero-shot labels", icon="🔎")
