"""Explore in a real browser: a click plays that segment and highlights it in the other view.

AppTest cannot see Vega: whether a selection made in one view reaches the
other is decided in the browser, so this drives ``streamlit run`` with
headless Chromium (Debian's ``chromium`` package; Playwright cannot download
its own browser here).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.demo import build
from core.extract import extract, read_metadata_csv
from core.store import Store
from tests.conftest import PROJECT_ROOT, import_noisy_copy, tone, tone_files
from tests.test_hostile import write_bomb

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(db: Path, cache: Path, timeout: float = 90.0, env: dict[str, str] | None = None
              ) -> tuple[subprocess.Popen, str]:
    """``streamlit run streamlit_app.py`` on a free localhost port, returned once it answers its health check.

    ``env`` adds settings of the app's (such as ``AEB_DRAW_CAP``) to those naming the store and the cache.
    """
    port = free_port()
    env = {**os.environ, "AEB_DB": str(db), "AEB_CACHE": str(cache), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "streamlit_app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"streamlit did not answer on port {port} within {timeout:.0f} s")


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("no Chromium at /usr/bin/chromium: `apt-get install chromium` to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    folder = tmp_path_factory.mktemp("demo")
    csv = build(folder)
    db = tmp_path_factory.mktemp("db") / "demo.duckdb"
    extract([folder], ["dsp"], db=db, metadata=read_metadata_csv(csv, [folder]))
    import_noisy_copy(db)
    proc, url = start_app(db, tmp_path_factory.getbasetemp() / "aeb-cache")
    yield url, db
    proc.terminate()
    proc.wait(timeout=30)


def topmost_point(page, view, avoid: frozenset[str] = frozenset()) -> str:
    """The id of a point of ``view``, not in ``avoid``, that no other point covers, so that a click at its centre hits it."""
    for path in view.locator("path[aria-label]").all():
        box = path.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.getAttribute('aria-label')", [x, y])
        if hit == path.get_attribute("aria-label") and hit not in avoid:
            return hit
    raise AssertionError("every point of the view is covered by another or to be avoided")


def test_click_plays_that_segment_and_highlights_it_in_the_other_view(app):
    from playwright.sync_api import sync_playwright

    url, db = app
    segments = Store(db).segments_frame().set_index("segment_id")
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/Explore")
        views = page.locator("[data-testid=stVegaLiteChart] g.mark-symbol")
        views.first.locator("path[aria-label]").first.wait_for(timeout=180_000)
        assert views.count() == 2
        assert page.locator("audio").count() == 0
        target = topmost_point(page, views.nth(0))
        box = views.nth(0).locator(f"path[aria-label='{target}']").bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

        page.locator("audio").first.wait_for(timeout=60_000)
        row = segments.loc[int(target)]
        caption = f"{row['start_s']:.2f}–{row['end_s']:.2f} s of"
        page.get_by_text(caption).first.wait_for(timeout=10_000)
        assert Path(row["path"]).name in page.locator("h3").first.inner_text()

        highlighted = [views.nth(v).locator("path[stroke='#111111']") for v in range(2)]
        assert [h.count() for h in highlighted] == [1, 1]
        assert highlighted[1].first.get_attribute("aria-label") == target
        assert float(views.nth(1).locator("path[aria-label]:not([stroke='#111111'])").first.get_attribute("opacity")) < 0.5
        browser.close()


@pytest.fixture
def page():
    """A Chromium page at 1400 × 1000, the window the app was tried in."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        yield browser.new_page(viewport={"width": 1400, "height": 1000})
        browser.close()


def open_explore(page, url: str):
    """Explore at 1400 × 1000, once its two maps are drawn; returns the views' mark groups."""
    page.goto(f"{url}/Explore")
    views = page.locator("[data-testid=stVegaLiteChart] g.mark-symbol")
    views.first.locator("path[aria-label]").first.wait_for(timeout=180_000)
    return views


def click_point(page, view) -> str:
    target = topmost_point(page, view)
    box = view.locator(f"path[aria-label='{target}']").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator("audio").first.wait_for(timeout=60_000)
    return target


def test_more_like_this_lands_on_the_clicked_segment(app, page):
    url, db = app
    segments = Store(db).segments_frame().set_index("segment_id")
    target = click_point(page, open_explore(page, url).nth(0))
    row = segments.loc[int(target)]
    page.get_by_role("button", name="More like this").click()
    page.wait_for_url(f"**/Search?segment={target}", timeout=60_000)
    name = f"{Path(row['path']).name} · {row['start_s']:.1f}–{row['end_s']:.1f} s"
    page.get_by_text(f"Query: {name}").wait_for(timeout=60_000)
    assert page.get_by_role("tab", name="More like this").get_attribute("aria-selected") == "true"
    page.get_by_text("Explore can colour every point by this query").wait_for(timeout=60_000)
    page.wait_for_function("() => document.querySelectorAll('audio').length >= 11", timeout=60_000)  # query + 10


