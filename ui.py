"""Streamlit glue shared by the pages: settings, caches, session keys, labels, uploads, the player and the maps.

Pages stay thin: they draw widgets and charts and call ``core``.  Everything
expensive sits behind ``st.cache_*`` keyed by the store's data versions, so a
rerun after a click re-reads nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
import shutil
import time
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from core import audio
from core import explore as ex
from core import uploads
from core.config import settings
from core.errors import AccessDenied, AEBError, BadInput
from core.models.base import embeds_text, load_model, model_table
from core.paths import is_url
from core.preview import Preview, preview_chart, segment_preview
from core.store import Store
from core.wording import count_label

#: ``st.session_state`` key holding the segment last clicked in Explore, which
#: the Search page preselects for "more like this".
PICKED_KEY = "explore_picked"

#: The query parameter naming the segment Search opens on ("More like this"): unlike
#: session state it survives a reload, and the address can be shared.
SEGMENT_PARAM = "segment"

#: ``st.session_state`` key through which other pages add colours to Explore:
#: ``{name: pd.Series indexed by segment_id}`` (numbers or labels), or a
#: function returning one, for colours that cost a scan and may never be used.
EXTRA_COLOURS_KEY = "explore_extra_colours"

_COLOUR_SLOTS_KEY = "explore_colour_slots"  # slot -> the name of the colour last offered in it

#: ``st.session_state`` key through which Compare's layer view opens a space
#: (a layer clicked) as Explore's first view.
OPEN_IN_EXPLORE_KEY = "explore_open_space"

#: How the reductions of :data:`core.reduce.METHODS` are named on screen.
METHOD_LABELS = {"pca": "PCA", "std-pca": "STD-PCA", "tsne": "t-SNE", "umap": "UMAP"}

#: How the levels a map can draw are named on screen.
LEVEL_LABELS = {"segment": "segments", "track": "tracks (mean of segments)"}


#: The app's pages: script, sidebar name, icon, address (None: the front page, ``/``).
PAGES = [
    ("pages/0_Home.py", "Home", "🎧", None),
    ("pages/1_Extract.py", "Extract", "📥", "Extract"),
    ("pages/2_Explore.py", "Explore", "🗺️", "Explore"),
    ("pages/3_Compare.py", "Compare", "⚖️", "Compare"),
    ("pages/4_Search.py", "Search", "🔎", "Search"),
]


def navigation(position: str = "sidebar"):
    """The pages under the names people know them by, each at its own address, for ``streamlit_app.py``."""
    return st.navigation([st.Page(script, title=title, icon=icon, default=url is None,
                                  **({"url_path": url} if url else {}))
                          for script, title, icon, url in PAGES], position=position)


def page(title: str, icon: str) -> None:
    """Every page's first call: its browser-tab title, icon and width, under the app's own navigation.

    Until some session of a server has run ``streamlit_app.py``, Streamlit
    serves a deep link (``/Explore``) the old way, straight from the
    ``pages/`` folder, and the sidebar says "streamlit app" and loses the
    icons for the whole session.  Declaring the pages ends that mode for the
    server; the rerun runs this session through the entrypoint, on the page asked for.
    """
    if PagesManager.uses_pages_directory:
        navigation(position="hidden")
        st.rerun()
    st.set_page_config(page_title=f"{title} · Audio embedding browser" if title else "Audio embedding browser",
                       page_icon=icon, layout="wide")


def span_label(name: str, start_s: float, end_s: float) -> str:
    """How a moment of a track is named on screen: ``"file.wav · 3.0–6.0 s"``."""
    return f"{name} · {start_s:.1f}–{end_s:.1f} s"


def more_like_this(segment_id: int) -> None:
    """Open Search on its "More like this" tab with ``segment_id`` as the query."""
    st.session_state[PICKED_KEY] = int(segment_id)
    st.switch_page("pages/4_Search.py", query_params={SEGMENT_PARAM: str(int(segment_id))})


def picked_segment() -> int | None:
    """The segment "More like this" was asked for: from the address, else the last one clicked in Explore."""
    value = st.query_params.get(SEGMENT_PARAM)
    if value is not None and value.isdigit():
        return int(value)
    return st.session_state.get(PICKED_KEY)


def offer_colour(slot: str, name: str, values) -> None:
    """Offer Explore a colour named ``name``, replacing whatever was offered before in the same ``slot``.

    One slot per kind of result (the latest search, zero-shot labels of a
    model) keeps Explore's colour menu from growing with every query.
    ``values`` is a series indexed by segment id, or a function returning one.
    """
    extra = st.session_state.setdefault(EXTRA_COLOURS_KEY, {})
    slots = st.session_state.setdefault(_COLOUR_SLOTS_KEY, {})
    if slots.get(slot) in extra:
        del extra[slots[slot]]
    extra[name] = values
    slots[slot] = name


def clap_note(spaces: pd.DataFrame) -> str:
    """Where text search can be had: a stored CLAP space to switch to, CLAP to extract, or why CLAP cannot load here."""
    stored = [s for s in spaces["space"] if embeds_text(s)]
    if stored:
        return f"Choose {', '.join(stored)} above."
    status = catalogue_status()
    clap = status[status["family"] == "clap"]
    if clap["available"].any():
        return f"Extract the collection with {clap.loc[clap['available'], 'key'].iloc[0]} on the Extract page."
    reason = clap["reason"].iloc[0] if len(clap) else "no CLAP model is in the catalogue"
    return f"CLAP cannot be used here: {reason}"


#: ``st.session_state`` key of the visitor's own upload folder (see :func:`save_query_clip`).
VISITOR_KEY = "visitor_folder"

#: ``st.session_state`` key of the maps a visitor computed: kept for the session, never in a shared store.
VISITOR_MAPS_KEY = "visitor_maps"


def cfg():
    """Read on every rerun (cheap), so a changed environment is never shadowed by a cache.

    ``AEB_DB`` naming a published collection opens it as ``AEB_COLLECTION``
    would.  In shared mode a failure shows its message only, never a
    traceback with the server's paths.
    """
    found = settings()
    if not found.read_only and found.db.is_file() and opened_store(str(found.db)).published:
        found = dataclasses.replace(found, collection=found.db.parent, shared_mode=True)
    if found.shared_mode:
        st.set_option("client.showErrorDetails", "none")
    return found


def store() -> Store:
    found = cfg()
    return opened_store(str(found.db), found.read_only)


@st.cache_resource(show_spinner="Loading model…")
def adapter(key: str, device: str | None = None):
    return load_model(key, device)


@st.cache_data(ttl=600, show_spinner=False)
def catalogue_status() -> pd.DataFrame:
    return pd.DataFrame(model_table())


@st.cache_data(max_entries=4, show_spinner=False)
def metadata_names(db: str, version: tuple) -> list[str]:
    """The collection's metadata columns, read from one row per track (never one per segment)."""
    from core.store import metadata_columns

    return metadata_columns(Store(db).track_metadata())


