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