def test_switching_segments_to_tracks_keeps_the_same_audio(app, page):
    from playwright.sync_api import expect

    url, db = app
    segments = Store(db).segments_frame().set_index("segment_id")
    target = click_point(page, open_explore(page, url).nth(0))
    name = Path(segments.loc[int(target), "path"]).name
    heading = page.locator("h3", has_text="▶")
    assert name in heading.first.inner_text()
    page.get_by_text("tracks (mean of segments)").click()
    page.get_by_text("Play the whole track from here").wait_for(timeout=60_000)
    expect(heading.first).to_have_text(f"▶ {name}", timeout=60_000)  # its track, not the one whose id was the segment's
    track = segments.loc[int(target), "track_duration_s"]
    page.get_by_text(f"0.00–{track:.2f} s of").first.wait_for(timeout=10_000)


def test_a_new_servers_first_visitor_on_a_deep_link_sees_the_apps_page_names(app, page, tmp_path):
    """Streamlit serves a first deep link from ``pages/`` the old way, naming the first page "streamlit app"."""
    from playwright.sync_api import expect

    _, db = app
    proc, url = start_app(db, tmp_path / "cache")  # a server no session has visited through its front page
    try:
        page.goto(f"{url}/Compare")
        nav = page.locator("[data-testid=stSidebarNav]")
        expect(nav).to_contain_text("🎧", timeout=60_000)
        assert nav.inner_text().split() == ["🎧", "Home", "📥", "Extract", "🗺️", "Explore", "⚖️", "Compare", "🔎", "Search"]
        expect(page.locator("h1").first).to_contain_text("Compare", timeout=60_000)
        assert page.url == f"{url}/Compare"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("path", ["", "Extract", "Explore", "Compare", "Search"])
def test_no_page_scrolls_sideways_at_1400_by_1000(app, path, page):
    url, _ = app
    page.goto(f"{url}/{path}")
    page.locator("h1").first.wait_for(timeout=120_000)
    if path in ("Explore", "Compare"):
        page.locator("[data-testid=stVegaLiteChart] svg, [data-testid=stVegaLiteChart] canvas").first.wait_for(
            timeout=180_000)
    if path == "Compare":
        page.get_by_text("Debiased linear CKA").first.wait_for(timeout=180_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000)
    page.wait_for_timeout(1_000)
    overflow = page.evaluate("""() => {
        const main = document.querySelector('[data-testid=stMain]');
        const right = main.getBoundingClientRect().right;
        const wide = [...document.querySelectorAll('[data-testid=stVegaLiteChart], [data-testid=stDataFrame]')]
            .filter(e => e.getBoundingClientRect().right > right + 1).length;
        return {page: document.documentElement.scrollWidth - window.innerWidth,
                main: main.scrollWidth - main.clientWidth, wide};
    }""")
    assert overflow == {"page": 0, "main": 0, "wide": 0}, overflow
    if not path:  # a deep link opened first falls back to the pages/ folder's own names (see streamlit_app.py)
        nav = page.locator("[data-testid=stSidebarNav]").inner_text()
        assert "Home" in nav and "streamlit app" not in nav


def test_a_zip_export_holds_the_selected_clips_with_their_durations(app, page):
    import io
    import zipfile

    import pandas as pd
    import soundfile as sf

    url, db = app
    segments = Store(db).segments_frame().set_index("segment_id")
    box = open_explore(page, url).nth(0).bounding_box()  # the points of view A: a box over its left half
    page.mouse.move(box["x"] - 2, box["y"] - 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] + 2, steps=8)
    page.mouse.up()
    heading = page.locator("h3", has_text="Selection:")
    heading.first.wait_for(timeout=60_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=60_000)
    with page.expect_download(timeout=120_000) as download:
        page.get_by_role("button", name="Clips (ZIP)").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    table = pd.read_csv(io.BytesIO(archive.read("segments.csv")))
    selected = int(heading.first.inner_text().split()[1].replace(",", ""))
    assert len(table) == selected and len(archive.namelist()) == selected + 1
    for _, row in table.iterrows():
        segment = segments[(segments["path"] == row["path"]) & (segments["start_s"] == row["start_s"])].iloc[0]
        expected = min(segment["end_s"], segment["track_duration_s"]) - segment["start_s"]
        assert sf.info(io.BytesIO(archive.read(row["clip"]))).duration == pytest.approx(expected, abs=1e-3)


