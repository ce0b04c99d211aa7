"""Explore in headless Chromium: time to the first chart, per zoom and per click, at 10k to 1M segments.

Each size gets a synthetic store (1,000 tracks, 32-D vectors, a metadata
column with a long tail) whose PCA and STD-PCA projections are already
stored, because the target is about a page opened on cached projections.
``streamlit run`` serves it; Playwright drives Debian's ``/usr/bin/chromium``.

* first chart: from ``page.goto`` to the chart's canvas (or SVG) being
  drawn, on a cold server process and again on a warm one;
* click: from the mouse click on a point to the highlight being painted
  (Vega, in the browser) and to the segment's ``<audio>`` player (the
  Streamlit rerun).
* zoom, when a view holds more points than the drawing cap (the density
  overview): a box of ``--zoom-side`` of the overview's width and height is
  dragged around the densest spot of the map, the worst case, and "Zoom in"
  pressed, until the region holds no more than the cap; each zoom is timed
  from the press to the new region's overview and drawn sample (or, at the
  end, its every point) being painted, and the clicks are then taken on the
  zoomed region's individually drawn points.

Every step is also a row of a second table, with the issue's target and the
1-minute load beside it, and the server's share: the script's wall time per
rerun (from Streamlit's ``new_session`` to ``script_finished`` messages, as
the browser receives them) and the server process's CPU seconds, which
depend less on how busy the machine is.

    python bench/bench_explore.py [--sizes 10000 100000 1000000] [--all] [--zoom-side 0.25]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import density as dn  # noqa: E402
from core.exchange import vector_column  # noqa: E402
from core.reduce import cached_projection, canonical_params  # noqa: E402
from core.store import Provenance, Store  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TRACKS = 1_000
#: The issue's targets, in seconds, by step.
TARGETS = {"first chart, warm": 3.0, "zoom": 1.5, "click → highlight": 0.5, "click → player": 1.5}


def build_store(folder: Path, n: int, dim: int = 32, seed: int = 0) -> Path:
    """A store of ``n`` segments over ``TRACKS`` playable files, with PCA and STD-PCA already stored."""
    rng = np.random.default_rng(seed)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 22050) / 22050)).astype(np.float32)
    audio = folder / "audio"
    audio.mkdir(parents=True)
    sf.write(audio / "tone.wav", tone, 22050)
    for t in range(TRACKS):  # one recording under many names: every segment is playable
        (audio / f"t{t:04d}.wav").symlink_to(audio / "tone.wav")
    per = int(np.ceil(n / TRACKS))
    track = np.arange(n) // per
    idx = np.arange(n) % per
    kinds = np.array([f"kind{k:02d}" for k in range(40)])
    kind_of_track = kinds[np.minimum(rng.zipf(1.6, TRACKS) - 1, 39)]
    frame = pd.DataFrame({"path": [str(audio / f"t{t:04d}.wav") for t in track], "start_s": idx * 3.0,
                          "end_s": idx * 3.0 + 3.0, "kind": kind_of_track[track]})
    centres = rng.normal(size=(40, dim)) * 3
    vectors = (centres[track % 40] + rng.normal(size=(n, dim))).astype(np.float32)
    db = folder / "bench.duckdb"
    store = Store(db)
    store.add_imported(Provenance("bench", "bench", dim, "1", "", source="imported"),
                       pa.Table.from_pandas(frame).append_column("vector", vector_column(vectors)))
    ids, x = store.vectors("bench")
    version = store.data_version("bench")
    for method in ("pca", "std-pca"):
        xy = (x[:, :2] if method == "pca" else x[:, 2:4]).astype(np.float32)
        store.put_projection("bench", "segment", method, json.dumps(canonical_params(method), sort_keys=True), version,
                             ids, xy, 0.0, {"params": {}, "explained_variance": [0.1, 0.05]})
    return db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(settings: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``streamlit run`` under the ``AEB_*`` ``settings`` given (those of this shell are left out), once it answers."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AEB_")}, **settings}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("streamlit did not start")


PAINTED = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"
# Both charts drawn: the density overview (canvas above 2,000 bins, where Streamlit turns Vega to canvas) and the maps.
BOTH_CHARTS = """() => [...document.querySelectorAll('[data-testid=stVegaLiteChart]')]
    .filter(c => c.querySelector('canvas, svg g.mark-rect, svg g.mark-symbol')).length >= 2"""
# Tag the charts' drawing surfaces present now, so that a later wait can tell a newly drawn overview from the old one.
TAG_SURFACES = """() => document.querySelectorAll('[data-testid=stVegaLiteChart] canvas, [data-testid=stVegaLiteChart] svg')
    .forEach(e => e.dataset.benchSeen = '1')"""
NEW_OVERVIEW = """() => { const c = document.querySelector('[data-testid=stVegaLiteChart]');
    const s = c && c.querySelector('canvas, svg'); return !!s && !s.dataset.benchSeen; }"""


class Server:
    """The server's share of a step: the Streamlit script's wall time per rerun, timed by the messages that open
    (``new_session``) and close (``script_finished``) each rerun as the browser receives them, and the server process's
    CPU seconds."""

    def __init__(self, page, pid: int):
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.pid, self.started, self.finished, self._message = pid, [], [], ForwardMsg
        page.on("websocket", lambda ws: ws.on("framereceived", self._received))

    def _received(self, payload) -> None:
        if isinstance(payload, str):
            return
        message = self._message()
        message.ParseFromString(payload)
        kind = message.WhichOneof("type")
        if kind == "new_session":
            self.started.append(time.perf_counter())
        elif kind == "script_finished":
            self.finished.append(time.perf_counter())

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def mark(self) -> tuple[int, float]:
        return len(self.finished), self.cpu()

    def since(self, page, mark: tuple[int, float]) -> tuple[float, int, float]:
        """Once no rerun is left running: (script seconds, reruns, CPU seconds) since ``mark``."""
        deadline = time.perf_counter() + 300
        while len(self.finished) <= mark[0] or len(self.finished) < len(self.started):
            if time.perf_counter() > deadline:
                raise RuntimeError("the server's rerun did not finish within 300 s")
            page.wait_for_timeout(20)
        runs = list(zip(self.started, self.finished))[mark[0]:]
        return sum(b - a for a, b in runs), len(runs), self.cpu() - mark[1]


def first_chart(page, url: str, overview_of: int | None = None) -> tuple[float, float]:
    """Seconds from ``goto`` to the page's title (Streamlit itself) and to the drawn chart; with ``overview_of``, to the
    density overview of that many points and the drawn sample both painted."""
    t = time.perf_counter()
    page.goto(f"{url}/Explore")
    page.locator("h1", has_text="Explore").wait_for(timeout=300_000)
    shell = time.perf_counter() - t
    if overview_of:
        page.get_by_text(f"{overview_of:,} points, more than the").wait_for(timeout=300_000)
        page.wait_for_function(BOTH_CHARTS, timeout=300_000)
    page.locator("[data-testid=stVegaLiteChart] canvas, [data-testid=stVegaLiteChart] g.mark-symbol path").first.wait_for(
        timeout=300_000)
    page.evaluate(PAINTED)
    return shell, time.perf_counter() - t


def centre_on_screen(locator) -> None:
    """Scroll ``locator`` to the middle of the window: scrolled only "into view" it may sit under Streamlit's sticky
    header, which then hides its top rows from a screenshot and takes the mouse's clicks and drags there."""
    locator.evaluate("e => e.scrollIntoView({block: 'center'})")