def store_version(st_: Store, spaces: pd.DataFrame | None = None) -> tuple:
    """Cache key of everything a page shows; pass ``spaces`` when the page has just read them."""
    spaces = st_.spaces() if spaces is None else spaces
    return (tuple(zip(spaces["space"], spaces["data_version"])), st_.metadata_version())


def collection_or_stop(nothing_yet: str) -> tuple[Store, pd.DataFrame, tuple]:
    """The store, its spaces and :func:`store_version`; an empty store shows ``nothing_yet`` and ends the page."""
    opened = store()
    spaces = opened.spaces()
    if spaces.empty:
        st.info(f"{nothing_yet} (or load the demo on the home page).")
        st.stop()
    return opened, spaces, store_version(opened, spaces)


def player(row, *, to_end: bool = False, context_s: float = 0.0, label: str | None = None) -> None:
    """Play exactly [start_s, end_s) of a stored segment (widened by ``context_s`` each side), or to the track's end.

    ``row`` is a segment as the store gives it (a Series or a dict): ``path``,
    ``path_escaped`` (see :mod:`core.paths`), ``start_s`` and ``end_s``.
    Whatever goes wrong is said in one line instead of a player.
    """
    escaped = bool(row.get("path_escaped", False))
    if not escaped and is_url(row["path"]):  # a track extracted from object storage or the web
        if row["path"].lower().startswith(("http://", "https://")):  # the browser fetches it; whole seconds only
            st.audio(row["path"], start_time=int(row["start_s"]),
                     end_time=None if to_end else int(math.ceil(float(row["end_s"]))))
        else:
            st.caption(f"🔇 {label or row['path']} lies in object storage, which a browser cannot read; "
                       "publish it over https to play it here.")
        return
    settings_ = cfg()
    path = store().file(row["path"], escaped)
    start = max(0.0, float(row["start_s"]) - context_s)
    try:
        resolved = settings_.check_readable(path)
        data = audio.excerpt_wav(resolved, start, None if to_end else float(row["end_s"]) + context_s)
    except AccessDenied as exc:
        st.caption(f"🔇 {exc}")
        return
    except audio.AudioError as exc:
        st.caption(f"🔇 Cannot play {label or settings_.visible(row['path'])}: {exc}.")
        return
    st.audio(data, format="audio/wav")


