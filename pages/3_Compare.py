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

ui.page("Compare", "⚖️")
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
    budget = ui.cfg().visitor_max_points if ui.cfg().shared_mode else None  # as for the maps above
    return an.store_metrics(ui.opened_store(db), list(models), label=label, group=group, k=k, level=level,
                            method=method, map_max_points=budget)


@st.cache_data(max_entries=32, show_spinner=False)
def probe(db: str, version: tuple, model: str, label: str, group, level: str) -> dict:
    return an.store_linear_probe(ui.opened_store(db), model, label=label, group=group, level=level)


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

probes = {}
if label and st.toggle("Linear probe", help=cp.EXPLANATIONS["linear_probe"] + " Computed when asked for, then stored."):
    with st.spinner(f"Fitting a logistic regression per model on at most {cp.PROBE_MAX_POINTS:,} {level}s "
                    "(once per model; it is stored)…"):
        probes = {m: probe(DB, VERSION, m, label, group, level) for m in models}
rows = cp.metric_rows(table, models)
if probes:
    rows["linear_probe"] = [probes[m]["accuracy"] for m in models]
    rows["probe_macro_f1"] = [probes[m]["macro_f1"] for m in models]
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
if info.get("trustworthiness_note"):
    st.info(f"No trustworthiness for this map: {info['trustworthiness_note']}")
if probes:
    first = next(iter(probes.values()))
    st.caption(f"Linear probe: standardised logistic regression, {first['folds']} folds that never split "
               + ("a track or " if level == "segment" else "") + (f"a {group} value" if group else "an item")
               + f", on {first['n']:,} of {first['of']:,} labelled {level}s"
               + (" (a random sample, fixed seed)" if first["n"] < first["of"] else "") + ".")
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

# ---------------------------------------------------------------------------- layers


@st.cache_data(max_entries=8, show_spinner=False)
def layer_figures(db: str, version: tuple, model: str, label, group, k: int, level: str, against: tuple) -> dict:
    return an.store_layers(ui.opened_store(db), model, label=label, group=group, k=k, level=level, against=list(against))


st.header("Layer by layer")
LAYERED = an.layered_models(store)
if not LAYERED:
    st.caption("No model has layer spaces in this store. Extract MERT with some or all of its hidden layers "
               "(the layer choice on Extract, or `--layers all`) to see which layer hears your collection best.")
else:
    l1, l2 = st.columns([2, 3])
    layer_model = l1.selectbox("Model with layers", list(LAYERED),
                               format_func=lambda m: f"{m} ({len(LAYERED[m])} layers stored)")
    layer_spaces = LAYERED[layer_model]
    candidates = [s for s in SPACE_NAMES if s not in layer_spaces.values()]
    against = l2.multiselect("Each layer's CKA against", candidates,
                             default=[m for m in candidates if m != layer_model][:1],
                             help="Other models, e.g. aisfx or MusiCNN: where along the network does MERT resemble them?")
    try:
        with st.spinner(f"Scoring {len(layer_spaces)} layers (once; the figures are stored)…"):
            figures = layer_figures(DB, VERSION, layer_model, label, group, k, level, tuple(against))
    except AEBError as exc:
        st.error(str(exc))
        st.stop()
    click = alt.selection_point(name="layer", fields=["layer"], on="click")
    numbers = figures["layers"]
    charts = st.columns(2)
    if "knn_acc" in figures:
        accuracy = pd.DataFrame({"layer": numbers, "accuracy": figures["knn_acc"],
                                 "low": [c[0] for c in figures["ci95"]], "high": [c[1] for c in figures["ci95"]]})
        axis = alt.X("layer:O", title="hidden state")
        band = alt.Chart(accuracy).mark_area(opacity=0.25).encode(x=axis, y=alt.Y("low:Q", title=f"k-NN accuracy (k={k})"),
                                                                  y2="high:Q")
        line = alt.Chart(accuracy).mark_line(point=alt.OverlayMarkDef(size=80, filled=True)).encode(
            x=axis, y="accuracy:Q", tooltip=["layer", alt.Tooltip("accuracy:Q", format=".3f"),
                                             alt.Tooltip("low:Q", format=".3f", title="95 % low"),
                                             alt.Tooltip("high:Q", format=".3f", title="95 % high")]).add_params(click)
        with charts[0]:
            accuracy_event = st.altair_chart((band + line).properties(title=f"k-NN accuracy on {label} per layer",
                                                                      height=300),
                                             on_select="rerun", key="layers-accuracy", width="stretch")
    else:
        accuracy_event = None
        charts[0].info("Choose a label column above for k-NN accuracy per layer with its 95 % interval.")
    cka_rows = pd.DataFrame([{"a": a, "b": b, "cka": figures["cka"][i][j]}
                             for i, a in enumerate(numbers) for j, b in enumerate(numbers)])
    heat = alt.Chart(cka_rows).mark_rect().encode(
        x=alt.X("a:O", title="hidden state"), y=alt.Y("b:O", title="hidden state", sort="descending"),
        color=alt.Color("cka:Q", title="CKA", scale=alt.Scale(domain=[0, 1], scheme="viridis")),
        tooltip=["a", "b", alt.Tooltip("cka:Q", format=".3f")])
    with charts[1]:
        st.altair_chart(heat.properties(title="Debiased CKA, layer × layer", height=300), width="stretch")
    against_event = None
    if figures["against"]:
        versus = pd.DataFrame([{"layer": n, "model": m, "cka": v} for m, values in figures["against"].items()
                               for n, v in zip(numbers, values)])
        lines = alt.Chart(versus).mark_line(point=alt.OverlayMarkDef(size=80, filled=True)).encode(
            x=alt.X("layer:O", title="hidden state"), y=alt.Y("cka:Q", title="debiased CKA", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("model:N", title=None), tooltip=["layer", "model", alt.Tooltip("cka:Q", format=".3f")],
        ).add_params(click)
        against_event = st.altair_chart(lines.properties(title=f"Each layer of {layer_model} against other models",
                                                         height=260),
                                        on_select="rerun", key="layers-against", width="stretch")
    sampled = (f"a random sample of {figures['sampled']:,} of {figures['n']:,}" if figures["sampled"]
               else f"all {figures['n']:,}")
    st.caption(f"{sampled} {level}s held by every layer{' and compared model' if against else ''}"
               + (f"; {figures['dropped']:,} without a label or group value left out" if figures["dropped"] else "")
               + (f"; intervals resample whole {group} values" if group and "knn_acc" in figures else "")
               + ". Click a layer's point to open its map in Explore.")
    clicked = [point.get("layer") for event in (accuracy_event, against_event)
               for point in ui.selection_of(event).get("layer", [])]
    if clicked and clicked[0] in layer_spaces:
        st.session_state[ui.OPEN_IN_EXPLORE_KEY] = layer_spaces[clicked[0]]
        st.switch_page("pages/2_Explore.py")