def find_point(page, x0: float, y0: float, w: float, h: float, step: int = 7, skip: frozenset = frozenset()):
    """Hover over the left view until Vega's tooltip names a point whose id is not in ``skip``; returns (x, y,
    tooltip fields).  The density cells under a sample have tooltips too (their counts), and a tooltip stays up
    while the pointer crosses empty space, so only a point's fields count."""
    for dy in range(int(h * 0.2), int(h * 0.8), step):
        for dx in range(int(w * 0.1), int(w * 0.4), step):
            page.mouse.move(x0 + dx, y0 + dy)
            tip = page.locator("#vg-tooltip-element.visible")
            if tip.count():
                lines = [line.strip() for line in tip.inner_text().splitlines() if line.strip()]
                fields = dict(zip(lines[::2], lines[1::2]))
                if "name" in fields and fields.get("id") not in skip:
                    return x0 + dx, y0 + dy, fields
    raise RuntimeError("no point found under the mouse")


def clicks(page, n_clicks: int = 3, server: Server | None = None) -> list[tuple]:
    """(seconds to the painted highlight, seconds to the segment's player) per click, and with ``server`` the rerun's
    (script seconds, reruns, server CPU seconds)."""
    chart = page.locator("[data-testid=stVegaLiteChart]").last  # the maps; a density overview comes above them
    centre_on_screen(chart)
    box = chart.bounding_box()
    out, clicked = [], set()
    for k in range(n_clicks):
        x, y, fields = find_point(page, box["x"], box["y"] + k * 17, box["width"], box["height"] - k * 17,
                                  skip=frozenset(clicked))
        clicked.add(fields["id"])
        start, name = float(fields["start (s)"]), fields["name"]
        mark = server.mark() if server else None
        t = time.perf_counter()
        page.mouse.click(x, y)
        page.evaluate(PAINTED)
        painted = time.perf_counter() - t
        page.locator("h3", has_text=name).first.wait_for(timeout=60_000)
        page.get_by_text(f"{start:.2f}–{start + 3:.2f} s of").first.wait_for(timeout=60_000)
        page.locator("audio").first.wait_for(timeout=60_000)
        player = time.perf_counter() - t
        out.append((painted, player, *(server.since(page, mark) if server else ())))
    return out


