"""Explore in headless Chromium: time to the first chart and per click, at 10k and 100k segments.

Each size gets a synthetic store (1,000 tracks, 32-D vectors, a metadata
column with a long tail) whose PCA and STD-PCA projections are already
stored, because the target is about a page opened on cached projections.
``streamlit run`` serves it; Playwright drives Debian's ``/usr/bin/chromium``.

* first chart: from ``page.goto`` to the chart's canvas (or SVG) being
  drawn, on a cold server process and again on a warm one;
* click: from the mouse click on a point to the highlight being painted
  (Vega, in the browser) and to the segment's ``<audio>`` player (the
  Streamlit rerun).

    python bench/bench_explore.py [--sizes 10000 100000] [--all]
"""

from __future__ import annotations

import argparse
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

from core.exchange import vector_column  # noqa: E402
from core.reduce import canonical_params  # noqa: E402
from core.store import Provenance, Store  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TRACKS = 1_000


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


def serve(db: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env={**os.environ, "AEB_DB": str(db), "AEB_CACHE": str(cache)},
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


def first_chart(page, url: str) -> tuple[float, float]:
    """Seconds from ``goto`` to the page's title (Streamlit itself) and to the drawn chart."""
    t = time.perf_counter()
    page.goto(f"{url}/Explore")
    page.locator("h1", has_text="Explore").wait_for(timeout=300_000)
    shell = time.perf_counter() - t
    page.locator("[data-testid=stVegaLiteChart] canvas, [data-testid=stVegaLiteChart] g.mark-symbol path").first.wait_for(
        timeout=300_000)
    page.evaluate(PAINTED)
    return shell, time.perf_counter() - t


def find_point(page, x0: float, y0: float, w: float, h: float, step: int = 7):
    """Hover over the left view until Vega's tooltip names a point; returns (x, y, tooltip text)."""
    for dy in range(int(h * 0.2), int(h * 0.8), step):
        for dx in range(int(w * 0.1), int(w * 0.4), step):
            page.mouse.move(x0 + dx, y0 + dy)
            tip = page.locator("#vg-tooltip-element.visible")
            if tip.count():
                return x0 + dx, y0 + dy, tip.inner_text()
    raise RuntimeError("no point found under the mouse")


def clicks(page, n_clicks: int = 3) -> list[tuple[float, float]]:
    """(seconds to the painted highlight, seconds to the segment's player) per click."""
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    box = chart.bounding_box()
    out = []
    for k in range(n_clicks):
        x, y, tip = find_point(page, box["x"], box["y"] + k * 17, box["width"], box["height"] - k * 17)
        lines = [line.strip() for line in tip.splitlines() if line.strip()]
        fields = dict(zip(lines[::2], lines[1::2]))
        start, name = float(fields["start (s)"]), fields["name"]
        t = time.perf_counter()
        page.mouse.click(x, y)
        page.evaluate(PAINTED)
        painted = time.perf_counter() - t
        page.locator("h3", has_text=name).first.wait_for(timeout=60_000)
        page.get_by_text(f"{start:.2f}–{start + 3:.2f} s of").first.wait_for(timeout=60_000)
        page.locator("audio").first.wait_for(timeout=60_000)
        out.append((painted, time.perf_counter() - t))
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


def row(n: int, drawn: str, first: str, timings: list[tuple[float, float]]) -> None:
    hl = " ".join(f"{a:.2f}" for a, _ in timings)
    pl = " ".join(f"{b:.2f}" for _, b in timings)
    print(f"{n:>9,} {drawn:>24} {first:>34} {hl:>18} {pl:>17}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--all", action="store_true", help="also raise the cap and draw every point")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    print(f"{os.cpu_count()} CPUs · headless Chromium · 1400×1000 viewport · PCA and STD-PCA stored · 3 clicks per row")
    print("first chart: seconds to the page title / to the drawn chart, cold then warm server process")
    print(f"{'segments':>9} {'drawn':>24} {'first chart s (cold; warm)':>34} {'click→highlight s':>18} {'click→player s':>17}")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        for n in args.sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            db = build_store(folder, n)
            proc, url = serve(db, Path(tmp) / "cache")
            try:
                browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                cold = first_chart(page, url)
                page.close()
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                warm = first_chart(page, url)
                note = page.locator("[data-testid=stCaptionContainer]", has_text="Click a point").first.inner_text()
                shown = note.split(";")[1].split("(")[0].strip().removeprefix("drawing a ") if "sample" in note else "all"
                row(n, shown, f"{cold[0]:.1f}/{cold[1]:.1f}; {warm[0]:.1f}/{warm[1]:.1f}", clicks(page))
                if args.all and shown != "all":
                    redraw = draw_all(page, n)
                    row(n, "all", f"(raising the cap: {redraw:.1f})", clicks(page))
                browser.close()
            finally:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