@st.cache_data(max_entries=256, show_spinner=False)
def _preview(path: str, start_s: float, end_s: float) -> Preview:
    return segment_preview(path, start_s, end_s)


def look(row, *, compact: bool = False, width: int = 640) -> None:
    """The segment's log-mel spectrogram (and waveform unless ``compact``) with its context; or one line why not."""
    path = store().file(row["path"], bool(row.get("path_escaped", False)))
    try:
        shown = _preview(str(cfg().check_readable(path)), float(row["start_s"]), float(row["end_s"]))
    except (AccessDenied, audio.AudioError):
        return  # the player beside it already says why
    st.altair_chart(preview_chart(shown, width=width, compact=compact), width="content")


def labelled(name: str, row, label_column: str | None) -> str:
    """A result's heading: its span, and the chosen label column's value beside it."""
    text = span_label(name, row["start_s"], row["end_s"])
    if label_column:
        value = row.get(label_column) if hasattr(row, "get") else None
        text += f" · {label_column}: **{value if value is not None and value == value else '—'}**"
    return text


@st.cache_resource(show_spinner=False)
def opened_store(db: str, read_only: bool = False) -> Store:
    """One Store per file for the server's life: opening one runs the schema statements, which a click should not pay."""
    return Store(db, read_only=read_only)


