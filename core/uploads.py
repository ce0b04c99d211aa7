"""Files strangers upload: safe names, a total quota, and visitors' folders that expire.

A public app keeps uploads on its own disk, which anonymous visitors must
neither fill nor use to reach each other's files.  A name is reduced to a
base name before it names anything; the uploads folder as a whole has a
quota; and a visitor's query clips live in a folder of their own (a random
id) that is deleted when the session ends or, should that never be noticed,
once it is older than a time to live.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from core.errors import BadInput

#: Where each visitor's folder lies, below the uploads folder.
VISITORS = "visitors"


def safe_name(name: str) -> str:
    """The base name of an uploaded file's name, refusing names that could name a folder or hide.

    Both ``/`` and ``\\`` separate folders here (a browser on Windows may
    send either), so ``..\\..\\x.wav`` is ``x.wav``.

    Raises
    ------
    BadInput
        For an empty name, ``.``, ``..``, a hidden name (``.x``) or one with a NUL or control character.
    """
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base.startswith(".") or any(ord(c) < 32 or ord(c) == 127 for c in base):
        raise BadInput(f"An upload named {str(name)[:60]!r} was refused: give the file a plain name such as clip.wav.")
    return base


def used_bytes(folder: Path) -> int:
    """The bytes every file below ``folder`` holds (0 when it does not exist)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file() and not f.is_symlink())


def check_quota(folder: Path, adding: int, quota_mb: int) -> None:
    """Refuse an upload of ``adding`` bytes that would take ``folder`` past ``quota_mb`` megabytes.

    Raises
    ------
    BadInput
    """
    used = used_bytes(folder)
    if used + adding > quota_mb * 2**20:
        raise BadInput(f"The uploads of this shared app are full ({used / 2**20:.0f} of {quota_mb} MB); "
                       "try again later, when older uploads have expired.")


def sweep(folder: Path, ttl_s: float, now: float | None = None) -> int:
    """Delete the visitors' folders below ``folder`` untouched for longer than ``ttl_s`` seconds; returns how many."""
    visitors = Path(folder) / VISITORS
    if not visitors.is_dir():
        return 0
    now = time.time() if now is None else now
    gone = 0
    for child in visitors.iterdir():
        try:
            old = now - child.stat().st_mtime > ttl_s
        except FileNotFoundError:  # another session swept it meanwhile
            continue
        if old:
            shutil.rmtree(child, ignore_errors=True)
            gone += 1
    return gone
