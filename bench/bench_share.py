"""Memory of a published collection served to three visitors at once: does it fit Streamlit Community Cloud?

The collection is ``../shared/data/esc50_subset`` (414 clips of 5 s)
extracted with aisfx, musicnn-msd and the DSP baseline (their weights ship
in their wheels) and with a CLAP checkpoint of the full-size LAION
architecture (``ClapConfig()``: HTSAT-tiny audio tower, RoBERTa-base text
tower, 512-D) holding random weights.  The weights' values change no
figure here; their size does, which is why a tiny test model would not do.

The bench publishes it with ``python -m core publish`` (its size with the
three wheel models, and with CLAP as well), serves the folder with
``streamlit run`` (``AEB_COLLECTION``: read-only, shared mode), and sends
three visitors in headless Chromium through Explore (maps drawn, a point
clicked and its player shown), Compare (two models, metrics shown) and
Search (a CLAP text query, which loads the text tower, and an uploaded
query clip, each visitor against another model, so that every model is
loaded).  The server's process tree is sampled every 100 ms from ``/proc``;
the peak resident memory, overall and per page, is the figure that Cloud's
limit (2.7 GB) is about.

    python bench/bench_share.py [--work /tmp/aeb-share]

``--work`` keeps the CLAP checkpoint, the store and the published folders,
so that a second run only serves and visits.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import tempfile
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_explore import CHROMIUM_ARGS, serve  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "esc50_subset"
WHEEL_MODELS = ["aisfx", "musicnn-msd", "dsp"]
LABEL, GROUP = "category", "src_file"
PAGES = ["Explore", "Compare", "Search"]
VISITORS = 3
MB = 2.0**20


#: The catalogue's CLAP, whose hub id the random checkpoint stands in for in a Hugging Face cache of the work folder:
#: a published space must name a catalogue key or hub id, never a folder of this machine.
CLAP_KEY, CLAP_HUB_ID = "clap-htsat-unfused", "laion/clap-htsat-unfused"


def cache_full_clap(hf_home: Path) -> Path:
    """The random full-size checkpoint in ``hf_home``'s hub cache under :data:`CLAP_HUB_ID`, as a download leaves it."""
    repo = hf_home / "hub" / ("models--" + CLAP_HUB_ID.replace("/", "--"))
    snapshot = save_full_clap(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


def save_full_clap(folder: Path) -> Path:
    """A CLAP checkpoint of LAION's full-size architecture with random weights, saved as the hub's are.

    The tokenizer is a small word-level one (RoBERTa's vocabulary is not on
    this machine); the text tower keeps RoBERTa-base's 50,265-row embedding
    table, so its memory is the real one.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, PreTrainedTokenizerFast

    if (folder / "model.safetensors").is_file():
        return folder
    words = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", *"a the dog bark rain on window birds chirping engine".split()]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", mask_token="<mask>")
    torch.manual_seed(0)
    model = ClapModel(ClapConfig()).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as a trained model has
        model.audio_model.audio_encoder.batch_norm.running_mean.uniform_(-40.0, -20.0)
        model.audio_model.audio_encoder.batch_norm.running_var.uniform_(50.0, 150.0)
    extractor = ClapFeatureExtractor(feature_size=64, frequency_min=50, frequency_max=14000, padding="repeatpad",
                                     truncation="rand_trunc")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(partial)
    partial.rename(folder)
    return folder


def core_cli(*args: str) -> float:
    """Run ``python -m core ARGS`` from the project root; its wall seconds.  A failure ends the bench with its message."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"core {args[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return time.perf_counter() - t


def build_store(work: Path, clap_key: str) -> Path:
    """The esc50_subset store with the three wheel models and CLAP, extracted once per ``--work`` folder."""
    from core.store import Store

    db = work / "esc50.duckdb"
    held = set(Store(db, read_only=True).spaces()["space"]) if db.is_file() else set()
    for model in [m for m in [*WHEEL_MODELS, clap_key] if m not in held]:
        seconds = core_cli("extract", str(DATA), "--metadata", str(DATA / "metadata.csv"), "--model", model,
                           "--db", str(db), "--device", "cpu")
        print(f"extract {model if model in WHEEL_MODELS else 'clap (full size, random)'}: {seconds:.0f} s", flush=True)
    return db


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / MB


def publish(db: Path, out: Path, models: list[str]) -> float:
    """Publish ``models`` of ``db`` into ``out`` (kept when already there); its size in MB."""
    if not out.is_dir():
        core_cli("publish", "--db", str(db), "--out", str(out), "--label", LABEL, "--group", GROUP,
                 *[a for m in models for a in ("--model", m)])
    return folder_mb(out)


def tree_memory(pid: int) -> dict[str, int]:
    """Resident bytes of ``pid`` and every descendant, from ``/proc``: ``RssAnon`` (the heap), ``RssFile`` (mapped
    files: libraries and the safetensors weights torch maps instead of copying) and ``RssShmem``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total = dict.fromkeys(("RssAnon", "RssFile", "RssShmem"), 0)
    todo = [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    name, _, value = line.partition(":")
                    if name in total:
                        total[name] += int(value.split()[0]) * 1024
        except OSError:  # gone meanwhile
            pass
    return total


def tree_rss(pid: int) -> int:
    return sum(tree_memory(pid).values())


class Sampler(threading.Thread):
    """Samples the server tree's RSS every ``period`` s; the peak overall and per page being visited."""

    def __init__(self, pid: int, period: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.peak = 0
        self.by_page: dict[str, int] = {}
        self.current: dict[int, str] = {}  # visitor -> the page it is on
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            rss = tree_rss(self.pid)
            with self.lock:
                self.peak = max(self.peak, rss)
                for name in set(self.current.values()):
                    self.by_page[name] = max(self.by_page.get(name, 0), rss)
            time.sleep(self.period)

    def on(self, visitor: int, name: str | None) -> None:
        """Visitor ``visitor`` is now on page ``name`` (None: gone)."""
        with self.lock:
            if name is None:
                self.current.pop(visitor, None)
            else:
                self.current[visitor] = name


def query_wav(seed: int) -> bytes:
    """A 4 s WAV made now: a chirp over noise, different per visitor."""
    sr = 22_050
    t = np.arange(4 * sr) / sr
    rng = np.random.default_rng(seed)
    y = 0.3 * np.sin(2 * np.pi * (300 + 200 * seed) * t * (1 + t)) + 0.05 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, y.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


WAIT = 300_000  # ms: three visitors on two busy cores


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit select box labelled ``label``."""
    page.get_by_role("combobox", name=label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()


def shown(page, text: str):
    """The first visible element holding ``text`` (a hidden tab's copy does not count)."""
    return page.get_by_text(text).locator("visible=true").first


def open_tab(page, tab: str, content: str) -> None:
    """Open ``tab`` until ``content`` shows: a rerun still under way (a new model chosen) may draw the tabs again
    on their first one."""
    from playwright.sync_api import TimeoutError

    for _ in range(WAIT // 5_000):
        page.get_by_role("tab", name=tab).click()
        try:
            shown(page, content).wait_for(timeout=5_000)
            return
        except TimeoutError:
            continue
    raise TimeoutError(f"the tab {tab!r} did not open")


def explore(page, url: str) -> None:
    """Both maps drawn, a point clicked, its player shown."""
    page.goto(f"{url}/Explore")
    views = page.locator("[data-testid=stVegaLiteChart] g.mark-symbol")
    views.first.locator("path[aria-label]").first.wait_for(timeout=WAIT)
    box = views.first.locator("path[aria-label]").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator("audio").first.wait_for(timeout=WAIT)


def compare(page, url: str) -> None:
    """Compare's maps and metrics for its first two models (the page's defaults, stored at publish time)."""
    page.goto(f"{url}/Compare")
    page.locator("[data-testid=stVegaLiteChart] g.mark-symbol path").first.wait_for(timeout=WAIT)
    page.locator("[data-testid=stDataFrame]").first.wait_for(timeout=WAIT)


def search(page, url: str, clap_key: str, upload_model: str, seed: int) -> None:
    """A CLAP text query, then an uploaded clip against ``upload_model``; each waits for its results."""
    from playwright.sync_api import expect

    done = "Explore can colour every point by this query"
    page.goto(f"{url}/Search")
    page.locator("h1", has_text="Search").wait_for(timeout=WAIT)
    choose(page, "Model", clap_key)
    page.get_by_role("tab", name="Text").click()
    field = page.get_by_label("Describe the sound")
    field.fill("a dog bark in the rain")
    field.press("Enter")
    shown(page, done).wait_for(timeout=WAIT)
    choose(page, "Model", upload_model)
    open_tab(page, "Upload a clip", "A clip (embedded on the fly")
    page.locator("input[type=file]").first.set_input_files(
        {"name": f"query{seed}.wav", "mimeType": "audio/wav", "buffer": query_wav(seed)})
    shown(page, done).wait_for(timeout=WAIT)
    expect(page.locator("[data-testid=stAlertContentError]")).to_have_count(0)


def visit(url: str, clap_key: str, upload_model: str, seed: int, events, shots: str) -> None:
    """One visitor, in its own process and browser: Explore, Compare, Search.

    Reports ``(seed, page, seconds)`` on ``events`` when a page starts
    (seconds None) and ends, ``(seed, None, None)`` when done, and
    ``(seed, "error", message)`` for a failure (with a screenshot of the page
    in ``shots``).  One Playwright per process: its sync API is not for threads.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        steps = [("Explore", lambda: explore(page, url)), ("Compare", lambda: compare(page, url)),
                 ("Search", lambda: search(page, url, clap_key, upload_model, seed))]
        try:
            for name, step in steps:
                events.put((seed, name, None))
                t = time.perf_counter()
                step()
                events.put((seed, name, time.perf_counter() - t))
        except Exception as exc:
            page.screenshot(path=str(Path(shots) / f"visitor{seed}.png"), full_page=True)
            events.put((seed, "error", f"on {name}: {type(exc).__name__}: {str(exc).splitlines()[0]} "
                                       f"(screenshot: visitor{seed}.png)"))
        finally:
            events.put((seed, None, None))
            browser.close()


def visit_all(url: str, clap_key: str, uploads: list[str], sampler: Sampler, shots: Path) -> tuple[dict, list]:
    """Every visitor at once; (seconds per (visitor, page), error lines)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    visitors = [context.Process(target=visit, args=(url, clap_key, uploads[v], v, events, str(shots)))
                for v in range(VISITORS)]
    for v in visitors:
        v.start()
    times, errors, left = {}, [], VISITORS
    while left:
        seed, name, value = events.get()
        if name is None:
            left -= 1
            sampler.on(seed, None)
        elif name == "error":
            errors.append(f"visitor {seed} {value}")
        elif value is None:
            sampler.on(seed, name)
        else:
            times[(seed, name)] = value
    for v in visitors:
        v.join()
    return times, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "aeb-share",
                        help="cache folder for the CLAP checkpoint, the store and the published folders")
    args = parser.parse_args()
    work = args.work.expanduser().absolute()
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs · 1-minute load {load:.2f} at the start · esc50_subset (414 clips of 5 s)")
    t = time.perf_counter()
    clap_dir = cache_full_clap(work / "hf")
    os.environ.update(HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1")  # for the extraction and the server alike
    os.environ.pop("HF_HUB_CACHE", None)
    clap_key = CLAP_KEY
    print(f"CLAP checkpoint (ClapConfig() defaults, random weights): {folder_mb(clap_dir):.0f} MB on disk, "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    db = build_store(work, clap_key)
    three = publish(db, work / "published-3", WHEEL_MODELS)
    four = publish(db, work / "published-4", [*WHEEL_MODELS, clap_key])
    print(f"publish size: {three:.1f} MB with {', '.join(WHEEL_MODELS)}; {four:.1f} MB with CLAP as well", flush=True)

    cache = work / "serve-cache"
    shutil.rmtree(cache, ignore_errors=True)
    proc, url = serve({"AEB_COLLECTION": str(work / "published-4"), "AEB_CACHE": str(cache)})  # as Cloud would
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        idle = tree_rss(proc.pid)
        uploads = [clap_key, "aisfx", "musicnn-msd"]
        t = time.perf_counter()
        times, errors = visit_all(url, clap_key, uploads, sampler, work)
        wall = time.perf_counter() - t
        after = tree_memory(proc.pid)
    finally:
        sampler.stopped.set()
        sampler.join()
        proc.terminate()
        proc.wait(timeout=60)
    print(f"\n{VISITORS} visitors at once, each through {', '.join(PAGES)} (uploads against: {', '.join(uploads)}); "
          f"{wall:.0f} s in all, 1-minute load {os.getloadavg()[0]:.2f} at the end")
    print(f"{'page':<10} {'peak server RSS MB':>19} {'visitor seconds':>24}")
    for name in PAGES:
        secs = " ".join(f"{times[(v, name)]:.0f}" if (v, name) in times else "–" for v in range(VISITORS))
        print(f"{name:<10} {sampler.by_page.get(name, 0) / MB:>19.0f} {secs:>24}")
    print(f"server RSS: {idle / MB:.0f} MB idle, peak {sampler.peak / MB:.0f} MB (goal ≤ 2048 MB; Cloud's ceiling "
          f"2.7 GB), {sum(after.values()) / MB:.0f} MB after the visits: "
          + ", ".join(f"{name} {value / MB:.0f} MB" for name, value in after.items()))
    for line in errors:
        print(f"error: {line}")
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
