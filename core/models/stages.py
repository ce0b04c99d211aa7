"""The staged form of every adapter: preparation on the CPU, front end and network on the device, pooling on the CPU.

An accelerator stays busy only if the work is cut where the data changes
hands, so every adapter is written as three stages:

1. **Prepare** (CPU, in a worker process when the pipeline has any):
   ``adapter.preparer(audio, sr, segments, offset_s) -> Prepared``.  The
   adapter's own resampler runs here (soxr, libsamplerate and resampy 0.2
   have no GPU twin), and each segment is cut into *items* of one shape:
   CLAP's chunks of at most 10 s, MERT's passes of at most 5 s, musicnn's
   187-frame patches and aisfx's 100-frame blocks (as the samples they
   span), OpenL3's spectrogram windows.  A preparer holds parameters, no
   network, so it is cheap to hand to a worker.
2. **Front end and network** (the model's device), on batches that mix the
   items of many tracks: ``adapter.frontend(inputs, lengths)`` computes the
   features in the original's arithmetic, never under autocast;
   ``adapter.network(features)`` maps them to the item outputs, under
   bfloat16 autocast when asked (:mod:`core.models.precision`).
3. **Finish** (CPU): ``adapter.preparer.finish(plan, outputs)`` pools the
   items' outputs into one row per segment.

:func:`embed` runs the three in this process, one block at a time; it is
every adapter's ``embed``, so the CPU path and the batched pipeline compute
the same thing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator

import numpy as np

from core.models import precision as precisions

#: One piece of a block's items: ``inputs`` [shape=(k, *item_shape)] and
#: ``lengths`` [shape=(k,), int64] (None when every item is whole).
Part = tuple[np.ndarray, "np.ndarray | None"]


@dataclasses.dataclass
class Prepared:
    """What a preparer made of one block for one model.

    Attributes
    ----------
    n_items : int
        Items in all the parts together; 0 for a model with no device stage
        (the DSP baseline), whose rows are the plan.
    parts : iterable of Part
        The items in order, in pieces small enough to pass between processes
        (a long block of OpenL3 windows comes as a generator, so its
        spectrograms never sit in memory at once).  Items of one part share a
        shape; a ragged model right-pads the last axis with zeros and gives
        each item's real length.
    plan
        What ``finish`` needs to pool the outputs; small, picklable.
    """

    n_items: int
    parts: Iterable[Part]
    plan: Any


def single_part(inputs: np.ndarray, lengths: np.ndarray | None = None) -> list[Part]:
    """The parts of a block whose items are made at once."""
    return [(inputs, lengths)] if len(inputs) else []


def pad_ragged(pieces: list[np.ndarray], dtype=np.float32) -> Part:
    """1-D pieces as rows of one array, right-padded with zeros, and their lengths.

    Returns
    -------
    inputs : np.ndarray [shape=(len(pieces), max length), dtype=dtype]
    lengths : np.ndarray [shape=(len(pieces),), dtype=int64]
    """
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    inputs = np.zeros((len(pieces), int(lengths.max()) if len(pieces) else 0), dtype=dtype)
    for row, piece in zip(inputs, pieces):
        row[: len(piece)] = piece
    return inputs, lengths


def forward(adapter, inputs, lengths, precision: str = "fp32") -> dict:
    """Front end and network on one batch already on the adapter's device.

    Parameters
    ----------
    adapter
        A staged adapter.
    inputs : torch.Tensor [shape=(b, *item_shape)]
    lengths : torch.Tensor [shape=(b,), dtype=int64, on the CPU] or None
        Read on the host, so they never make the host wait for the device;
        a front end moves what it needs with ``non_blocking=True`` (a
        blocking copy would wait for every queued batch).
    precision : {"fp32", "bf16"}
        The network's; the front end always runs in its own arithmetic.

    Returns
    -------
    dict[str, torch.Tensor [shape=(b, ...), dtype=float32]]
        On the device.
    """
    import torch

    with torch.inference_mode():
        features = adapter.frontend(inputs, lengths)
        with precisions.network_precision(adapter.device, precision):
            out = adapter.network(features)
        return {name: value.float() for name, value in out.items()}


def batches(adapter, part: Part) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """The batches the adapter's device stage takes from one part, with the item rows each holds.

    Items of a model with ``equal_lengths`` (MERT, whose feature encoder's
    group norm would see padding) share a batch only with items of their
    own length, trimmed to it.

    Yields
    ------
    rows : np.ndarray [shape=(b,), dtype=int]
        Positions of the batch's items in the part.
    inputs : np.ndarray [shape=(b, *item_shape)]
    lengths : np.ndarray [shape=(b,)] or None
    """
    inputs, lengths = part
    size = max(1, int(adapter.batch_size))
    if adapter.equal_lengths and lengths is not None:
        for length in np.unique(lengths):
            same = np.flatnonzero(lengths == length)
            for start in range(0, len(same), size):
                rows = same[start : start + size]
                yield rows, inputs[rows, :length], lengths[rows]
        return
    for start in range(0, len(inputs), size):
        rows = np.arange(start, min(start + size, len(inputs)))
        yield rows, inputs[rows], None if lengths is None else lengths[rows]


def run_items(adapter, prepared: Prepared, precision: str = "fp32") -> dict[str, np.ndarray]:
    """Every item of one block through the device stage, in batches of ``adapter.batch_size``.

    Returns
    -------
    dict[str, np.ndarray [shape=(n_items, ...), dtype=float32]]
        Empty when the block has no items.
    """
    import torch

    outputs: dict[str, np.ndarray] = {}
    offset = 0
    for part in prepared.parts:
        for rows, inputs, lengths in batches(adapter, part):
            x = torch.from_numpy(np.ascontiguousarray(inputs)).to(adapter.device)
            n = None if lengths is None else torch.from_numpy(lengths)
            for name, value in forward(adapter, x, n, precision).items():
                value = value.cpu().numpy()
                if name not in outputs:
                    outputs[name] = np.zeros((prepared.n_items, *value.shape[1:]), dtype=np.float32)
                outputs[name][offset + rows] = value
        offset += len(part[0])
    return outputs


def embed(adapter, audio: np.ndarray, sr: int, segments: np.ndarray, offset_s: float = 0.0,
          precision: str = "fp32") -> dict[str, np.ndarray]:
    """``adapter.embed``: the three stages on one block, in this process (see :class:`core.models.base.Adapter`)."""
    prepared = adapter.preparer(audio, sr, segments, offset_s)
    return adapter.preparer.finish(prepared.plan, run_items(adapter, prepared, precision))


def verify_bf16(adapter, clips, segments_of) -> dict:
    """Compare an adapter's bfloat16 vectors with its float32 ones, segment by segment.

    The measurement behind each catalogue entry's ``bf16_cosine``
    (:mod:`core.models.precision`): the same items go through the device
    stage at both precisions, so only the network's arithmetic differs.

    Parameters
    ----------
    adapter
        A staged adapter.
    clips : iterable of (np.ndarray, int)
        Decoded mono audio at ``adapter.entry.input_dtype`` and its rate.
    segments_of : callable
        ``segments_of(duration_s) -> float64[n, 2]``, the grid to cut each clip on.

    Returns
    -------
    dict
        ``min_cosine`` over every segment of every space, ``segments``
        compared, and ``passes`` (some segments, all at ``precisions.BF16_MIN_COSINE`` or above).
    """
    worst, n = 1.0, 0
    for audio, sr in clips:
        segments = segments_of(len(audio) / sr)
        prepared = adapter.preparer(audio, sr, segments)
        same_items = dataclasses.replace(prepared, parts=list(prepared.parts))  # prepared once, run twice
        fp32, bf16 = (adapter.preparer.finish(prepared.plan, run_items(adapter, same_items, p))
                      for p in precisions.PRECISIONS)
        for space, rows in fp32.items():
            worst = min(worst, float(precisions.cosines(rows, bf16[space]).min()))
        n += len(segments)
    return {"min_cosine": worst, "segments": n, "passes": n > 0 and worst >= precisions.BF16_MIN_COSINE}
