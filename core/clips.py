"""Segment-accurate exports: the selected moments themselves, not the files that hold them.

A playlist of whole files makes a listener hunt for the three seconds that
were selected.  Each format here plays or marks exactly ``[start_s, end_s)``
of each segment: audio clips with a CSV of what they are, an M3U8 whose
entries carry VLC's start and stop options, an mpv EDL, and the label and
region lists of Audacity and REAPER for one track's segments.

Every function takes segment rows as :meth:`core.store.Store.rows` gives
them (``path``, ``path_escaped``, ``start_s``, ``end_s``, metadata columns).
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from core import audio
from core.errors import BadInput
from core.paths import display, from_text, playlist_entry

#: The table written beside the clips.
SEGMENTS_CSV = "segments.csv"

#: Columns of the rows that the clip table leaves out: the store's own bookkeeping.
_INTERNAL = ("segment_id", "track_id", "idx", "path_escaped", "track_sample_rate", "track_channels", "id")

#: Seconds within which a ``start_s`` of an ids CSV names a stored segment (CSV round-trips decimals).
START_TOLERANCE_S = 1e-3


def _path(row) -> str:
    return from_text(str(row["path"]), bool(row.get("path_escaped", False)))


def _label(row) -> str:
    return f"{Path(str(row['path'])).name} {row['start_s']:.2f}-{row['end_s']:.2f} s".replace("\n", " ").replace("\r", " ")


def clip_name(position: int, row) -> str:
    """``0003_dog_bark_12.00-15.00.wav``: unique by position, sortable, and readable in any file system."""
    stem = re.sub(r"[^\w.-]+", "_", Path(str(row["path"])).stem).strip("._")[:60] or "clip"
    return f"{position:04d}_{stem}_{row['start_s']:.2f}-{row['end_s']:.2f}.wav"


def _clips(rows: pd.DataFrame, resolve: Callable[[str], str | Path]) -> Iterator[tuple[dict, bytes | None]]:
    """Each row's entry in the clip table, and its WAV bytes (None when the file cannot be read: the entry says why)."""
    for position, (_, row) in enumerate(rows.iterrows(), 1):
        entry = {"clip": clip_name(position, row), "path": str(row["path"]), "start_s": float(row["start_s"]),
                 "end_s": float(row["end_s"])}
        entry.update({c: row[c] for c in rows.columns if c not in _INTERNAL and c not in entry and c != "name"})
        try:
            data = audio.excerpt_wav(resolve(_path(row)), float(row["start_s"]), float(row["end_s"]))
        except (audio.AudioError, BadInput, OSError) as exc:
            entry.update(clip="", error=f"{display(_path(row))}: {str(exc).splitlines()[0] if str(exc) else exc}")
            yield entry, None
            continue
        entry["duration_s"] = round(sf.info(io.BytesIO(data)).duration, 6)
        yield entry, data


def _table(entries: list[dict]) -> bytes:
    table = pd.DataFrame(entries)
    first = [c for c in ("clip", "path", "start_s", "end_s", "duration_s", "error") if c in table]
    return table[[*first, *[c for c in table.columns if c not in first]]].to_csv(index=False).encode("utf-8")


