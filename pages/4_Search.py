"""Search: CLAP text queries, query by example for every model, tag filters and zero-shot labels."""

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

import ui
from core import audio
from core.errors import BadInput
from core.models.base import ModelError, embeds_text, get_entry, split_key
from core.search import (SearchError, cosine_scores, embed_clip, exclude_below, precision_at_k, search_store,
                         zero_shot)

ui.page("Search", "🔎")
st.title("🔎 Search")
SCORE_COLOUR = "search score"  # every query's score offered to Explore under one name: the latest replaces the last
store, spaces, version = ui.collection_or_stop("Nothing to search yet: extract a collection first")

c1, c2, c3, c4, c5 = st.columns([3, 1, 2, 2, 2])
key = c1.selectbox("Model", list(spaces["space"]), key="search_space")
k = c2.number_input("Results", 1, 200, 10)
level = c3.radio("Rank", ["segment", "track"], horizontal=True,
                 help="Tracks are ranked by their best segment: a track that holds the moment you look for once "
                      "ranks high however long it is, and the result plays exactly that moment.")
exclude_own = c4.checkbox("Exclude the query's own track", value=True)
label_column = c5.selectbox("Label column", ["(none)", *ui.metadata_names(str(store.path), version)],
                            help="Shown beside each result; a query from the collection also gets its precision@k: "
                                 "the share of results with its label.")
label_column = None if label_column == "(none)" else label_column
space = ui.space(str(store.path), key, "segment", version)
model_key, _ = split_key(key)
try:
    entry = get_entry(model_key)
except ModelError:
    entry = None  # imported vectors: no model to embed new queries
text_capable = embeds_text(key)


def score_series(searched, query: np.ndarray) -> pd.Series:
    return pd.Series(cosine_scores(searched.vectors, query), index=searched.ids)


def show(results: list[dict], query_label=None) -> None:
    if not results:
        st.warning("No result passed the filters.")
        return
    precision = precision_at_k(results, label_column, query_label) if label_column else None
    if precision is not None:
        st.markdown(f"**Precision@{len(results)}: {precision:.2f}**: {round(precision * len(results))} of "
                    f"{len(results)} results share the query's {label_column} (*{query_label}*).")
    for r in results:
        with st.container(border=True):
            a, b, c = st.columns([2, 2, 2])
            name = f"**{Path(r['path']).name}**"
            a.markdown(f"{ui.labelled(name, {**r['metadata'], **r}, label_column)} · score **{r['score']:.3f}**")
            if r["metadata"]:
                a.caption(", ".join(f"{col}: {v}" for col, v in r["metadata"].items() if col != label_column))
            with b:
                ui.player(r)
            with c:
                ui.look(r, compact=True, width=260)


def run_query(query: np.ndarray, label: str, exclude_track=None, query_label=None) -> None:
    try:
        below = None if tag is None else exclude_below(space.ids, tag_scores.index.to_numpy(), tag_scores.to_numpy(), min_score)
        found = search_store(store, space, query, k=int(k), level=level, exclude_track=exclude_track, exclude=below,
                             sketch=ui.sketch(str(store.path), key, version),
                             index=ui.vector_index(str(store.path), key, version),
                             labels=ui.row_labels(str(store.path), version))
    except SearchError as exc:
        st.error(str(exc))
        return
    # Scored for every segment only if Explore is asked to colour by it; the latest query replaces the one before.
    ui.offer_colour(SCORE_COLOUR, f"search score · {label}", functools.partial(score_series, space, query))
    st.caption("Explore can colour every point by this query's score (“search score” in its colour menu).")
    show(found, query_label)


# ---------------------------------------------------------------- tag filter (models with tag scores)
tag, tag_scores, min_score = None, None, 0.0
tag_spaces = [s for s, t in zip(spaces["space"], spaces["tag_names"]) if isinstance(t, str) and split_key(s)[0] == model_key]
if tag_spaces:
    tags_space = ui.space(str(store.path), tag_spaces[0], "segment", version)
    with st.expander("Filter by tag"):
        tag = st.selectbox("Tag", ["(no filter)", *tags_space.tag_names])
        min_score = st.slider("Minimum tag score", 0.0, 1.0, 0.3, 0.05)
        if tag == "(no filter)":
            tag = None
        else:
            _, raw = store.vectors(tag_spaces[0])
            tag_scores = pd.Series(raw[:, tags_space.tag_names.index(tag)], index=tags_space.ids)

