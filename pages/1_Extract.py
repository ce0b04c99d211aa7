"""Extract: import a folder, uploads or the demo; pick models; run with progress; see per-file errors."""

import os
from pathlib import Path

import streamlit as st

import ui
from core.audio import DEFAULT_HOP_S, DEFAULT_WINDOW_S
from core.demo import build as build_demo
from core.errors import AccessDenied, AEBError, BadInput
from core.extract import extract, read_metadata_csv
from core.models.base import default_device, devices, unavailable_families
from core.models.precision import PRECISIONS

ui.page("Extract", "📥")
st.title("📥 Extract")
cfg = ui.cfg()
store = ui.store()
if store.read_only:
    st.info("This is a published collection, shared read-only: nothing can be imported or extracted here. "
            "Explore, Compare and Search work on what it holds.")
    st.stop()

# ---------------------------------------------------------------- source
source = st.radio("Source", ["Folder", "Upload files", "Demo collection"], horizontal=True)
paths: list[Path] = []
metadata = None
blocked = False  # a metadata CSV that cannot be read: the run waits until it is fixed or removed
if source == "Folder":
    if cfg.shared_mode:
        if cfg.audio_root is None:
            st.warning("This shared app has no audio folder configured (AEB_AUDIO_ROOT); use uploads instead.")
        else:
            sub = st.text_input("Folder inside the audio root", value="", help="Relative to the configured audio folder.")
            folder_text = str(cfg.audio_root / sub)
            shown_folder = sub or "the audio folder"  # never the server's absolute path
    else:
        folder_text = shown_folder = st.text_input("Folder (searched recursively for audio files)",
                                                   placeholder="/path/to/my/sounds")
    csv_text = st.text_input("Metadata CSV (optional, with a 'path' column relative to the folder)")
    if (not cfg.shared_mode or cfg.audio_root is not None) and folder_text:
        try:
            folder = cfg.check_readable(folder_text)
            if not folder.is_dir():
                st.error(f"{shown_folder} is not a folder.")
            else:
                paths = [folder]
                if csv_text:
                    try:
                        metadata = read_metadata_csv(cfg.check_readable(csv_text), [folder])
                    except (AccessDenied, BadInput) as exc:
                        st.error(f"{exc} Fix the metadata CSV or clear the field to run.")
                        blocked = True
        except AccessDenied as exc:
            st.error(str(exc))
elif source == "Upload files":
    files = st.file_uploader(f"Audio files (at most {cfg.max_upload_mb} MB each)", accept_multiple_files=True)
    for f in files or []:
        try:
            paths.append(ui.save_upload(f))
        except BadInput as exc:
            st.error(str(exc))
else:
    st.write("144 labelled synthetic clips of 2–10 s in 8 families (plucked, bowed, blown, struck, drum, noise, chirp, vowel).")
    csv_path = build_demo(cfg.demo)
    paths = [cfg.demo]
    metadata = read_metadata_csv(csv_path, [cfg.demo])

# ---------------------------------------------------------------- models
status = ui.catalogue_status()
available = status[status["available"]]
st.subheader("Models")
st.caption("Suggested: **aisfx** or **CLAP** for general sounds; **MusiCNN**, **MERT** or **CLAP-music** for music; "
           "**dsp** is the baseline every model must beat.")
default = [k for k in ("aisfx", "musicnn-msd") if k in set(available["key"])][:1] or ["dsp"]
models = st.multiselect("Models to run", list(available["key"]), default=default,
                        format_func=lambda k: f"{k} ({int(status.set_index('key').loc[k, 'dim'])}-D)")
missing = unavailable_families(status.to_dict("records"))
if missing:  # in full where models are picked: a model absent from the list must say why
    st.warning("Not available here, so not in the list:\n" + "\n".join(
        f"- **{family}** ({', '.join(keys)}): {reason}" for family, (keys, reason) in missing.items()))
