"""Publish a collection: one self-contained folder that a public app opens read-only.

A visitor's machine (Streamlit Community Cloud) has neither the original
audio files nor the time to compute a t-SNE map, so everything a visitor
sees is made here, once:

* ``collection.duckdb``: the chosen spaces with their provenance and
  metadata, track paths relative to the folder (so it can move), and no
  failure rows (they name the publisher's files);
* every projection at its default settings, at segment and track level, and
  the Compare page's metrics, disagreement and maps at its defaults;
* the approximate search index of any space too large for exact search;
* ``audio/``: what the segments cover, as compact mono Ogg Vorbis (the
  default), the original files (``copy``), or nothing (``none``: no playback).

The folder is written beside its final name and renamed when complete, so
it appears whole or not at all, and never when it is larger than the size
limit asked for.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from core import audio
from core import analyses as an
from core.config import COLLECTION_STORE
from core.errors import BadInput, check_choice
from core.models.base import GENERIC_SEPARATOR, split_key
from core.paths import display, to_text
from core.reduce import METHODS, cached_projection
from core.store import Provenance, Store

AUDIO_FOLDER = "audio"
AUDIO_MODES = ("ogg", "copy", "none")

#: The Ogg copies: mono, at most this rate, Vorbis at a low quality setting.  On ESC-50's
#: 5 s clips this is about 20 KiB a clip (32 kbit/s), against 216 KiB of 22.05 kHz WAV.
OGG_MAX_RATE = 22_050
OGG_COMPRESSION = 0.9

#: The Compare page's defaults, computed at publish time so that its first view is a lookup.
COMPARE_K = 10


@dataclasses.dataclass
class PublishReport:
    """What a publication holds, and what it could not include."""

    folder: Path
    tracks: int = 0
    spaces: list[str] = dataclasses.field(default_factory=list)
    projections: int = 0
    store_bytes: int = 0
    audio_bytes: int = 0
    audio_files: int = 0
    #: (display path, one-line reason) of tracks published without playable audio.
    missing_audio: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.store_bytes + self.audio_bytes

    def lines(self) -> list[str]:
        mb = 2.0**20
        return [f"{self.tracks:,} tracks, {len(self.spaces)} spaces ({', '.join(self.spaces)}), "
                f"{self.projections} stored projections",
                f"store  {self.store_bytes / mb:8.1f} MB",
                f"audio  {self.audio_bytes / mb:8.1f} MB in {self.audio_files:,} files",
                f"total  {self.total_bytes / mb:8.1f} MB"]


def chosen_spaces(store: Store, models: Sequence[str] | None) -> list[str]:
    """The spaces to publish: all, or each key given with its other outputs (``MODEL/taggram``).

    Raises
    ------
    BadInput
        For a key the store does not hold.
    """
    held = list(store.spaces()["space"])
    if not models:
        return held
    chosen = []
    for key in models:
        store.require_space(key)
        chosen += [s for s in held if (s == key or s.startswith(key + "/")) and s not in chosen]
    return chosen


def refuse_local_models(spaces: Sequence[str]) -> None:
    """A space of a model folder on this machine (``clap:/home/me/ckpt``) names that folder to every visitor,
    and the shared app could not load the model for a text or upload query: it must be a catalogue key or hub id.

    Raises
    ------
    BadInput
        For the first such space.
    """
    for space in spaces:
        family, sep, spec = split_key(space)[0].partition(GENERIC_SEPARATOR)
        if sep and Path(spec).is_absolute():
            raise BadInput(f"The {family} space of the folder {Path(spec).name!r} names a folder on this machine, "
                           "which visitors would see and the shared app cannot load; extract with a catalogue key "
                           "or a hub id (such as clap-htsat-unfused) to publish it, or leave it out with --model.")


def publish(db: str | Path, out: str | Path, *, models: Sequence[str] | None = None, audio_mode: str = "ogg",
            max_mb: float | None = None, label: str | None = None, group: str | None = None,
            progress: Callable[[str], None] | None = None) -> PublishReport:
    """Write a published collection of a store's chosen spaces into the new folder ``out``.

    Parameters
    ----------
    models : list of str, optional
        Space keys to publish (each with its other outputs); all by default.
    audio_mode : {"ogg", "copy", "none"}
    max_mb : float, optional
        Refuse (and write nothing) when the folder would be larger.
    label, group : str, optional
        Metadata columns for the Compare metrics computed at publish time
        (a label column adds k-NN accuracy and the like; a group column
        excludes same-group neighbours).
    progress : callable, optional
        Called with one line per step.

    Raises
    ------
    BadInput
        For a bad argument, an existing ``out``, or a folder over ``max_mb``.
    """
    check_choice(audio_mode, AUDIO_MODES, "--audio mode")
    if max_mb is not None and not max_mb > 0:
        raise BadInput(f"--max-mb must be positive, not {max_mb}.")
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"{out.name} already exists; publish into a new or empty folder.")
    if not out.parent.is_dir():
        raise BadInput(f"The folder {out.parent.name} does not exist; create it first.")
    source = Store(db, read_only=True)
    if source.published:
        raise BadInput(f"{source.path.name} is already a published collection; publish from the original store.")
    spaces = chosen_spaces(source, models)
    refuse_local_models(spaces)
    if not spaces:
        raise BadInput(f"{source.path.name} holds no embeddings to publish; extract a collection first.")
    columns = set(source.track_metadata().columns)
    for name, column in (("--label", label), ("--group", group)):
        if column is not None and column not in columns:
            raise BadInput(f"{name} {column!r} is not a metadata column of this store "
                           f"(it has: {', '.join(sorted(columns - {'track_id'})) or 'none'}).")
    say = progress or (lambda line: None)

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    report = PublishReport(folder=out, spaces=spaces)
    try:
        store = _copy_store(source, partial / COLLECTION_STORE, spaces, audio_mode, report, say)
        _measure(report, store, max_mb)  # refused here already when the vectors and audio are too large
        say("computing the projections and Compare's defaults…")
        _precompute(store, spaces, label, group, report)
        Path(str(store.path) + ".writer").unlink(missing_ok=True)
        _measure(report, store, max_mb)
        if out.exists():
            out.rmdir()
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return report


def _measure(report: PublishReport, store: Store, max_mb: float | None) -> None:
    """Fill in the report's sizes; refuse a folder larger than ``max_mb``.

    Raises
    ------
    BadInput
    """
    audio_folder = store.path.parent / AUDIO_FOLDER
    report.store_bytes = store.path.stat().st_size
    report.audio_bytes = sum(f.stat().st_size for f in audio_folder.rglob("*") if f.is_file())
    if max_mb is not None and report.total_bytes > max_mb * 2**20:
        raise BadInput(f"The collection would take {report.total_bytes / 2**20:.1f} MB, more than --max-mb "
                       f"{max_mb:g}; publish fewer models (--model) or --audio none.")


def _copy_store(source: Store, target: Path, spaces: list[str], audio_mode: str, report: PublishReport,
                say: Callable[[str], None]) -> Store:
    """The published store: grid, the tracks the spaces cover (relative paths), their segments and vectors."""
    vectors = {s: source.vectors(s) for s in spaces}
    segment_ids = np.unique(np.concatenate([ids for ids, _ in vectors.values()]))
    rows = source.rows(segment_ids)
    tracks = source.tracks_frame().set_index("track_id").loc[np.unique(rows["track_id"].to_numpy())]
    say(f"writing the audio of {len(tracks):,} tracks ({audio_mode})…")
    names = _audio_names(source, tracks, audio_mode)
    (target.parent / AUDIO_FOLDER).mkdir()
    for track_id, name in names.items():
        row = tracks.loc[track_id]
        original = source.file(row["path"], bool(row["path_escaped"]))
        try:
            if audio_mode == "ogg":
                _write_ogg(original, rows[rows["track_id"] == track_id][["start_s", "end_s"]].to_numpy(),
                           target.parent / name)
            elif audio_mode == "copy":
                (target.parent / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(original, target.parent / name)
        except (OSError, audio.AudioError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            report.missing_audio.append((display(row["path"]), reason))
            (target.parent / name).unlink(missing_ok=True)
        else:
            report.audio_files += audio_mode != "none"
    report.tracks = len(tracks)

    provenances = []
    for space in spaces:
        row = source.require_space(space)
        tags = row["tag_names"]
        provenances.append(Provenance(space, row["model"], int(row["dim"]), row["adapter_version"],
                                      row["weights_sha256"], row["source"], tuple(tags) if tags else None))
    texts = [to_text(names[t]) for t in tracks.index]
    store = Store(target)
    store.fill_published(source.grid(), tracks.reset_index().assign(path=[t for t, _ in texts],
                                                                      path_escaped=[e for _, e in texts]),
                         rows, [(p, *vectors[p.space]) for p in provenances])
    return store


def _audio_names(source: Store, tracks: pd.DataFrame, audio_mode: str) -> dict[int, str]:
    """Each track's path inside the published folder: its path below the tracks' common folder, under ``audio/``.

    Ogg copies take the suffix ``.ogg``; two tracks that would share a name
    (``a.wav`` and ``a.flac``) are told apart by their track id.
    """
    files = {t: source.file(p, bool(e)) for t, p, e in zip(tracks.index, tracks["path"], tracks["path_escaped"])}
    absolute = [f for f in files.values() if f.is_absolute()]
    common = Path(os.path.commonpath(absolute)) if absolute else Path("/")
    if len(absolute) == 1:
        common = absolute[0].parent
    names, taken = {}, set()
    for t, f in files.items():
        rel = f.relative_to(common) if f.is_absolute() and f.is_relative_to(common) else Path(f.name)
        if audio_mode == "ogg":
            rel = rel.with_suffix(".ogg")
        if str(rel) in taken:
            rel = rel.with_name(f"{rel.stem}.{t}{rel.suffix}")
        taken.add(str(rel))
        names[int(t)] = f"{AUDIO_FOLDER}/{rel.as_posix()}"
    return names


def _write_ogg(original: Path, segments: np.ndarray, target: Path) -> None:
    """The audio a track's segments cover, mono Ogg Vorbis at most :data:`OGG_MAX_RATE` Hz; gaps between segments silent.

    Times stay those of the original, so a stored segment plays the same
    moment: the file starts at 0 s and ends where the last segment ends.
    """
    end_s = float(segments[:, 1].max())
    y, sr = audio.load(original, 0.0, end_s)
    covered = np.zeros(len(y), dtype=bool)
    for start, end in segments:
        covered[int(start * sr):int(np.ceil(end * sr))] = True
    y[~covered] = 0.0
    rate = min(sr, OGG_MAX_RATE)
    if rate != sr:
        y = audio.resample(y, sr, rate)
    target.parent.mkdir(parents=True, exist_ok=True)
    sf.write(target, np.clip(y, -1.0, 1.0), rate, format="OGG", subtype="VORBIS", compression_level=OGG_COMPRESSION)


def _precompute(store: Store, spaces: list[str], label: str | None, group: str | None, report: PublishReport) -> None:
    """Every projection at its defaults at both levels, Compare's defaults, and the search index of a space too large
    for exact search (beside the store), so that visitors never wait and the read-only folder never needs a write."""
    from core import spaces as sp
    from core.search import index_for

    for space in spaces:
        index_for(store, sp.load(store, space, "segment"))
        for level in ("segment", "track"):
            for method in METHODS:
                cached_projection(store, space, method, level=level)
                report.projections += 1
    if len(spaces) < 2:
        return
    shown = list(store.spaces()["space"])  # the Compare page's order, so that its defaults hit these results
    table = an.with_baseline(store, shown)
    for level in ("segment", "track"):
        an.store_metrics(store, table, label=label, group=group, k=COMPARE_K, level=level, method=METHODS[0])
        if label is not None or group is not None:  # the page opens on "(none)" before a column is chosen
            an.store_metrics(store, table, k=COMPARE_K, level=level, method=METHODS[0])
        an.store_disagreement(store, shown[0], shown[1], k=COMPARE_K, level=level)