def visible_paths(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its ``path`` column as a visitor may see it (:meth:`core.config.Settings.visible`), for tables and exports."""
    if "path" not in frame.columns or not cfg().shared_mode:
        return frame
    return frame.assign(path=frame["path"].map(cfg().visible))


@st.cache_resource(max_entries=8, show_spinner="Loading vectors…")
def space(db: str, key: str, level: str, version: tuple):
    """A space's unit vectors; ``version`` (from :func:`store_version`) invalidates it.

    A resource, not data: ``st.cache_data`` would unpickle a copy on every
    rerun (seconds for a million vectors).  The arrays are made read-only so
    that sharing them between sessions is safe.
    """
    from core import spaces

    loaded = spaces.load(Store(db), key, level)
    for array in (loaded.ids, loaded.vectors, loaded.track_ids):
        array.setflags(write=False)
    return loaded


@st.cache_resource(max_entries=2, show_spinner="Indexing vectors for fast search…")
def sketch(db: str, key: str, version: tuple):
    """The int8 search sketch of a segment-level space (``None`` for small spaces, and for those
    :func:`vector_index` serves), built once per data version."""
    from core.search import build_sketch

    if vector_index(db, key, version) is not None:
        return None
    return build_sketch(space(db, key, "segment", version).vectors)


@st.cache_resource(max_entries=1, show_spinner="Opening the search index (built once per data version: "
                                                 "minutes for millions of vectors)…")
def vector_index(db: str, key: str, version: tuple):
    """The approximate index of a space too large for exact search (``None`` otherwise)."""
    from core.search import index_for

    return index_for(Store(db), space(db, key, "segment", version))


@st.cache_resource(max_entries=1, show_spinner="Reading segment labels…")
def row_labels(db: str, version: tuple):
    """Every segment's labels (:class:`core.labels.RowLabels`) of one data version, so that a search
    result or a clicked point is labelled without opening the store."""
    from core.labels import RowLabels

    return RowLabels.read(Store(db))


def step_progress(container):
    """A :mod:`core.progress` callback drawing one ``st.progress`` bar, with each step's time left."""
    from core.progress import describe

    bar = container.progress(0.0)
    current = {"step": None, "t0": 0.0}

    def progress(done: int, total: int, step: str) -> None:
        now = time.monotonic()
        if step != current["step"]:
            current.update(step=step, t0=now)
        bar.progress(min(1.0, done / max(1, total)), text=describe(done, total, step, now - current["t0"]))

    return progress


@st.cache_resource(show_spinner=False)
def text_tower(key: str):
    """A text–audio model's text tower alone (see ``ClapAdapter.text_only``), loaded once for every visitor."""
    return load_model(key).text_only()


@st.cache_data(max_entries=1024, show_spinner=False)
def text_embedding(model_key: str, text: str):
    """Text vectors are cached: typing the same query twice costs nothing.

    The first query on a fresh server downloads the model's checkpoint (one
    file on the hub); the spinner says so, since it takes a while.
    """
    with st.spinner(f"Loading {model_key} for text search: the first query downloads its checkpoint once and keeps "
                    "only its text tower in memory…"):
        tower = text_tower(model_key)
    return tower.embed_text([text])[0]


#: Tracks a picker lists at most; more would make the page heavy to send, and nobody scrolls them.
PICKER_TRACKS = 1_000


@st.cache_data(max_entries=2, show_spinner=False)
def track_names(db: str, version: tuple) -> pd.Series:
    """track_id -> file name, for pickers (one row per track, never per segment)."""
    tracks = row_labels(db, version).tracks
    return pd.Series([Path(p).name for p in tracks["path"]], index=tracks.index)


def segment_picker(db: str, version: tuple, picked: int | None, key: str, among: np.ndarray) -> int | None:
    """A segment of ``among`` (sorted ids: a space's), chosen as a file name filter, a track, then one of its
    segments; ``picked`` preselected.

    One selectbox over every segment sends each label to the browser: at a
    million segments that is tens of megabytes and a list nobody can scroll.
    """
    labels = row_labels(db, version)
    names = track_names(db, version)
    if not len(names):
        return None
    picked_track = None
    if picked is not None:
        try:
            picked_track = int(labels.rows(np.array([picked])).iloc[0]["track_id"])
        except AEBError:
            picked = None
    c1, c2, c3 = st.columns([2, 3, 2])
    typed = c1.text_input("File name contains", key=f"{key}_filter", help="Narrows the track list below.")
    shown = names[names.str.contains(typed, case=False, regex=False)] if typed else names
    if len(shown) > PICKER_TRACKS:
        c1.caption(f"{count_label(len(shown), 'track')} match; the first {PICKER_TRACKS:,} are listed.")
        shown = shown.iloc[:PICKER_TRACKS]
    if picked_track is not None and picked_track not in shown.index:
        shown = pd.concat([names.loc[[picked_track]], shown])
    if not len(shown):
        c2.info(f"No file name contains “{typed}”.")
        return None
    tracks = list(shown.index)
    track = c2.selectbox("Track", tracks, index=tracks.index(picked_track) if picked_track in tracks else 0,
                         format_func=shown.get, key=f"{key}_track_{picked_track}")
    ids = labels.of_track(int(track))
    ids = [int(i) for i in ids[np.isin(ids, among)]]
    if not ids:
        c3.info("This track has no segment in this space.")
        return None
    rows = labels.rows(np.array(ids)).set_index("segment_id")
    return c3.selectbox("Segment", ids, index=ids.index(picked) if picked in ids else 0,
                        format_func=lambda i: f"{rows.at[i, 'start_s']:.1f}–{rows.at[i, 'end_s']:.1f} s",
                        key=f"{key}_segment_{track}_{picked}", help="Points clicked in Explore are preselected here.")


def save_upload(upload, subfolder: str = "") -> Path:
    """Keep an uploaded file on disk, where the models and the player can read it, and return its path.

    The file goes to ``<uploads>/<subfolder>/<hash of its bytes>/<its base name>``:
    the same file uploaded twice is written once, two files of one name
    never overwrite each other, and the name the user knows is kept for
    messages and exports.  Shared mode lets the app read under the uploads
    folder only.  Every page that takes uploads checks them here again,
    since Streamlit's own limit (``server.maxUploadSize``) may be set higher.

    Parameters
    ----------
    upload : streamlit.runtime.uploaded_file_manager.UploadedFile
        What ``st.file_uploader`` returned.
    subfolder : str
        Keeps files of one purpose (e.g. search queries) apart from the collection's.

    Raises
    ------
    BadInput
        The file is larger than ``AEB_MAX_UPLOAD_MB`` (or Streamlit's own
        limit), its name is not a plain file name, or the uploads would
        exceed ``AEB_UPLOAD_QUOTA_MB``; nothing is written.
    """
    found = cfg()
    name = uploads.safe_name(upload.name)
    limit_mb = min(found.max_upload_mb, int(st.get_option("server.maxUploadSize")))
    if upload.size > limit_mb * 2**20:
        raise BadInput(f"{name} is larger than {limit_mb} MB and was skipped.")
    uploads.sweep(found.uploads, found.upload_ttl_s)
    data = upload.getvalue()
    target = found.uploads / subfolder / hashlib.blake2b(data, digest_size=8).hexdigest() / name
    if not target.exists():
        uploads.check_quota(found.uploads, len(data), found.upload_quota_mb)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return target


class _VisitorFolder:
    """A visitor's own upload folder, deleted with the session that holds this object (Streamlit drops it at the end)."""

    def __init__(self, path: Path):
        self.relative = path
        weakref.finalize(self, shutil.rmtree, cfg().uploads / path, True)


def save_query_clip(upload) -> Path:
    """:func:`save_upload` into this visitor's own folder: a random id, so that no name reaches another visitor's clip.

    The folder goes with the session, or after ``AEB_UPLOAD_TTL_S`` when the
    end of a session is never seen (a server restart).
    """
    folder = st.session_state.get(VISITOR_KEY)
    if folder is None:
        folder = st.session_state[VISITOR_KEY] = _VisitorFolder(Path(uploads.VISITORS) / secrets.token_hex(16))
    return save_upload(upload, str(folder.relative))


def linked_maps(data: pd.DataFrame, titles: list[str], *, key: str, colour: list[str] | str | None = None,
                colour_title: str | None = None, drag: str = "select", trajectory: bool = False,
                width: int = 440, density: pd.DataFrame | None = None) -> list[int]:
    """Draw :func:`core.explore.linked_spec`'s maps over ``data`` and return the ids selected in them.

    ``data`` is :func:`core.explore.chart_data`'s rows; ``density``, when the
    rows are a sample, every point's counts per view
    (:func:`core.density.view_densities`), drawn under them; the rest is the
    spec's layout (see there).  A selection reruns the page; the ids come
    back clicked first, then boxed.
    """
    spec = _linked_spec(ex.mark_bucket(len(data)), tuple(titles), tuple(colour) if isinstance(colour, list) else colour,
                        colour_title, drag, trajectory, width, density is not None)
    datasets = {ex.DATASET: data, **({ex.DENSITY: density} if density is not None else {})}
    event = st.vega_lite_chart({**spec, "datasets": datasets}, on_select="rerun", key=key,
                               selection_mode=ex.selections(len(titles), drag), width="content")
    return ex.selected_ids(selection_of(event), data)


def selection_of(event) -> dict:
    """A chart event's selections, {param name: [points]}; a test's session state sends a plain dict."""
    if event is None:
        return {}
    return event.get("selection", {}) if isinstance(event, dict) else event.selection


@st.cache_resource(max_entries=16, show_spinner=False)
def _linked_spec(bucket: int, titles: tuple, colour: tuple | str | None, colour_title: str | None, drag: str,
                 trajectory: bool, width: int, density: bool) -> dict:
    """Built once per layout: Altair validates compound charts on every build (about 1.5 s), which a click must not pay."""
    return ex.linked_spec(bucket, titles, colour=colour, colour_title=colour_title, drag=drag, trajectory=trajectory,
                          width=width, height=int(width * 0.9), density=density)