def write_clips(rows: pd.DataFrame, folder: str | Path, *, resolve: Callable[[str], str | Path] = str) -> tuple[int, list[str]]:
    """Write each segment as a WAV clip into ``folder``, and :data:`SEGMENTS_CSV` listing them all.

    A file that cannot be read is that clip's failure, written in the table's
    ``error`` column; the others are written.

    Parameters
    ----------
    rows : pd.DataFrame
        Segment rows (see the module's note).
    folder : str or Path
        Created if missing.
    resolve : callable
        Maps a stored path to the file to read (the app's shared mode checks it).

    Returns
    -------
    written : int
        Clips written.
    failures : list of str
        One line per segment that could not be cut.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries, failures = [], []
    for entry, data in _clips(rows, resolve):
        entries.append(entry)
        if data is None:
            failures.append(entry["error"])
        else:
            (folder / entry["clip"]).write_bytes(data)
    (folder / SEGMENTS_CSV).write_bytes(_table(entries))
    return len(entries) - len(failures), failures


def clips_zip(rows: pd.DataFrame, *, resolve: Callable[[str], str | Path] = str) -> bytes:
    """:func:`write_clips`'s clips and table as one ZIP, for a download button.

    WAV is stored, not deflated: it barely shrinks, and storing keeps the
    download's preparation to the time of cutting the clips.
    """
    buf = io.BytesIO()
    entries = []
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for entry, data in _clips(rows, resolve):
            entries.append(entry)
            if data is not None:
                zf.writestr(entry["clip"], data)
        zf.writestr(SEGMENTS_CSV, _table(entries), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def m3u8(rows: pd.DataFrame) -> str:
    """An extended M3U (UTF-8) whose every entry plays one segment only, through VLC's start and stop options.

    Players without those options (most others) play the whole file from
    the start; the ``#EXTINF`` title names the segment's times for them.
    """
    lines = ["#EXTM3U"]
    for _, row in rows.iterrows():
        start, end = float(row["start_s"]), float(row["end_s"])
        lines += [f"#EXTINF:{int(round(end - start))},{_label(row)}", f"#EXTVLCOPT:start-time={start:.3f}",
                  f"#EXTVLCOPT:stop-time={end:.3f}", playlist_entry(str(row["path"]), bool(row.get("path_escaped", False)))]
    return "\n".join(lines) + "\n"


def mpv_edl(rows: pd.DataFrame) -> bytes:
    """An mpv EDL (``mpv selection.edl``) playing the segments one after the other.

    Each file name is written in EDL's length-prefixed form (``%N%name``,
    N its bytes), so commas, spaces and any other character in a name are
    safe; the bytes are the file name's own, even where they are not UTF-8.
    """
    lines = [b"# mpv EDL v0"]
    for _, row in rows.iterrows():
        name = os.fsencode(_path(row))
        start, end = float(row["start_s"]), float(row["end_s"])
        lines.append(b"%%%d%%%s,%.3f,%.3f" % (len(name), name, start, end - start))
    return b"\n".join(lines) + b"\n"


def _one_track(rows: pd.DataFrame) -> pd.DataFrame:
    if rows["path"].nunique() > 1:
        raise BadInput("Label and region lists hold the segments of one track; choose one track.")
    return rows.sort_values("start_s", kind="stable")


def audacity_labels(rows: pd.DataFrame, label_column: str | None = None) -> str:
    """Audacity's label track (File › Import › Labels): ``start<TAB>end<TAB>label`` per segment of one track.

    The label is ``label_column``'s value when given, else the segment's times.
    """
    lines = []
    for _, row in _one_track(rows).iterrows():
        text = str(row[label_column]) if label_column and pd.notna(row.get(label_column)) else _label(row)
        lines.append(f"{float(row['start_s']):.6f}\t{float(row['end_s']):.6f}\t{text.replace(chr(9), ' ')}")
    return "\n".join(lines) + "\n"


def reaper_regions(rows: pd.DataFrame, label_column: str | None = None) -> str:
    """REAPER's region list CSV (Region/Marker Manager › Import): ``#,Name,Start,End,Length`` in seconds, one track."""
    table = _one_track(rows)
    names = [str(row[label_column]) if label_column and pd.notna(row.get(label_column)) else _label(row)
             for _, row in table.iterrows()]
    start, end = table["start_s"].to_numpy(dtype=float), table["end_s"].to_numpy(dtype=float)
    out = pd.DataFrame({"#": [f"R{i}" for i in range(1, len(table) + 1)], "Name": names, "Start": np.round(start, 6),
                        "End": np.round(end, 6), "Length": np.round(end - start, 6)})
    return out.to_csv(index=False)


def match_ids(segments: pd.DataFrame, wanted: pd.DataFrame) -> np.ndarray:
    """The segment ids that a ``path,start_s`` table names, as the app's selection export and ``search --json`` give.

    Parameters
    ----------
    segments : pd.DataFrame
        ``segment_id``, ``path`` and ``start_s`` of the stored segments.
    wanted : pd.DataFrame
        ``path`` and ``start_s`` columns; other columns are ignored.

    Raises
    ------
    BadInput
        A column is missing, or rows name no stored segment (the first is quoted).
    """
    missing = [c for c in ("path", "start_s") if c not in wanted]
    if missing:
        raise BadInput(f"The ids CSV needs the columns path and start_s (missing: {', '.join(missing)}).")
    starts = pd.to_numeric(wanted["start_s"], errors="coerce")
    by_path = {p: g for p, g in segments.groupby("path")}
    ids, unmatched = [], []
    for path, start in zip(wanted["path"].astype(str), starts):
        group = by_path.get(path)
        hit = None if group is None or pd.isna(start) else group[(group["start_s"] - start).abs() <= START_TOLERANCE_S]
        if hit is None or hit.empty:
            unmatched.append(f"{path} at {start} s")
        else:
            ids.append(int(hit["segment_id"].iloc[0]))
    if unmatched:
        raise BadInput(f"{len(unmatched)} of {len(wanted)} rows of the ids CSV name no stored segment "
                       f"(first: {unmatched[0]}).")
    return np.asarray(ids, dtype=np.int64)
