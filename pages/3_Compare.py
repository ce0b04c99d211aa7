"""Compare: which model hears my collection best? Linked maps, where two models disagree, and honest metrics."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import ui
from core import analyses as an
from core import compare as cp
from core import explore as ex
from core import spaces as sp
from core.errors import AEBError
from core.reduce import METHODS

st.set_page_config(page_title="Compare · Audio embedding browser", page_icon="⚖️", layout="wide")
st.title("⚖️ Compare")
store, spaces, VERSION = ui.collection_or_stop("Nothing to compare yet: extract a collection with two or more models first")

DB = str(store.path)
METADATA = ui.metadata_names(DB, VERSION)
SPACE_NAMES = list(spaces["space"])
N_NEIGHBOURS_SHOWN = 10
LABEL_KEY = "compare-label"  # the metrics' label column, also shown beside each neighbour

top = st.columns([4, 2, 2, 2])
chosen = top[0].multiselect("Models", SPACE_NAMES, default=SPACE_NAMES[:2],
                            help="Two or more models extracted on the same segment grid.")
level = top[1].radio("Points", list(ui.LEVEL_LABELS), horizontal=True, format_func=ui.LEVEL_LABELS.get)
method = top[2].selectbox("Map", METHODS, format_func=ui.METHOD_LABELS.get)
k = int(top[3].slider("k (neighbours)", 1, 50, 10, help="k of Jaccard@k, of the k-NN accuracy and of hubness."))


@st.cache_data(max_entries=8, show_spinner="Computing the maps (once; they are stored for next time)…")
def maps(db: str, version: tuple, models: tuple, method: str, level: str) -> dict:
    budget = ui.cfg().visitor_max_points if ui.cfg().shared_mode else None  # stored maps are free; new ones within it
    return an.store_maps(ui.opened_store(db), list(models), method, level=level, max_points=budget)


@st.cache_data(max_entries=8, show_spinner="Finding every point's nearest neighbours in both models (once; they are stored)…")
def disagreement(db: str, version: tuple, pair: tuple, k: int, level: str) -> dict:
    return an.store_disagreement(ui.opened_store(db), *pair, k=k, level=level)


@st.cache_resource(max_entries=8, show_spinner=False)
def drawn(db: str, version: tuple, models: tuple, method: str, level: str, pair: tuple, k: int):
    """The chart's rows: the points every model holds and the disagreement scored, built once, not per click."""
    frame, colour = ex.disagreement_points(ui.opened_store(db), maps(db, version, models, method, level),
                                           disagreement(db, version, pair, k, level), models=models, level=level)
    return ex.chart_data(frame, np.ones(len(frame), dtype=bool), colour=colour)


# ---------------------------------------------------------------------------- linked maps
st.header("Where do the models disagree?")
if len(chosen) < 2:
    st.info("Choose two or more models to see their maps side by side.")