picked = ui.picked_segment()
tabs = st.tabs(["Text", "More like this", "Upload a clip", "Zero-shot labels"],
               default="More like this" if picked is not None else None, key="search-tabs")

with tabs[0]:
    if not text_capable:
        st.info(f"Text search needs a text–audio model such as CLAP; {key} embeds audio only. " + ui.clap_note(spaces))
    else:
        text = st.text_input("Describe the sound", placeholder="rain on a window, solo trumpet, a dog barking…")
        if text:
            try:
                query = ui.text_embedding(model_key, text)
            except ModelError as exc:
                st.error(str(exc))
            else:
                run_query(query, f"“{text}”")

with tabs[1]:
    sid = ui.segment_picker(str(store.path), version, picked, key="like", among=space.ids)
    from_explore = sid is not None and sid == picked and ui.SEGMENT_PARAM in st.query_params
    if sid is not None and (st.button("Find similar segments", type="primary") or from_explore):
        pos = int(np.searchsorted(space.ids, sid))  # the picker lists this space's segments only
        query_row = ui.row_labels(str(store.path), version).rows(np.array([sid])).iloc[0]
        name = Path(query_row["path"]).name
        q1, q2 = st.columns([2, 4])
        with q1:
            st.markdown(f"Query: {ui.labelled(name, query_row, label_column)}")
            ui.player(query_row)
        with q2:
            ui.look(query_row, width=560)
        run_query(space.vectors[pos], f"like {ui.span_label(name, query_row['start_s'], query_row['end_s'])}",
                  exclude_track=int(space.track_ids[pos]) if exclude_own else None,
                  query_label=query_row.get(label_column) if label_column else None)

with tabs[2]:
    if entry is None:
        st.info(f"{key} holds imported vectors: there is no model here to embed a new clip with.")
    else:
        up = st.file_uploader("A clip (embedded on the fly with the same model)", type=None)
        if up is not None:
            try:
                saved = ui.save_query_clip(up)
                duration = audio.info(saved, max_samples=ui.cfg().query_budget).duration_s
            except audio.OverBudget:  # its limit is the query clips' own, not the collection's AEB_MAX_SAMPLES
                budget = ui.cfg().query_budget
                st.error(f"{up.name} is too long for a query clip here: at most {budget:,} sample values "
                         f"({budget / 96_000:,.0f} s of 48 kHz stereo). Upload a shorter excerpt.")
            except (BadInput, audio.AudioError) as exc:  # too large, or not audio: one line naming the file
                st.error(f"{up.name}: {exc}" if up.name not in str(exc) else str(exc))
            else:
                region = (0.0, duration)
                if duration > 1.0:
                    region = st.slider("Region of the clip used as the query (s)", 0.0, round(duration, 1),
                                       (0.0, round(duration, 1)), 0.1)
                ui.player({"path": str(saved), "start_s": region[0], "end_s": region[1]}, label=up.name)
                st.caption("The query is the mean of the region's segments on the store's grid, so a stored file "
                           "uploaded again scores a little below 1 against its own segments (a lossy file, MP3 or "
                           "Ogg, may also decode to slightly different samples).")
                try:
                    query = embed_clip(ui.adapter(model_key), saved, *store.grid(), space=key,
                                       max_samples=ui.cfg().query_budget, start_s=region[0], end_s=region[1])
                except Exception as exc:  # decoding or model errors get one visible line
                    st.error(f"{up.name}: {exc}")
                else:
                    run_query(query, f"like {up.name} {region[0]:.1f}–{region[1]:.1f} s")

with tabs[3]:
    if not text_capable:
        st.info("Zero-shot labels need a text–audio model such as CLAP. " + ui.clap_note(spaces))
    else:
        labels_text = st.text_input("Labels, comma-separated", "dog bark, rain, piano, speech, engine, birdsong")
        labels = [s.strip() for s in labels_text.split(",") if s.strip()]
        if labels and st.button("Label every segment"):
            try:
                label_vectors = np.stack([ui.text_embedding(model_key, lab) for lab in labels])
            except ModelError as exc:
                st.error(str(exc))
            else:
                best, score = zero_shot(space.vectors, label_vectors)
                column = pd.Series(np.asarray(labels, dtype=object)[best], index=space.ids)
                ui.offer_colour(f"zero-shot ({key})", f"zero-shot ({key})", column)
                counts = column.value_counts().rename_axis("label").reset_index(name="segments")
                st.dataframe(counts, hide_index=True)
                st.success("Explore can now colour by these labels (“zero-shot” in its colour menu).")