layered = {k: layers for k, layers in status.set_index("key").loc[models, "layers"].items() if len(layers)}
layers = None
if layered:
    shared = sorted(set.intersection(*(set(v) for v in layered.values())))
    chosen = st.multiselect(
        f"Hidden layers to store as well ({', '.join(layered)})", ["all"] + shared, default=[],
        format_func=lambda n: "every layer" if n == "all" else f"layer {n}",
        help="One forward pass fills every layer; each chosen layer is stored as its own space (KEY/lN), "
             "beside the model's own space, the mean of all its layers. Compare shows them side by side.")
    layers = "all" if "all" in chosen else tuple(chosen) or None
with st.expander("Model information and licences"):
    st.dataframe(status[["key", "dim", "licence", "weights", "description"]], hide_index=True, width="stretch")

grid = store.grid()
c1, c2 = st.columns(2)
window = c1.number_input("Segment window (s)", 0.5, 60.0, grid[0] if grid else DEFAULT_WINDOW_S, 0.5, disabled=grid is not None)
hop = c2.number_input("Segment hop (s)", 0.5, 60.0, grid[1] if grid else DEFAULT_HOP_S, 0.5, disabled=grid is not None)
if grid:
    st.caption("This store's grid is fixed by its first extraction; every model embeds the same segments.")

with st.expander("Device and speed"):
    places = devices()
    c1, c2, c3, c4 = st.columns(4)
    device = c1.selectbox("Device", places, index=places.index(default_device()) if default_device() in places else 0)
    workers = c2.number_input("Worker processes", 0, os.cpu_count() or 1, 0,
                              help="Processes that decode, mix and resample; 0 does it in the app's own process. "
                                   "On a GPU machine, the CPU cores less one keep the GPU busy.")
    batch_size = c3.number_input("Batch size", 0, 4096, 0, help="Items per forward pass; 0 uses each model's own.")
    precision = c4.radio("Precision", PRECISIONS, horizontal=True,
                         help="bf16 applies to the models whose bf16 vectors were verified against fp32.")
    if precision == "bf16":
        cleared = set(status.loc[status["bf16"], "key"])
        fp32_only = [k for k in models if k not in cleared]
        if fp32_only:
            st.caption(f"These run in fp32 all the same, their bf16 vectors not being verified: {', '.join(fp32_only)}.")

# ---------------------------------------------------------------- run
if st.button("Run extraction", type="primary", disabled=blocked or not (paths and models)):
    with st.status("Extracting…", expanded=True) as box:
        bar = st.progress(0.0)
        try:
            adapters = [ui.adapter(k, device) for k in models]
            report = extract(paths, models, db=store.path, window_s=window, hop_s=hop, metadata=metadata,
                             adapters=adapters, max_samples=cfg.max_samples, workers=int(workers),
                             batch_size=int(batch_size) or None, precision=precision, layers=layers,
                             inside=cfg.allows if cfg.shared_mode else None,
                             progress=lambda d, n, p: bar.progress(d / n, text=f"{d}/{n} · {Path(p).name}"))
        except AEBError as exc:
            box.update(label="Nothing was done", state="error")
            st.error(str(exc))
        else:
            state = "complete" if not report.failures else "error"
            box.update(label=f"{report.stored} stored, {report.skipped} up to date, {len(report.failed_paths)} failed "
                             f"· {report.audio_s:.0f} s of audio in {report.seconds:.1f} s", state=state)
            if metadata is not None:
                matched = f"Metadata: {report.metadata_matched} of {report.metadata_rows} CSV rows matched a file found."
                if report.metadata_matched:
                    st.caption(matched)
                else:
                    st.warning(matched + " Its 'path' column must name the files relative to the folder.")
    st.caption("Work is saved in small batches: if the page reloads mid-run, run again and it continues where it stopped.")

failures = store.failures()
st.subheader("Failed files (latest run of each model)")
if failures.empty:
    st.write("None.")
else:
    st.dataframe(ui.visible_paths(failures[["path", "model", "message", "failed_at"]]), hide_index=True, width="stretch")
