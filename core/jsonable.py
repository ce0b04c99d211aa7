"""Plain JSON values from numpy results, the one place where NaN becomes ``null``.

The command line prints, the store caches, and search reports dicts that
hold numpy scalars, arrays and NaN (a metric that cannot be computed on a
collection, a metadata cell left empty).  JSON has no NaN, and ``json``
cannot write numpy types, so every one of them passes through
:func:`jsonable` first: a cached result then reads back exactly as the
command line printed it.
"""

from __future__ import annotations

import math

import numpy as np


def jsonable(obj):
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts.

    Parameters
    ----------
    obj : dict, list, tuple, np.ndarray, scalar or anything else
        Containers are converted element by element.

    Returns
    -------
    dict, list, str, int, float, bool or None
        Numpy scalars and arrays become Python numbers and lists; NaN and
        infinity become ``None``; anything JSON has no type for (a path, a
        timestamp) becomes its ``str``.
    """
    if isinstance(obj, dict):
        return {jsonable(k) if isinstance(k, np.generic) else k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)
