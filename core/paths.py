"""File names as text: every name a file system holds, stored losslessly in UTF-8 columns.

POSIX file names are bytes.  Python decodes the bytes that are not UTF-8 as
lone surrogates (``surrogateescape``), which open() accepts but which DuckDB,
Arrow, JSON and CSV refuse or mangle.  So a name leaves the file system as
text: valid UTF-8 as it is, and a name holding undecodable bytes with each
such byte written ``%XX`` (and then every literal ``%`` as ``%25``), plus a
flag saying it was escaped.  The flag is what makes the text unambiguous: a
valid name may itself contain ``%FF``.

>>> to_text("/music/caf\\udce9.wav")
('/music/caf%E9.wav', True)
>>> to_text("/music/100%.wav")
('/music/100%.wav', False)
>>> from_text("/music/caf%E9.wav", True) == "/music/caf\\udce9.wav"
True
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote_to_bytes

_SURROGATE = re.compile("[\udc80-\udcff]")


def to_text(path: str | os.PathLike) -> tuple[str, bool]:
    """The text to store for a file system path, and whether it is escaped.

    Returns
    -------
    text : str
        Valid UTF-8 text.
    escaped : bool
        True when ``text`` must go through :func:`from_text` to name the file.
    """
    name = os.fspath(path)
    if not _SURROGATE.search(name):
        return name, False
    name = name.replace("%", "%25")
    return _SURROGATE.sub(lambda m: f"%{ord(m.group()) - 0xDC00:02X}", name), True


def from_text(text: str, escaped: bool) -> str:
    """The file system path (``str``, undecodable bytes as surrogates) that :func:`to_text` stored.

    ``os.fsencode`` of the result gives the file name's exact bytes.
    """
    return os.fsdecode(unquote_to_bytes(text)) if escaped else text


#: Schemes of tracks read from object storage or the web, stored as given rather than as file system paths.
URL_SCHEMES = ("s3://", "gs://", "gcs://", "http://", "https://")


def is_url(text: str | os.PathLike) -> bool:
    """Whether a track name is a URL (``s3://``, ``gs://``, ``https://``, …) rather than a file system path."""
    return isinstance(text, str) and text.lower().startswith(URL_SCHEMES)


def display(path: str | os.PathLike) -> str:
    """One printable line naming a path: escaped as stored, with control characters (a newline) as ``\\xNN``."""
    text, _ = to_text(path)
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def playlist_entry(text: str, escaped: bool) -> str:
    """A playlist line for a stored path: the path itself, or a ``file://`` URI when it cannot be a plain line.

    Names with undecodable bytes or control characters are written as URIs,
    whose percent-encoding carries the exact bytes.
    """
    if escaped or re.search(r"[\x00-\x1f\x7f]", text):
        return Path(from_text(text, escaped)).as_uri()
    return text
