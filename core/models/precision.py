"""The networks' arithmetic: float32, or bfloat16 for the models that passed the check.

bfloat16 halves the memory traffic of a network and runs on tensor cores,
but a model earns it only by measurement: with its network under bfloat16
autocast, every segment's vector must keep a cosine of at least
:data:`BF16_MIN_COSINE` with its float32 vector, on the shared data
(:func:`core.models.stages.verify_bf16`).  Front ends never run in bfloat16: a log-mel with 8 bits
of mantissa is a different input.  Each catalogue entry records the lowest
cosine measured (``bf16_cosine``); a model without a measurement, or below
the bar, runs in float32 whatever is asked (:func:`effective`).

bfloat16 vectors are a space of their own: their provenance carries
``+bf16`` in the adapter version (:func:`version`), so the store replaces
rather than mixes.  float32 vectors from a CPU and a GPU share a space, so
float32 on a GPU means IEEE float32: TF32 tensor-core arithmetic, which
cuDNN uses by default for convolutions, is switched off around the network.
"""

from __future__ import annotations

import contextlib

import numpy as np

from core.errors import BadInput

#: What ``--precision`` accepts.
PRECISIONS = ("fp32", "bf16")

#: Lowest per-segment cosine to float32 a model must keep to run in bfloat16.
BF16_MIN_COSINE = 0.999


def check(precision: str) -> str:
    """The precision, or :class:`BadInput` naming the choices."""
    if precision not in PRECISIONS:
        raise BadInput(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    return precision


def allows_bf16(entry) -> bool:
    """Whether the model's bfloat16 vectors were measured to stay within :data:`BF16_MIN_COSINE` of float32."""
    return entry.bf16_cosine is not None and entry.bf16_cosine >= BF16_MIN_COSINE


def effective(entry, precision: str) -> str:
    """The precision a model runs in when ``precision`` is asked: bfloat16 only where it passed the check."""
    return "bf16" if check(precision) == "bf16" and allows_bf16(entry) else "fp32"


def version(adapter_version: str, precision: str) -> str:
    """The provenance version of vectors made at ``precision``: bfloat16 ones never share a space with float32."""
    return adapter_version if check(precision) == "fp32" else f"{adapter_version}+bf16"


@contextlib.contextmanager
def network_precision(device, precision: str):
    """Run the network at ``precision``: bfloat16 autocast, or IEEE float32 (no TF32) on a GPU."""
    import torch

    kind = torch.device(device).type
    if check(precision) == "bf16":
        with torch.autocast(kind, dtype=torch.bfloat16):
            yield
        return
    if kind != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` with the same row of ``b``.

    Parameters
    ----------
    a, b : np.ndarray [shape=(n, dim)]

    Returns
    -------
    np.ndarray [shape=(n,), dtype=float64]
        1 for two all-zero rows (the same vector), 0 for one zero row against another.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    dot = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, out)
