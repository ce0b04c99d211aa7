"""How counts are said, the same in the app and on the command line ("1 track", never "1 tracks").

A module of its own because the command line must not import the map code
(and Altair) that the pages use.
"""

from __future__ import annotations


def count_label(n: int, noun: str) -> str:
    """``"1 track"``, ``"1,200 segments"``: a count with its noun in the right number (nouns taking an -s)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
