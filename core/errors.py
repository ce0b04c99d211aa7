"""One family of errors, in the spirit of librosa's ``ParameterError``.

Everything ``core`` refuses is an :class:`AEBError` whose message is one
sentence saying what to change, so that the command line maps the whole
family to exit code 2 in one place and the app shows the message without a
traceback.  The subclasses are the few distinctions a caller acts on;
modules keep their historical names (``SearchError``, ``ReduceError``, …) as
aliases so that callers and tests can still name them.

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