# ---------------------------------------------------------------------------- zoom: a view larger than the drawing cap

DRAW_CAP = 50  # the demo's 294 segments are then six times more than a view draws


def centre_on_screen(locator) -> None:
    """Scroll ``locator`` to the middle of the window, clear of Streamlit's sticky header, which would take a drag or
    a click meant for a chart scrolled only "into view" under it."""
    locator.evaluate("e => e.scrollIntoView({block: 'center'})")


def overview_bins(page) -> tuple[np.ndarray, np.ndarray]:
    """The density overview's bins as drawn: their data edges and counts ``(x0, x1, y0, y1, count)`` (n, 5), read from
    the rects' labels, and their pixel boxes ``(left, right, bottom, top)`` (n, 4)."""
    rects = page.locator("[data-testid=stVegaLiteChart]").first.locator("g.mark-rect path[aria-label]")
    edges, pixels = [], []
    for rect in rects.all():
        fields = dict(part.split(": ") for part in rect.get_attribute("aria-label").replace("\u2212", "-").split("; "))
        edges.append([float(fields[k]) for k in ("x (A)", "x1", "y (A)", "y1", "count")])
        box = rect.bounding_box()
        pixels.append([box["x"], box["x"] + box["width"], box["y"] + box["height"], box["y"]])
    return np.array(edges), np.array(pixels)