def draw_all(page, n: int) -> float:
    """Raise "Points drawn" to every point; seconds until the full chart is painted."""
    t = time.perf_counter()
    field = page.locator("input[aria-label='Points drawn']")
    field.fill(str(n))
    field.press("Enter")
    page.locator("[data-testid=stCaptionContainer]", has_text=f"{n:,} points. Click").wait_for(timeout=300_000)
    page.locator("[data-testid=stVegaLiteChart] canvas").first.wait_for(timeout=300_000)
    page.evaluate(PAINTED)
    return time.perf_counter() - t


def densest_point(xy: np.ndarray) -> int:
    """The point of ``xy`` (n, 2) nearest the centre of the overview's fullest bin: the spot that takes most zooms."""
    bins = dn.bin_points(xy, dn.Box.around(xy))
    top = bins.loc[bins["count"].idxmax()]
    centre = np.array([(top["x0"] + top["x1"]) / 2, (top["y0"] + top["y1"]) / 2])
    return int(np.argmin(np.abs(xy - centre).max(axis=1)))


def overview_scales(page, region: dn.Box) -> np.ndarray:
    """The overview's data-to-page-pixel scales, (slope, offset) per axis (2, 2), for the ``region`` it bins.

    Above 2,000 bins Vega draws on a canvas, so the bins are found in a screenshot: the coloured (blue) pixels, less
    the rightmost run of columns, the colour legend's gradient.  The outermost bins hold the region's extreme points,
    so the coloured area spans the region's box, edges included.
    """
    from PIL import Image

    chart = page.locator("[data-testid=stVegaLiteChart]").first
    centre_on_screen(chart)
    image = np.asarray(Image.open(io.BytesIO(chart.screenshot())).convert("RGB")).astype(int)
    frame = chart.bounding_box()
    coloured = image[..., 2] - image[..., 0] > 15
    columns = np.flatnonzero(coloured.any(axis=0))
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    plotted = np.concatenate(runs[:-1])
    left, right = plotted.min(), plotted.max() + 1
    rows = np.flatnonzero(coloured[:, left:right].any(axis=1))
    top, bottom = rows.min(), rows.max() + 1
    sx = (right - left) / (region.x1 - region.x0)
    sy = -(bottom - top) / (region.y1 - region.y0)
    return np.array([[sx, frame["x"] + left - sx * region.x0], [sy, frame["y"] + bottom - sy * region.y0]])


