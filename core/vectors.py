"""L2 normalisation of embedding rows, the one place it is written.

Search, comparison, clustering, the scene (track) embeddings and the
adapters that return unit vectors all need rows normalised once, so that a
cosine similarity is a plain dot product.  It lives in its own leaf module so
that the store and the model adapters can use it without importing each
other.
"""

from __future__ import annotations

import numpy as np

from core.errors import BadInput

#: Rows normalised per step, so that normalising a large matrix needs no
#: temporary of the matrix's size.
_BLOCK = 1 << 16


def normalize(vectors: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """L2-normalise rows once, so that every later cosine score is a dot product.

    Parameters
    ----------
    vectors : np.ndarray [shape=(n, dim)]
        Any real dtype.  All-zero rows stay zero (they score 0 against every
        query) rather than becoming NaN.
    copy : bool
        With ``copy=False`` a C-contiguous float32 input is normalised in
        place, which saves a second copy of a large stored matrix.

    Returns
    -------
    unit : np.ndarray [shape=(n, dim), dtype=float32, C-contiguous]

    Raises
    ------
    BadInput
        If the array is not 2-D or holds NaN or infinity.
    """
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise BadInput(f"Stored vectors must be a 2-D array (rows × dimensions), not {x.ndim}-D.")
    unit = np.ascontiguousarray(x, dtype=np.float32)
    if copy and np.shares_memory(unit, x):
        unit = unit.copy()
    for start in range(0, len(unit), _BLOCK):
        block = unit[start:start + _BLOCK]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        bad = ~np.isfinite(norms)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            raise BadInput(f"Stored vector {row} contains NaN or infinity; re-extract that segment.")
        norms[norms == 0] = 1.0
        block /= norms[:, None]
    return unit
