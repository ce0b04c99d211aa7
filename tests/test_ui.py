"""The pages' shared glue (``ui.py``) where it holds logic of its own: on-screen names."""

from __future__ import annotations

import ui
from core.reduce import METHODS
from core.spaces import LEVELS


def test_every_reduction_and_level_has_a_name_on_screen():
    assert set(ui.METHOD_LABELS) == set(METHODS)
    assert set(ui.LEVEL_LABELS) == set(LEVELS)
    assert ui.span_label("a.wav", 3, 5.96) == "a.wav · 3.0–6.0 s"