def zoom_in(page, server: Server, region: dn.Box, at: np.ndarray, side: float, level: int, n: int, cap: int) -> dict:
    """Drag a box of ``side`` of the overview's width and height centred on the data point ``at`` (2,), press "Zoom in"
    and wait for zoom ``level``'s region to be painted: its overview and drawn sample, or every point once it holds no
    more than ``cap``.  Returns the region's size and box (as dragged) and the timings of the drag's rerun and of the
    zoom."""
    from playwright.sync_api import expect

    scales = overview_scales(page, region)
    corners = scales[:, 0] * np.array([[region.x0, region.y1], [region.x1, region.y0]]) + scales[:, 1]
    (left, top), (right, bottom) = corners
    cx, cy = scales[:, 0] * at + scales[:, 1]
    wx, wy = side * (right - left), side * (bottom - top)
    x0 = float(np.clip(cx - wx / 2, left + 1, right - 1 - wx))
    y0 = float(np.clip(cy - wy / 2, top + 1, bottom - 1 - wy))
    (dx0, dy1), (dx1, dy0) = (np.array([[x0, y0], [x0 + wx, y0 + wy]]) - scales[:, 1]) / scales[:, 0]
    button = page.get_by_role("button", name="Zoom in")
    mark, t = server.mark(), time.perf_counter()
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + wx, y0 + wy, steps=8)
    page.mouse.up()
    expect(button).to_be_enabled(timeout=120_000)
    dragged = (time.perf_counter() - t, *server.since(page, mark))

    page.evaluate(TAG_SURFACES)
    mark, t = server.mark(), time.perf_counter()
    button.click()
    crumbs = " › ".join(["whole map", *[f"zoom {i + 1}" for i in range(level)]])
    caption = page.get_by_text(f"{crumbs} — ")
    caption.wait_for(timeout=300_000)
    size = int(caption.inner_text().split(" — ")[1].split()[0].replace(",", ""))
    if size > cap:
        page.wait_for_function(NEW_OVERVIEW, timeout=300_000)
    page.locator("[data-testid=stCaptionContainer]", has_text=f"{size:,} of {n:,} points after filters").first.wait_for(
        timeout=300_000)
    server.since(page, mark)  # the maps' new points arrive with the rerun's last messages
    page.evaluate(PAINTED)
    seconds = time.perf_counter() - t
    return {"region": size, "box": dn.Box(dx0, dx1, dy0, dy1), "drag": dragged,
            "zoom": (seconds, *server.since(page, mark)), "load": os.getloadavg()[0]}


def row(n: int, drawn: str, first: str, timings: list[tuple[float, float]]) -> None:
    hl = " ".join(f"{a:.2f}" for a, *_ in timings)
    pl = " ".join(f"{b:.2f}" for _, b, *_ in timings)
    print(f"{n:>9,} {drawn:>24} {first:>34} {hl:>18} {pl:>17}", flush=True)


