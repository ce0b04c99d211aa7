"""The progress protocol of long computations: projections of large sets and search index builds.

``progress(done, total, step)`` counts ``done`` of ``total`` items of the
current step ("fitting UMAP on 50,000 points", then "placing 950,000 points
into the map").  A new ``step`` text starts a new count, so that a caller
can show each step's time left from its own rate: the command line with
tqdm, the app with ``st.progress``.  Extraction keeps its own
``progress(done, total, path)``, one call per file.
"""

from __future__ import annotations

from typing import Callable

ProgressFn = Callable[[int, int, str], None]


def describe(done: int, total: int, step: str, elapsed_s: float) -> str:
    """One line for a progress bar: the step, its count, and the step's time left at its own rate so far.

    The time left appears once the step has run a second and done
    something, since a rate from less is noise; a fit and the placing after
    it run at very different rates, hence one rate per step.
    """
    text = f"{step}: {done:,} of {total:,}"
    if 0 < done < total and elapsed_s >= 1:
        left = elapsed_s * (total - done) / done
        text += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
    return text
