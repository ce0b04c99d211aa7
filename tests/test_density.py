"""Density overview, region filter and zoom stack behind Explore at any size."""

import numpy as np

from core.density import Box, ZoomStack, bin_points, draw_cap, region_mask


def test_bins_count_every_point_once_and_name_the_majority_class():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(5_000, 2))
    classes = np.where(xy[:, 0] > 0, "right", "left")
    bins = bin_points(xy, Box.around(xy), bins=20, classes=classes)
    assert bins["count"].sum() == len(xy)
    assert (bins["count"] > 0).all()
    # every bin wholly right of zero is "right"; every bin wholly left of zero is "left"
    assert (bins.loc[bins["x0"] >= 0, "majority"] == "right").all()
    assert (bins.loc[bins["x1"] <= 0, "majority"] == "left").all()


def test_majority_of_a_mixed_bin():
    xy = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, 0.2], [10.0, 10.0]])
    bins = bin_points(xy, Box.around(xy), bins=2, classes=np.array(["a", "b", "b", "c"]))
    assert sorted(bins["count"]) == [1, 3]
    assert bins.set_index("count").loc[3, "majority"] == "b"
    assert bins.set_index("count").loc[1, "majority"] == "c"


def test_bins_ignore_points_outside_the_box():
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    bins = bin_points(xy, Box(0, 1, 0, 1), bins=4)
    assert bins["count"].sum() == 2


def test_region_mask_includes_edges():
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [1.0001, 0.5], [0.5, -0.1]])
    assert region_mask(xy, Box(0, 1, 0, 1)).tolist() == [True, True, False, False]


def test_zoom_stack_narrows_goes_back_and_jumps_to_a_breadcrumb():
    xy = np.array([[0.0, 0.0], [2.0, 2.0], [3.0, 3.0], [9.0, 9.0]])
    stack = ZoomStack()
    assert stack.current is None and stack.mask(xy).all()
    stack.push(Box(0, 5, 0, 5))
    stack.push(Box(1, 10, 1, 10))          # intersected with the level above
    assert stack.mask(xy).tolist() == [False, True, True, False]
    assert stack.back() == Box(0, 5, 0, 5)
    assert stack.mask(xy).tolist() == [True, True, True, False]
    stack.push(Box(2, 3, 2, 3))
    stack.to_level(0)
    assert stack.boxes == [] and stack.back() is None


def test_a_box_on_map_b_narrows_by_b_coordinates_and_each_level_by_its_own_map():
    a = np.array([[0.0, 0.0], [2.0, 2.0], [3.0, 3.0], [9.0, 9.0]])
    b = np.array([[5.0, 5.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    stack = ZoomStack([Box(0, 5, 0, 5), Box(4, 6, 4, 6, view=1)])
    assert stack.mask(a, b).tolist() == [True, False, True, False]


def test_the_dragged_box_is_read_from_whichever_chart_and_map_it_was_drawn_on():
    assert Box.dragged({"zoom": {"x0": [3, 1], "y0": [0, 2]}}) == Box(1, 3, 0, 2)  # the overview: map A
    assert Box.dragged({"pick": [{"id": 4}], "brush0": {}, "brush1": {"x1": [1, 2], "y1": [5, 4]}}) == Box(1, 2, 4, 5, 1)
    assert Box.dragged({"pick": [], "brush0": {}, "brush1": {}}) is None
    assert Box.dragged(None) is None


def test_coincident_points_cannot_be_split():
    xy = np.full((100, 2), 0.25)
    assert not Box.around(xy).splittable()
    assert Box(0, 1, 0, 0).splittable()
    bins = bin_points(xy, Box.around(xy))
    assert bins["count"].tolist() == [100]


def test_draw_cap_setting(monkeypatch):
    monkeypatch.setenv("AEB_DRAW_CAP", "250")
    assert draw_cap() == 250
    monkeypatch.delenv("AEB_DRAW_CAP")
    assert draw_cap() > 0


def test_any_point_of_a_million_is_reached_in_three_zooms_with_the_default_cap(monkeypatch):
    """By construction: 1,000 tight clusters of 1,000 points (a track each), 100 spread points and a heap of
    14,900 on one spot; each zoom takes the overview bin holding the target, as a box drawn around it, until the
    region is drawable or its points cannot be told apart (the page then lists them).  A dragged box always has an
    area, so only the points' own extent can say that zooming further is useless."""
    monkeypatch.delenv("AEB_DRAW_CAP", raising=False)
    cap = draw_cap()
    rng = np.random.default_rng(1)
    centres = rng.uniform(-50, 50, size=(1_000, 2))
    xy = (np.repeat(centres, 1_000, axis=0) + rng.normal(scale=0.3, size=(1_000_000, 2))).astype(np.float32)
    xy[:100] = rng.uniform(-60, 60, size=(100, 2))
    xy[100:15_000] = xy[100]               # silent segments on one spot, more than the cap
    targets = np.concatenate([np.arange(0, 100, 10), [100, 14_999], rng.integers(15_000, len(xy), 20)])
    for target in targets:
        stack, zooms = ZoomStack(), 0
        while True:
            keep = stack.mask(xy)
            region = stack.current or Box.around(xy)
            if keep.sum() <= cap or not Box.around(xy[keep]).splittable():  # drawn, or the page lists the heap
                break
            bins = bin_points(xy[keep], region)
            px, py = xy[target]
            hit = bins[(bins.x0 <= px) & (px <= bins.x1) & (bins.y0 <= py) & (py <= bins.y1)].iloc[0]
            stack.push(Box(hit.x0, hit.x1, hit.y0, hit.y1))
            zooms += 1
        assert stack.mask(xy)[target], target
        assert zooms <= 3, (target, zooms)


def test_bins_agree_with_numpy_histogram_on_edges_and_rounding():
    rng = np.random.default_rng(3)
    xy = np.concatenate([rng.normal(size=(20_000, 2)), np.linspace(-1, 1, 61)[:, None].repeat(2, axis=1)])
    box = Box(-1.0, 1.0, -1.0, 1.0)
    inside = xy[region_mask(xy, box)]
    expected, _, _ = np.histogram2d(inside[:, 0], inside[:, 1], bins=60, range=[[-1, 1], [-1, 1]])
    got = np.zeros((60, 60))
    bins = bin_points(xy, box, bins=60)
    edges = np.linspace(-1, 1, 61)
    got[np.searchsorted(edges, bins["x0"]), np.searchsorted(edges, bins["y0"])] = bins["count"]
    assert (got == expected).all()  # points on an edge (the 61 diagonal ones among them) go where numpy puts them