def zoom_to_points(page, server: Server, db: Path, n: int, cap: int, side: float, steps: list,
                   max_zooms: int = 8) -> int:
    """Zoom towards the densest spot until the region's points are drawn; adds a row per step to ``steps`` and returns
    the number of zooms."""
    projection = cached_projection(Store(db), "bench", "pca")  # view A's map, as the page reads it
    xy = np.asarray(projection["xy"], dtype=np.float64)
    at, box = xy[densest_point(xy)], dn.Box.around(xy)
    level, region = 0, n
    while region > cap and level < max_zooms:
        level += 1
        done = zoom_in(page, server, box, at, side, level, n, cap)
        region, box = done["region"], done["box"]
        steps.append((n, f"drag a box (zoom {level})", done["drag"], None, done["load"]))
        steps.append((n, f"zoom {level} → {region:,} points", done["zoom"], TARGETS["zoom"], done["load"]))
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--all", action="store_true", help="also raise the cap and draw every point")
    parser.add_argument("--zoom-side", type=float, default=0.25,
                        help="side of each zoom box, as a fraction of the overview's width and height")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    cap = dn.draw_cap()
    print(f"{os.cpu_count()} CPUs · headless Chromium · 1400×1000 viewport · PCA and STD-PCA stored · 3 clicks per row")
    print("first chart: seconds to the page title / to the drawn chart, cold then warm server process")
    print(f"{'segments':>9} {'drawn':>24} {'first chart s (cold; warm)':>34} {'click→highlight s':>18} {'click→player s':>17}")
    steps = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        for n in args.sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            t = time.perf_counter()
            db = build_store(folder, n)
            built = time.perf_counter() - t
            proc, url = serve({"AEB_DB": str(db), "AEB_CACHE": str(Path(tmp) / "cache")})
            overview = n if n > cap else None
            try:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                server = Server(page, proc.pid)
                mark = server.mark()
                cold = first_chart(page, url, overview)
                steps.append((n, "first chart, cold", (cold[1], *server.since(page, mark)), None, os.getloadavg()[0]))
                page.close()
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                server = Server(page, proc.pid)
                mark = server.mark()
                warm = first_chart(page, url, overview)
                steps.append((n, "first chart, warm", (warm[1], *server.since(page, mark)), TARGETS["first chart, warm"],
                              os.getloadavg()[0]))
                note = page.locator("[data-testid=stCaptionContainer]", has_text="Click a point").first.inner_text()
                shown = note.split(";")[1].split("(")[0].strip().removeprefix("drawing a ") if "sample" in note else "all"
                timings = clicks(page, server=server)
                row(n, shown, f"{cold[0]:.1f}/{cold[1]:.1f}; {warm[0]:.1f}/{warm[1]:.1f}", timings)
                steps += click_steps(n, "", timings)
                if overview:
                    zooms = zoom_to_points(page, server, db, n, cap, args.zoom_side, steps)
                    timings = clicks(page, server=server)
                    row(n, f"zoom {zooms}: all", "(after zooming)", timings)
                    steps += click_steps(n, f" (zoom {zooms})", timings)
                    steps.append((n, f"zooms to a drawable region: {zooms}", None, 3, None))
                if args.all and shown != "all":
                    redraw = draw_all(page, n)
                    row(n, "all", f"(raising the cap: {redraw:.1f})", clicks(page))
                browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=30)
                print(f"{n:>9,} store built in {built:.0f} s", flush=True)
                steps_table(steps)
                steps.clear()


def steps_table(steps: list[tuple]) -> None:
    """Every step: seconds in the browser, the server's script seconds over its reruns and its CPU seconds, the
    target and the 1-minute load when it was measured."""
    print(f"{'segments':>9} {'step':<36} {'seconds':>7} {'script s/runs':>13} {'CPU s':>6} {'target':>8} {'load':>5}")
    for n, step, timing, target, load in steps:
        if timing is None:
            print(f"{n:>9,} {step:<36} {'':>7} {'':>13} {'':>6} {'≤ ' + str(target):>8}")
            continue
        seconds, script, runs, cpu = timing
        over = "" if target is None else f"≤ {target:g}" + (" ✗" if seconds > target else " ✓")
        server = f"{script:.2f}/{runs}" if runs else ""
        print(f"{n:>9,} {step:<36} {seconds:>7.2f} {server:>13} {'' if runs == 0 else f'{cpu:.2f}':>6} {over:>8} "
              f"{load:>5.1f}", flush=True)


def click_steps(n: int, where: str, timings: list[tuple]) -> list[tuple]:
    """The clicks as step rows: click → highlight (browser only) and click → player (with the rerun's server share)."""
    out, load = [], os.getloadavg()[0]
    for painted, player, *server in timings:
        out.append((n, f"click → highlight{where}", (painted, 0.0, 0, 0.0), TARGETS["click → highlight"], load))
        out.append((n, f"click → player{where}", (player, *server), TARGETS["click → player"], load))
    return out


if __name__ == "__main__":
    main()
