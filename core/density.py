"""Density overview and zoom regions for maps too large to draw point by point.

A browser chart stays responsive up to a few thousand marks; a collection of a million
segments is shown instead as 2-D bins counted on the server, and the user narrows the view
box by box until the region holds few enough points to draw each one.  These functions are
plain numpy so that the page only draws what they return.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.explore import DISPLAY_CAP

#: Bins per axis of the overview; 60 x 60 rectangles draw in well under a second.
BINS = 60


def draw_cap() -> int:
    """Points drawn individually before the view turns to density (``AEB_DRAW_CAP``)."""
    value = os.environ.get("AEB_DRAW_CAP", "")
    return int(value) if value.strip() else DISPLAY_CAP


@dataclass(frozen=True)
class Box:
    """A closed region ``[x0, x1] x [y0, y1]`` of one view's projected plane (``view`` 0 is map A, 1 map B)."""

    x0: float
    x1: float
    y0: float
    y1: float
    view: int = 0

    @classmethod
    def around(cls, xy: np.ndarray) -> "Box":
        """Smallest box holding every point of ``xy`` (shape (n, 2))."""
        return cls(float(xy[:, 0].min()), float(xy[:, 0].max()), float(xy[:, 1].min()), float(xy[:, 1].max()))

    @classmethod
    def dragged(cls, selection: dict | None) -> "Box | None":
        """The box a chart's interval selection spans, in the view its fields name (``x1``/``y1``: map B).

        ``selection`` is Streamlit's ``event.selection`` of the overview (its
        ``zoom`` box is drawn on map A's coordinates) or of the linked maps
        (``brush0``, ``brush1``); the first box found counts.
        """
        for value in (selection or {}).values():
            xs = [field for field in value if field.startswith("x")] if isinstance(value, dict) else []
            if len(xs) == 1 and xs[0][1:].isdigit() and f"y{xs[0][1:]}" in value:
                (xa, xb), (ya, yb) = value[xs[0]], value[f"y{xs[0][1:]}"]
                return cls(float(min(xa, xb)), float(max(xa, xb)), float(min(ya, yb)), float(max(ya, yb)),
                           int(xs[0][1:]))
        return None

    def splittable(self) -> bool:
        """Whether binning can separate points inside: a box with no width or height at float
        resolution (all points coincident, e.g. silent segments) cannot be narrowed further."""
        return bool(np.nextafter(self.x0, np.inf) < self.x1 or np.nextafter(self.y0, np.inf) < self.y1)


def region_mask(xy: np.ndarray, box: Box) -> np.ndarray:
    """Boolean mask (n,) of the points of ``xy`` (n, 2) inside ``box``, edges included."""
    x, y = xy[:, 0], xy[:, 1]
    return (x >= box.x0) & (x <= box.x1) & (y >= box.y0) & (y <= box.y1)


def bin_points(xy: np.ndarray, box: Box, bins: int = BINS, classes: np.ndarray | None = None) -> pd.DataFrame:
    """Count the points of ``xy`` (n, 2) lying in ``box`` on a ``bins`` x ``bins`` grid.

    Returns one row per non-empty bin: its edges (``x0, x1, y0, y1``) for Altair's
    ``mark_rect``, ``count``, and, when ``classes`` (n,) is given, ``majority``, the most
    frequent class in the bin, so the overview can be coloured like the point chart.
    Points outside ``box`` are not counted.
    """
    inside = region_mask(xy, box)
    pts = xy[inside]
    xs = np.linspace(box.x0, box.x1 if box.x1 > box.x0 else box.x0 + 1, bins + 1)
    ys = np.linspace(box.y0, box.y1 if box.y1 > box.y0 else box.y0 + 1, bins + 1)
    cell = _bin_of(pts[:, 0], xs) * bins + _bin_of(pts[:, 1], ys)
    counts = np.bincount(cell, minlength=bins * bins)
    occupied = np.flatnonzero(counts)
    frame = pd.DataFrame({"x0": xs[occupied // bins], "x1": xs[occupied // bins + 1],
                          "y0": ys[occupied % bins], "y1": ys[occupied % bins + 1],
                          "count": counts[occupied]})
    if classes is not None:
        codes, names = pd.factorize(pd.Series(np.asarray(classes)[inside]).astype(str))
        per_class = np.bincount(cell * len(names) + codes, minlength=bins * bins * len(names)).reshape(-1, len(names))
        frame["majority"] = np.asarray(names)[per_class[occupied].argmax(axis=1)]
    return frame


def _bin_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the bin of ``edges`` (evenly spaced) holding each value, the last bin closed.

    Computed from the spacing, then moved by one where rounding put a value
    across an edge, as ``np.histogram`` does for even bins: a binary search of
    the edges cost a million points 0.1 s on every page load.
    """
    last = len(edges) - 2
    index = np.clip(((values - edges[0]) * ((last + 1) / (edges[-1] - edges[0]))).astype(np.intp), 0, last)
    index[values < edges[index]] -= 1
    index[(values >= edges[index + 1]) & (index < last)] += 1
    return np.clip(index, 0, last)


def view_densities(frame: pd.DataFrame, keep: np.ndarray, n_views: int, bins: int = BINS) -> pd.DataFrame:
    """Every kept point counted in each view's own coordinates: the layer a drawn sample sits on.

    The sample shows where points are only as far as it reaches; the counts
    under it show every point, in every view, so a dense region the sample
    thinned out still reads as dense.

    Parameters
    ----------
    frame : pd.DataFrame
        The linked frame: ``x{i}``, ``y{i}`` for each view ``i``.
    keep : np.ndarray [shape=(len(frame),), dtype=bool]
        The points shown (filters and zoom region).

    Returns
    -------
    pd.DataFrame
        One row per non-empty bin of each view: ``view``, the edges ``left,
        right, bottom, top`` and ``count``.
    """
    parts = []
    for view in range(n_views):
        xy = frame[[f"x{view}", f"y{view}"]].to_numpy(dtype=np.float64)[keep]
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy):
            cells = bin_points(xy, Box.around(xy), bins)
            parts.append(cells.rename(columns={"x0": "left", "x1": "right", "y0": "bottom", "y1": "top"})
                         .assign(view=view))
    columns = ["view", "left", "right", "bottom", "top", "count"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


@dataclass
class ZoomStack:
    """The boxes the user zoomed through, outermost first; the last one is the current view.

    Kept in the page's session state so breadcrumbs and "back" need no recomputation.
    """

    boxes: list[Box] = field(default_factory=list)

    def push(self, box: Box) -> None:
        self.boxes.append(box)

    def back(self) -> Box | None:
        """Leave the current region; returns the region now shown (None: the whole map)."""
        if self.boxes:
            self.boxes.pop()
        return self.current

    def to_level(self, level: int) -> None:
        """Jump to breadcrumb ``level`` (0: the whole map)."""
        del self.boxes[level:]

    @property
    def current(self) -> Box | None:
        return self.boxes[-1] if self.boxes else None

    def mask(self, *views: np.ndarray) -> np.ndarray:
        """Points (n,) of the current region; every level narrows the previous one.

        ``views`` holds each map's coordinates (n, 2), map A first: a box
        dragged on map B narrows by B's coordinates, so a cluster that only B
        separates can be zoomed into there.
        """
        keep = np.ones(len(views[0]), dtype=bool)
        for box in self.boxes:
            keep &= region_mask(views[box.view], box)
        return keep