else:
    try:
        found = maps(DB, VERSION, tuple(chosen), method, level)
    except AEBError as exc:
        st.error(str(exc))
        st.stop()
    shared = len(found["ids"])
    per_model = ", ".join(f"{m}: {n:,}" for m, n in found["per_model"].items())
    imported = spaces.set_index("space").loc[chosen, "source"].eq("imported").any()
    st.caption(f"{shared:,} {level}s are held by every chosen model ({per_model})"
               + ("; imported spaces keep their own segments and are compared only where they coincide" if imported
                  else "") + f". Each map is turned and scaled (orthogonal Procrustes) onto {chosen[0]}'s, so the "
               "same region sits in the same place.")
    if shared < 4:
        st.warning("Too few shared points to compare; extract these models on the same collection.")
        st.stop()

    c1, c2 = st.columns(2)
    model_a = c1.selectbox("Colour by the disagreement of", chosen, index=0)
    model_b = c2.selectbox("with", [m for m in chosen if m != model_a], index=0)
    scored = disagreement(DB, VERSION, (model_a, model_b), k, level)
    colour = pd.Series(scored["disagreement"], index=scored["ids"], name="disagreement")
    note = (f"; 1 − Jaccard@{k} on a random sample of {scored['sampled']:,} of {scored['n']:,} points, only they are drawn"
            if scored["sampled"] else "")
    data, drawn_note = drawn(DB, VERSION, tuple(chosen), method, level, (model_a, model_b), k)
    st.caption(f"Colour: 1 − Jaccard@{k} between {model_a} and {model_b}: 0 where both models give a point the same "
               f"{k} nearest neighbours (in embedding space, cosine{', own track excluded' if level == 'segment' else ''}), "
               f"1 where they share none. Mean {colour.mean():.2f}{note}. {drawn_note}. "
               "Click a point to hear its neighbours in each model; drag a box to select many.")
    picked = ui.linked_maps(data, [f"{m} · {ui.METHOD_LABELS[method]}" for m in chosen], key=f"compare-{len(chosen)}",
                            colour="numeric", colour_title=f"1 − Jaccard@{k}", width=440 if len(chosen) == 2 else 320)

    if picked:
        query = ex.points_frame(store, np.array(picked[:1]), level).iloc[0]
        st.subheader(f"▶ {ui.span_label(query['name'], query['start_s'], query['end_s'])} "
                     f"(disagreement {colour.get(int(query['id']), float('nan')):.2f})")
        ui.player(query, label=query["name"])
        if len(picked) > 1:
            st.caption(f"{len(picked):,} points selected; the neighbours below are those of the first.")
        ids, vectors, track_ids = sp.aligned([ui.space(DB, m, level, VERSION) for m in (model_a, model_b)])
        try:
            lists = {m: cp.point_neighbours(ids, track_ids, x, int(query["id"]), k=k, level=level)
                     for m, x in zip((model_a, model_b), vectors)}
        except cp.CompareError as exc:  # a selection left over from other models
            st.caption(str(exc))
            lists = {}
        both = set(lists[model_a][0]) & set(lists[model_b][0]) if lists else set()
        if lists:
            st.caption(f"Its {k} nearest neighbours in each model among the {len(ids):,} {level}s both hold, nearest "
                       f"first; ✓ marks those both models agree on ({len(both)} of {k}).")
        shown_label = st.session_state.get(LABEL_KEY)
        shown_label = None if shown_label in (None, "(none)") else shown_label
        if level == "segment":
            ui.look(query, width=640)
        for column, (m, (neighbour_ids, sims)) in zip(st.columns(2), lists.items()):
            with column:
                st.markdown(f"**{m}**")
                rows = ex.points_frame(store, neighbour_ids, level)
                for (_, row), sim in zip(rows.head(N_NEIGHBOURS_SHOWN).iterrows(), sims):
                    mark = "✓ " if row["id"] in both else ""
                    st.write(f"{mark}{ui.labelled(row['name'], row, shown_label)} · cosine {sim:.3f}")
                    ui.player(row, label=row["name"])
                    if level == "segment":
                        ui.look(row, compact=True, width=420)
                if len(rows) > N_NEIGHBOURS_SHOWN:
                    st.caption(f"Players for the first {N_NEIGHBOURS_SHOWN} of {len(rows)}.")

# ---------------------------------------------------------------------------- metrics


@st.cache_data(max_entries=8, show_spinner=False)
def metrics(db: str, version: tuple, models: tuple, label, group, k: int, level: str, method: str) -> dict:
    return an.store_metrics(ui.opened_store(db), list(models), label=label, group=group, k=k, level=level, method=method)


st.header("Metrics")
m1, m2, m3, m4 = st.columns([3, 2, 2, 2])
table_models = m1.multiselect("Models in the table", SPACE_NAMES, default=SPACE_NAMES,
                              help=f"{an.BASELINE} is always included when stored: it is the baseline every model must beat.")
label = m2.selectbox("Label column", ["(none)", *METADATA], key=LABEL_KEY,
                     help="Adds k-NN accuracy with 95 % intervals, macro-F1, silhouette, NMI, ARI, the chance level "
                          "and per-label accuracy.")
group = m3.selectbox("Group column", ["(none)", *METADATA],
                     help="Source recording, speaker, …: neighbours from the query's own group are excluded, and the "
                          "intervals resample whole groups.")
trust_method = m4.selectbox("Trustworthiness of the map", METHODS, format_func=ui.METHOD_LABELS.get)
st.caption(("At segment level neighbours from the query's own track are always excluded. " if level == "segment" else "")
           + "Why a group column matters: " + cp.GROUP_NOTE)
models = an.with_baseline(store, table_models)
label = None if label == "(none)" else label
group = None if group == "(none)" else group
try:
    with st.status(f"Scoring {len(models)} models (once; the table is stored)…", expanded=False) as status:
        table = metrics(DB, VERSION, tuple(models), label, group, k, level, trust_method)
        info = table["info"]
        status.update(label="Metrics " + ("read from the store" if info["cached"] else f"computed in {info['seconds']:.1f} s"),
                      state="complete")
except AEBError as exc:
    st.error(str(exc))
    st.stop()

rows = cp.metric_rows(table, models)
rows.index = [f"{m} (baseline)" if m == an.BASELINE else m for m in models]
st.dataframe(rows, width="stretch", column_config={
    c: (st.column_config.TextColumn(c, help=cp.EXPLANATIONS["ci95"]) if c.endswith("95% CI") else
        st.column_config.NumberColumn(c, format="%.3f",
                                      help=cp.EXPLANATIONS.get(c.split("_k")[0], cp.EXPLANATIONS.get(c))))
    for c in rows.columns})