def to_pixels(edges: np.ndarray, pixels: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Where the overview draws the points ``xy`` (n, 2): its two linear scales, fitted on the bins' edges."""
    out = np.empty_like(xy)
    for axis in range(2):
        data, drawn = edges[:, 2 * axis:2 * axis + 2].ravel(), pixels[:, 2 * axis:2 * axis + 2].ravel()
        slope, offset = np.polyfit(data, drawn, 1)
        out[:, axis] = offset + slope * xy[:, axis]
    return out


def zoom_around(page, xy: np.ndarray, seed: int, k: int) -> None:
    """Drag a square on the overview centred on point ``seed`` of ``xy`` (n, 2) holding about its ``k`` nearest points
    (the side falls midway between the k-th and the next), inside the drawn bins, and press "Zoom in"."""
    from playwright.sync_api import expect

    centre_on_screen(page.locator("[data-testid=stVegaLiteChart]").first)
    edges, pixels = overview_bins(page)
    at = to_pixels(edges, pixels, xy)
    reach = np.sort(np.abs(at - at[seed]).max(axis=1))
    half = (reach[k - 1] + reach[k]) / 2
    (left, top), (right, bottom) = at[seed] - half, at[seed] + half
    left, right = max(left, pixels[:, 0].min() + 1), min(right, pixels[:, 1].max() - 1)
    top, bottom = max(top, pixels[:, 3].min() + 1), min(bottom, pixels[:, 2].max() - 1)
    page.mouse.move(float(left), float(top))
    page.mouse.down()
    page.mouse.move(float(right), float(bottom), steps=8)
    page.mouse.up()
    button = page.get_by_role("button", name="Zoom in")
    expect(button).to_be_enabled(timeout=60_000)
    button.click()


def region_size(page, crumbs: str) -> int:
    """The count of points the breadcrumbs ``crumbs`` announce, once the page shows them."""
    caption = page.get_by_text(f"{crumbs} — ")
    caption.wait_for(timeout=120_000)
    return int(caption.inner_text().split(" — ")[1].split()[0].replace(",", ""))


def expect_overview_of(page, n: int) -> None:
    """Wait until the overview's bins count ``n`` points, i.e. the overview of the current region is drawn."""
    page.wait_for_function("""n => {
        const rects = document.querySelector('[data-testid=stVegaLiteChart]')
            ?.querySelectorAll('g.mark-rect path[aria-label]') ?? [];
        return [...rects].reduce((sum, r) => sum + Number(r.getAttribute('aria-label').split('count: ')[1]), 0) === n;
    }""", arg=n, timeout=120_000)


def test_two_zooms_reach_and_play_a_point_the_overview_did_not_draw(app, page, tmp_path):
    """The overview counts every point and each map draws those counts under its sample; two box zooms narrow the
    view A map to a region small enough to draw each of its points, one of which, not drawn before, plays when clicked;
    "Back" returns one level, and a box dragged on map B zooms by B's coordinates."""
    from playwright.sync_api import expect

    from core.reduce import cached_projection

    _, db = app
    proc, url = start_app(db, tmp_path / "cache", env={"AEB_DRAW_CAP": str(DRAW_CAP)})
    try:
        store = Store(db)
        segments = store.segments_frame().set_index("segment_id")
        views = open_explore(page, url)
        expect(views.nth(0).locator("path[aria-label]")).to_have_count(DRAW_CAP, timeout=120_000)
        expect_overview_of(page, len(segments))
        counts_under_sample = page.locator("[data-testid=stVegaLiteChart]").last.locator(
            "g.mark-rect.role-mark:not([class*=brush])")
        expect(counts_under_sample).to_have_count(2)  # every point counted in grey under each view's sample
        assert all(group.locator("path").count() > 0 for group in counts_under_sample.all())
        sampled = frozenset(views.nth(0).locator("path[aria-label]").evaluate_all(
            "paths => paths.map(p => p.getAttribute('aria-label'))"))
        assert len(sampled) == DRAW_CAP

        projection = cached_projection(store, "dsp", "pca")  # view A's map, as the page stored it
        ids, xy = np.asarray(projection["ids"]), np.asarray(projection["xy"])
        unseen = np.flatnonzero(~np.isin(ids.astype(str), list(sampled)))
        crowd = np.sort(np.abs(xy[unseen, None] - xy[None]).max(axis=2), axis=1)[:, 2 * DRAW_CAP]
        seed = int(unseen[np.argmin(crowd)])  # an undrawn point in the densest part of the map

        zoom_around(page, xy, seed, 2 * DRAW_CAP)
        first = region_size(page, "whole map › zoom 1")
        assert DRAW_CAP < first < len(segments)
        expect_overview_of(page, first)

        zoom_around(page, xy, seed, DRAW_CAP // 2)
        second = region_size(page, "whole map › zoom 1 › zoom 2")
        assert 0 < second <= DRAW_CAP
        for v in range(2):  # each point of the region drawn individually, in both views, and no overview left
            expect(views.nth(v).locator("path[aria-label]")).to_have_count(second, timeout=120_000)
        expect(page.locator("g.mark-rect path[aria-label]")).to_have_count(0)
        expect(counts_under_sample).to_have_count(0)

        centre_on_screen(views.nth(0))
        target = topmost_point(page, views.nth(0), avoid=sampled)
        box = views.nth(0).locator(f"path[aria-label='{target}']").bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.locator("audio").first.wait_for(timeout=60_000)
        row = segments.loc[int(target)]
        page.get_by_text(f"{row['start_s']:.2f}–{row['end_s']:.2f} s of").first.wait_for(timeout=60_000)
        assert Path(row["path"]).name in page.locator("h3", has_text="▶").first.inner_text()

        page.get_by_role("button", name="Back").click()
        assert region_size(page, "whole map › zoom 1") == first
        expect_overview_of(page, first)
        expect(page.get_by_text("zoom 2")).to_have_count(0)

        # A box dragged on map B zooms too, by B's coordinates: the middle of its drawn points.
        centre_on_screen(views.nth(1))
        spread = views.nth(1).bounding_box()
        page.mouse.move(spread["x"] + spread["width"] * 0.2, spread["y"] + spread["height"] * 0.2)
        page.mouse.down()
        page.mouse.move(spread["x"] + spread["width"] * 0.8, spread["y"] + spread["height"] * 0.8, steps=8)
        page.mouse.up()
        inside = [views.nth(v).locator("path[stroke='#111111']") for v in range(2)]
        inside[0].first.wait_for(timeout=60_000)  # B's box highlights the same points in A
        assert inside[0].count() == inside[1].count() > 0
        button = page.get_by_role("button", name="Zoom to the box")
        expect(button).to_be_enabled(timeout=60_000)
        button.click()
        assert 0 < region_size(page, "whole map › zoom 1 › zoom 2 (B)") < first
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------- hostile visitors of a shared app


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A shared-mode server with small upload limits over a store of four tones: (url, server, store, the tmp root).

    Streamlit's own limit (2 MB) is above the app's (1 MB), so that a file in
    between reaches the page's own check; the quota (1 MB) is small enough
    for a visitor's second upload to pass it; the per-file decode budget
    (5e7 sample values) refuses the bomb on Extract as the query budget does
    on Search.
    """
    if not CHROMIUM.exists():
        pytest.skip("no Chromium at /usr/bin/chromium: `apt-get install chromium` to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    base = tmp_path_factory.mktemp("shared")
    db = base / "shared.duckdb"
    extract([tone_files(base / "tones", 4, 3.0)], ["dsp"], db=db)
    proc, url = start_app(db, base / "cache", env={
        "AEB_SHARED_MODE": "1", "AEB_AUDIO_ROOT": str(base / "tones"), "AEB_MAX_UPLOAD_MB": "1",
        "AEB_UPLOAD_QUOTA_MB": "1", "AEB_MAX_SAMPLES": "5e7", "STREAMLIT_SERVER_MAX_UPLOAD_SIZE": "2"})
    yield url, proc, Store(db), base
    proc.terminate()
    proc.wait(timeout=30)


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def assert_no_traceback_nor_path(page, base: Path) -> None:
    text = page.content()
    assert "Traceback" not in text and 'File "' not in text
    assert str(base) not in text and str(PROJECT_ROOT) not in text


def test_hostile_uploads_on_search_get_one_line_each(shared, page, tmp_path):
    """Oversize, a FLAC bomb and a quota overrun through Search's own uploader; the server's memory stays put.

    An upload named ``..`` cannot be made by a browser (it sends a file's base
    name); ``test_visitors`` gives one to :func:`ui.save_upload` directly.
    """
    from playwright.sync_api import expect

    url, proc, _, base = shared
    oversize, bomb, beyond = tmp_path / "oversize.wav", tmp_path / "bomb.flac", tmp_path / "beyond.wav"
    sf.write(oversize, np.random.default_rng(0).uniform(-0.5, 0.5, 800_000), 22050, "PCM_16")  # 1.6 MB
    write_bomb(bomb, seconds=64)
    frames = (2**20 - bomb.stat().st_size) // 2 + 1000  # under 1 MB itself, over the quota with the bomb kept
    sf.write(beyond, np.random.default_rng(1).uniform(-0.5, 0.5, frames), 22050, "PCM_16")
    page.goto(f"{url}/Search")
    page.get_by_role("tab", name="Upload a clip").click()
    uploader = page.locator("[data-testid=stFileUploader] input[type=file]")
    uploader.wait_for(state="attached", timeout=120_000)
    errors = page.locator("[data-testid=stAlertContentError]")

    uploader.set_input_files(str(oversize))
    expect(errors.first).to_have_text("oversize.wav is larger than 1 MB and was skipped.", timeout=60_000)

    before = peak_rss_mb(proc.pid)
    uploader.set_input_files(str(bomb))
    expect(errors.first).to_have_text("bomb.flac is too long for a query clip here: at most 5,760,000 sample values "
                                      "(60 s of 48 kHz stereo). Upload a shorter excerpt.", timeout=60_000)
    assert errors.count() == 1 and "\n" not in errors.first.inner_text().strip()
    assert peak_rss_mb(proc.pid) - before < 500
    assert_no_traceback_nor_path(page, base)

    uploader.set_input_files(str(beyond))  # the bomb, refused as a query, is kept with this visitor until it leaves
    expect(errors.first).to_contain_text("The uploads of this shared app are full", timeout=60_000)
    assert_no_traceback_nor_path(page, base)


def test_a_bomb_uploaded_for_extraction_fails_alone(shared, page, tmp_path):
    """Extract stores the good file uploaded beside a bomb, lists the bomb as failed, and loses nothing stored."""
    from playwright.sync_api import expect

    url, _, store, base = shared
    bomb, good = tmp_path / "bomb.flac", tmp_path / "good.wav"
    write_bomb(bomb, seconds=64)
    sf.write(good, tone(330, 4.0), 22050)
    tracks = set(store.tracks_frame()["path"])
    page.goto(f"{url}/Extract")
    page.get_by_text("Upload files").click()
    uploader = page.locator("[data-testid=stFileUploader]")
    uploader.locator("input[type=file]").set_input_files([str(bomb), str(good)], timeout=60_000)
    for name in ("bomb.flac", "good.wav"):
        expect(uploader).to_contain_text(name, timeout=60_000)
    run = page.get_by_role("button", name="Run extraction")
    expect(run).to_be_enabled(timeout=60_000)
    run.click()
    page.get_by_text("1 stored, 0 up to date, 1 failed").wait_for(timeout=120_000)
    failures = page.locator("[data-testid=stDataFrame]").last
    expect(failures).to_contain_text("bomb.flac", timeout=60_000)

    now = set(store.tracks_frame()["path"])
    assert tracks < now and [Path(p).name for p in now - tracks] == ["good.wav"]
    failed = store.failures()
    assert [Path(p).name for p in failed["path"]] == ["bomb.flac"] and "exceed" in failed["message"].iloc[0]
    assert_no_traceback_nor_path(page, base)
