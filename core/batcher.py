"""The device side of extraction: one model's items from many tracks in full batches, and their outputs back.

Items arrive in parts (:mod:`core.workers`), each labelled with the block
(``ticket``) and the positions in it they hold.  A part is copied to the
device as soon as it arrives (asynchronously, from pinned memory), and a
batch is launched whenever ``batch_size`` items wait, so that the device
never waits on one track's end.  Launches are asynchronous too: the outputs
travel back into pinned memory behind a CUDA event, and :meth:`finished`
hands them over only once the event has passed, while the next batches are
already queued on the device.  On a CPU everything is done in the call.

Items of a model with ``equal_lengths`` (MERT) are grouped by length; so that
odd lengths (the tails of tracks) do not pile up, the largest group is sent
part-full whenever more than :data:`BACKLOG` batches of items wait.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Iterator

import numpy as np

from core.models import stages
from core.workers import reason

#: Most items waiting in a model's groups, in batches, before one is sent part-full.
BACKLOG = 4


@dataclasses.dataclass
class _Waiting:
    ticket: object
    positions: np.ndarray
    inputs: object  # on the device
    lengths: object  # on the CPU, or None


@dataclasses.dataclass
class _Running:
    event: object  # a CUDA event, or None on a CPU
    outputs: dict | None  # on the host once the event has passed
    slots: list  # (ticket, positions, first row in the batch)
    error: str | None = None


class Batcher:
    """One model's device stage over the items of many tracks.

    Parameters
    ----------
    adapter
        A staged adapter (:mod:`core.models.stages`).
    precision : {"fp32", "bf16"}
        The network's (see :mod:`core.models.precision`).
    batch_size : int
        Items per forward pass.
    """

    def __init__(self, adapter, precision: str, batch_size: int):
        import torch

        self.adapter, self.precision, self.batch_size = adapter, precision, max(1, int(batch_size))
        self.device = torch.device(adapter.device)
        self.asynchronous = self.device.type == "cuda"
        self.groups: dict[object, collections.deque[_Waiting]] = {}
        self.waiting = 0
        self.running: collections.deque[_Running] = collections.deque()
        #: Seconds this process spent launching batches and waiting for their outputs.
        self.seconds = 0.0
        self.items = 0

    def add(self, ticket, positions: np.ndarray, inputs, lengths) -> None:
        """Take items (a part) and launch every batch that is full.

        Parameters
        ----------
        ticket
            What the outputs will be handed back with (the block).
        positions : np.ndarray [shape=(k,), dtype=int]
            Where the items lie in the ticket's items.
        inputs : torch.Tensor [shape=(k, *item_shape)]
            On the CPU (pinned for a GPU).
        lengths : torch.Tensor [shape=(k,), dtype=int64] or None
        """
        import torch

        x = inputs.to(self.device, non_blocking=True)
        if self.adapter.equal_lengths and lengths is not None:
            for length in np.unique(lengths.numpy()):
                rows = np.flatnonzero(lengths.numpy() == length)
                picked = torch.from_numpy(rows).to(self.device, non_blocking=True)
                self._queue(int(length), _Waiting(ticket, positions[rows], x[picked, :length], lengths[rows]))
        else:
            self._queue(None, _Waiting(ticket, positions, x, lengths))

    def _queue(self, group: object, waiting: _Waiting) -> None:
        queue = self.groups.setdefault(group, collections.deque())
        queue.append(waiting)
        self.waiting += len(waiting.positions)
        while sum(len(w.positions) for w in queue) >= self.batch_size:
            self._launch(queue)
        if self.waiting > BACKLOG * self.batch_size:
            self._launch(max(self.groups.values(), key=lambda q: sum(len(w.positions) for w in q)))

    def flush(self) -> None:
        """Launch whatever waits, in part-full batches (at the end of a run)."""
        for queue in self.groups.values():
            while queue:
                self._launch(queue)

    def _launch(self, queue: collections.deque) -> None:
        import torch

        t0 = time.perf_counter()
        taken: list[_Waiting] = []
        room = self.batch_size
        while queue and room:
            head = queue[0]
            if len(head.positions) <= room:
                taken.append(queue.popleft())
            else:  # split the part: the rest waits for the next batch
                cut = _Waiting(head.ticket, head.positions[:room], head.inputs[:room],
                               None if head.lengths is None else head.lengths[:room])
                queue[0] = _Waiting(head.ticket, head.positions[room:], head.inputs[room:],
                                    None if head.lengths is None else head.lengths[room:])
                taken.append(cut)
            room = self.batch_size - sum(len(w.positions) for w in taken)
        n = sum(len(w.positions) for w in taken)
        self.waiting -= n
        self.items += n
        slots, first = [], 0
        for w in taken:
            slots.append((w.ticket, w.positions, first))
            first += len(w.positions)
        running = _Running(None, None, slots)
        try:
            width = max(w.inputs.shape[-1] for w in taken)  # ragged items: right-pad to the widest
            x = torch.cat([w.inputs if w.inputs.shape[-1] == width else
                           torch.nn.functional.pad(w.inputs, (0, width - w.inputs.shape[-1])) for w in taken])
            lengths = None if taken[0].lengths is None else torch.cat([w.lengths for w in taken])
            out = stages.forward(self.adapter, x, lengths, self.precision)
            running.outputs = {name: value.to("cpu", non_blocking=self.asynchronous) for name, value in out.items()}
            if self.asynchronous:
                running.event = torch.cuda.Event()
                running.event.record()
        except Exception as exc:  # a batch that cannot run (out of memory) fails its blocks, not the run
            running.error = _device_reason(exc, self.batch_size)
        self.running.append(running)
        self.seconds += time.perf_counter() - t0

    def finished(self, wait: bool = False) -> Iterator[tuple[object, np.ndarray, dict | None, str | None]]:
        """The outputs of batches that are done, oldest first.

        Parameters
        ----------
        wait : bool
            Wait for every launched batch (at the end of a run).

        Yields
        ------
        ticket, positions, outputs, error
            ``outputs`` maps each output name to ``np.ndarray [shape=(len(positions), ...)]``;
            None with a one-line ``error`` when the batch failed.
        """
        while self.running and (wait or self.running[0].event is None or self.running[0].event.query()):
            running = self.running.popleft()
            if running.event is not None:
                t0 = time.perf_counter()
                running.event.synchronize()
                self.seconds += time.perf_counter() - t0
            host = None if running.error else {name: value.numpy() for name, value in running.outputs.items()}
            for ticket, positions, first in running.slots:
                rows = slice(first, first + len(positions))
                yield ticket, positions, None if host is None else {k: v[rows] for k, v in host.items()}, running.error


def _device_reason(exc: Exception, batch_size: int) -> str:
    if "out of memory" in str(exc).lower():
        return f"out of device memory with batches of {batch_size} items; use a smaller --batch-size"
    return reason(exc)