scored_note = (f"scored on a random sample of {info['sampled']:,} of {info['n']:,} {level}s (fixed seed)" if info["sampled"]
               else f"all {info['n']:,} {level}s held by every model scored")
st.caption(f"{scored_note}; trustworthiness on {info['trustworthiness_points'] or 0:,} points"
           + (f"; {info['dropped']:,} {level}s without a {'label or group' if group else 'label'} value left out"
              if info["dropped"] else ""))
shown = {"knn_acc" if c.startswith("knn_acc") else c for c in rows.columns} | {"cka", "jaccard_at_k"}
if label:
    shown |= {"chance", "ci95"}
    first = table[models[0]]
    st.markdown(f"**Chance** for *{label}*: {first['chance']:.3f} (the label of a random other item); always answering "
                f"the largest label scores {first['majority']:.3f}. Intervals resample "
                f"{'whole groups of ' + group if info.get('resampled') == 'groups' else 'items'} "
                f"({info['n_resamples']:,} times, seed {info['seed']}).")
st.markdown("\n".join(f"- **{name}**: {text}" for name, text in cp.EXPLANATIONS.items() if name in shown))

# ---------------------------------------------------------------------------- per label
if label:
    st.subheader("Per label")
    per_model = st.selectbox("Model", models, key="per-label-model",
                             help=f"k-NN accuracy of each label and the confusion of the k={k} votes.")
    report = table[per_model]
    per_class = pd.DataFrame({"label": list(report["per_class"]), "accuracy": list(report["per_class"].values())})
    bars = alt.Chart(per_class).mark_bar().encode(
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title=f"k-NN accuracy (k={k})"),
        y=alt.Y("label:N", sort="-x", title=None), tooltip=["label", alt.Tooltip("accuracy:Q", format=".3f")])
    chance = alt.Chart(pd.DataFrame({"chance": [report["chance"]]})).mark_rule(color="#d62728", strokeDash=[4, 3]).encode(
        x="chance:Q", tooltip=[alt.Tooltip("chance:Q", format=".3f")])
    confusion = cp.confusion_frame(report["confusion"])
    order = report["confusion"]["labels"]
    cells = alt.Chart(confusion).mark_rect().encode(
        x=alt.X("predicted:N", sort=order, title="predicted"), y=alt.Y("true:N", sort=order, title="true"),
        color=alt.Color("share:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"), title="share of the true label",
                        legend=alt.Legend(orient="bottom", titleLimit=0)),
        tooltip=["true", "predicted", "count", alt.Tooltip("share:Q", format=".2f")])
    g1, g2 = st.columns(2)
    step = max(8, min(28, 420 // max(1, len(order))))
    g1.altair_chart((bars + chance).properties(width=380, height=alt.Step(max(12, step)),
                                               title="Accuracy per label (red: chance)"))
    g2.altair_chart(cells.properties(width=alt.Step(step), height=alt.Step(step), title="Confusion of the votes"))

if len(models) > 1:
    pairs = [(a, b, v) for key, v in table["pairs"].items() for a, b in [key.split("|")]]
    heat = pd.DataFrame([{"a": a, "b": b, "cka": v["cka"], "jaccard": v["jaccard_at_k"]} for a, b, v in pairs]
                        + [{"a": b, "b": a, "cka": v["cka"], "jaccard": v["jaccard_at_k"]} for a, b, v in pairs]
                        + [{"a": m, "b": m, "cka": 1.0, "jaccard": 1.0} for m in models])
    base = alt.Chart(heat).encode(x=alt.X("a:N", title=None, sort=models), y=alt.Y("b:N", title=None, sort=models))
    rect = base.mark_rect().encode(color=alt.Color("cka:Q", title="CKA", scale=alt.Scale(domain=[0, 1], scheme="viridis"),
                                                   legend=alt.Legend(orient="bottom", titleLimit=0)),
                                   tooltip=["a", "b", alt.Tooltip("cka:Q", format=".3f"),
                                            alt.Tooltip("jaccard:Q", format=".3f", title=f"Jaccard@{k}")])
    text = base.mark_text(fontSize=11).encode(text=alt.Text("cka:Q", format=".2f"),
                                              color=alt.condition("datum.cka > 0.6", alt.value("black"), alt.value("white")))
    h1, h2 = st.columns(2)
    h1.altair_chart((rect + text).properties(width=alt.Step(60), height=alt.Step(40), title="Debiased linear CKA"))
    h2.dataframe(pd.DataFrame([{"pair": f"{a} · {b}", "CKA": v["cka"], f"Jaccard@{k}": v["jaccard_at_k"]}
                               for a, b, v in pairs]), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in ("CKA", f"Jaccard@{k}")})
