"""One family of errors, in the spirit of librosa's ``ParameterError``.

Everything ``core`` refuses is an :class:`AEBError` whose message is one
sentence saying what to change, so that the command line maps the whole
family to exit code 2 in one place and the app shows the message without a
traceback.  The subclasses are the few distinctions a caller acts on;
modules keep their historical names (``SearchError``, ``ReduceError``, …) as
aliases so that callers and tests can still name them.

The checks that many functions share (a ``level``, a ``k``, a method name)
are written once here, so the same bad value is refused with the same
sentence wherever it is passed.

``core.audio.AudioError`` stands apart: ``core/audio.py`` is the leaf of the
package and imports nothing from it.  It is one file's failure, recorded
per file by the pipeline, and the command line maps it like this family.
"""

from __future__ import annotations


class AEBError(Exception):
    """Something the user asked for cannot be done as asked; the message says what to change."""


class BadInput(AEBError, ValueError):
    """A parameter, query, file or table that cannot be used as given (a bad ``level``, ``k``, method, column…)."""


class ModelError(AEBError):
    """A model cannot be used: unknown key, broken weights, missing output."""


class ModelUnavailable(ModelError):
    """The weights or the code a model needs are not on this machine (offline, not installed)."""


class StoreError(AEBError):
    """A store operation was refused or the store cannot be read."""


class GridMismatch(StoreError):
    """The store was built on another segment grid; the message gives the flags to use instead."""


class DimensionMismatch(StoreError):
    """Vectors of one dimension were given for a space of another."""


class AccessDenied(AEBError):
    """A path outside the allowed roots was asked for in a shared deployment."""


# ---------------------------------------------------------------------- the checks every module shares

#: The levels a space is read at: one row per segment, or one per track (the scene embedding).
LEVELS = ("segment", "track")


def check_choice(value, choices, what: str):
    """Refuse a value outside a fixed set (a level, a projection or clustering method) with the same sentence everywhere.

    Returns
    -------
    value
        Unchanged, so that a check can sit inside an expression.

    Raises
    ------
    BadInput
        Naming the value and every allowed one.
    """
    if value not in choices:
        raise BadInput(f"Unknown {what} {value!r}; use one of {', '.join(map(str, choices))}.")
    return value


def check_level(level: str) -> str:
    """:func:`check_choice` over :data:`LEVELS`, the check of every function that takes a ``level``."""
    return check_choice(level, LEVELS, "level")


def check_k(k: int, items: int | None = None) -> int:
    """Refuse a neighbour or result count below one, the check of every function that takes a ``k``.

    ``items``, where given, also bounds ``k`` from above: a function that
    allocates ``n × k`` (the neighbour lists) would otherwise try to hold
    gigabytes for an absurd ``-k`` before it could fail.
    """
    if k < 1:
        raise BadInput(f"k must be at least 1, not {k}.")
    if items is not None and k > max(items, 1):
        raise BadInput(f"k must be between 1 and the number of items ({items:,}), not {k:,}.")
    return k
