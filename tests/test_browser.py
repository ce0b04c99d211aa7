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

import pytest

from core.demo import build
from core.extract import extract, read_metadata_csv
from core.store import Store
from tests.conftest import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(db: Path, cache: Path, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """``streamlit run streamlit_app.py`` on a free localhost port, returned once it answers its health check."""
    port = free_port()
    env = {**os.environ, "AEB_DB": str(db), "AEB_CACHE": str(cache)}
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
    proc, url = start_app(db, tmp_path_factory.getbasetemp() / "aeb-cache")
    yield url, db
    proc.terminate()
    proc.wait(timeout=30)


def topmost_point(page, view) -> str:
    """The id of a point of ``view`` that no other point covers, so that a click at its centre hits it."""
    for path in view.locator("path[aria-label]").all():
        box = path.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.getAttribute('aria-label')", [x, y])
        if hit == path.get_attribute("aria-label"):
            return hit
    raise AssertionError("every point of the view is covered by another")


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
