"""The GPU benchmark, one step at a time; ``bench/gpu/run.sh`` runs every step within a few minutes.

    python bench/gpu/gpu_bench.py env --out OUT
    python bench/gpu/gpu_bench.py audio DIR [--tracks 32] [--seconds 30]
    python bench/gpu/gpu_bench.py model KEY --audio DIR --out OUT [--device cuda] [--precision bf16]
                                        [--workers N] [--batch-size N] [--target-s 20] [--cap-s 60]

``model`` measures one catalogue entry with random weights of its real
architecture (``bench/random_models.py``) on synthetic 44.1 kHz stereo tracks
(so every model resamples), on the 3 s grid, and appends one JSON line to
``OUT/results.jsonl`` and one row to ``OUT/table.md`` as soon as it has them:

* ``e2e_x``: seconds of audio per second through ``core.extract.extract``,
  decoding to DuckDB, with ``workers`` worker processes;
* ``bare_x``: the model's front end and network alone on the device, on
  batches of the same items, already on the device;
* ``cpu_x``: what ``workers`` processes deliver when nothing else runs
  (decoding, hashing, mixing, resampling, cutting, and handing the items
  over, pinned), their start included; ``cpu_x_per_worker`` is one
  worker's CPU-time rate, alone;
* ``steady_x``: the end-to-end rate between the 10th and the 90th
  percentile of finished tracks, without the run's start and end;
* ``gpu_util``: the mean of NVML's utilisation, sampled every 50 ms during
  the end-to-end run;
* ``time``: where the end-to-end run's time went (``ExtractReport.timings``).

The target is ``e2e_x >= 0.8 × min(bare_x, cpu_x)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.random_models import build  # noqa: E402
from core import audio  # noqa: E402
from core.extract import extract  # noqa: E402
from core.models import stages  # noqa: E402
from core.workers import Feed, Task, loader  # noqa: E402

RATE = 44100


def synthetic_track(seed: int, seconds: float) -> np.ndarray:
    """Music-like stereo: harmonic notes that change every 0.3-1.5 s, vibrato, noise bursts, a little reverb tail."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    y = np.zeros(n)
    start = 0
    while start < n:
        length = int(rng.uniform(0.3, 1.5) * RATE)
        f0 = 55.0 * 2 ** rng.uniform(0, 5)
        seg = t[: min(length, n - start)]
        envelope = np.exp(-seg * rng.uniform(0.5, 6.0))
        vibrato = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(3, 7) * seg)
        for h in range(1, rng.integers(2, 8)):
            y[start : start + len(seg)] += envelope * np.sin(2 * np.pi * f0 * h * seg * vibrato) / h ** 1.3
        if rng.random() < 0.3:
            y[start : start + len(seg)] += 0.3 * rng.standard_normal(len(seg)) * np.exp(-seg * 20)
        start += length
    y = np.convolve(y, np.exp(-np.arange(2000) / 300.0) / 300.0, mode="same")
    y = 0.8 * y / np.abs(y).max()
    return np.stack([y, np.roll(y, 7) * 0.9], axis=1).astype(np.float32)


def cmd_audio(args) -> None:
    import soundfile as sf

    args.dir.mkdir(parents=True, exist_ok=True)
    for i in range(args.tracks):
        sf.write(args.dir / f"track{i:03d}.wav", synthetic_track(i, args.seconds), RATE, subtype="PCM_16")
    print(f"{args.tracks} tracks of {args.seconds:g} s at {RATE} Hz in {args.dir}")


def cmd_env(args) -> None:
    import transformers

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
           "numpy": np.__version__, "cpus": os.cpu_count(), "python": sys.version.split()[0],
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "env.json").write_text(json.dumps(env, indent=1))
    print(env)


class GpuLoad(threading.Thread):
    """NVML's GPU utilisation, sampled every 50 ms until stopped; None without a GPU."""

    def __init__(self, device: str):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.running = threading.Event()
        self.handle = None
        if torch.device(device).type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(torch.device(device).index or 0)
            except Exception as exc:  # no NVML: the figure is left out, the run goes on
                print(f"GPU utilisation not measured: {exc}", flush=True)

    def run(self) -> None:
        if self.handle is None:
            return
        import pynvml

        while not self.running.wait(0.05):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def stop(self) -> float | None:
        self.running.set()
        self.join()
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def bare_rate(adapter, prepared: stages.Prepared, batch: int, precision: str, seconds: float = 3.0) -> float:
    """Items per second through the front end and the network, on batches of ``batch`` items already on the device."""
    inputs, lengths = next(iter(prepared.parts))
    repeat = -(-batch // len(inputs))
    x = torch.from_numpy(np.concatenate([inputs] * repeat)[:batch]).to(adapter.device)
    n = None if lengths is None else torch.from_numpy(np.concatenate([lengths] * repeat)[:batch])
    if adapter.equal_lengths and n is not None:
        x, n = x[:, : int(n.min())], torch.full_like(n, int(n.min()))
    synchronize = torch.cuda.synchronize if torch.device(adapter.device).type == "cuda" else (lambda: None)
    for _ in range(2):
        stages.forward(adapter, x, n, precision)
    synchronize()
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or runs < 3:
        stages.forward(adapter, x, n, precision)
        runs += 1
        if runs % 4 == 0:
            synchronize()
    synchronize()
    return runs * batch / (time.perf_counter() - t0)


def cpu_rate(adapter, paths: list[Path]) -> float:
    """Seconds of audio per CPU second of one worker: the whole CPU stage, one file after another."""
    feed = Feed([Task(i, p) for i, p in enumerate(paths)], [adapter], audio.DEFAULT_WINDOW_S, audio.DEFAULT_HOP_S)
    t0 = time.thread_time()
    for _ in feed:
        pass
    return sum(audio.info(p).duration_s for p in paths) / (time.thread_time() - t0)


def feed_rate(adapter, paths: list[Path], workers: int) -> float:
    """Seconds of audio per second that ``workers`` processes deliver to this one, pinned, with no device work:
    the CPU side's ceiling where it runs, its start and the hand-over included."""
    feed = Feed([Task(i, p) for i, p in enumerate(paths)], [adapter], audio.DEFAULT_WINDOW_S, audio.DEFAULT_HOP_S)
    t0 = time.perf_counter()
    for _ in loader(feed, workers, pin_memory=torch.device(adapter.device).type == "cuda"):
        pass
    return sum(audio.info(p).duration_s for p in paths) / (time.perf_counter() - t0)


def steady_rate(stamps: list[float], track_s: float) -> float | None:
    """Seconds of audio per second between the 10th and the 90th percentile of finished tracks (start and end left out)."""
    if len(stamps) < 10:
        return None
    a, b = int(0.1 * len(stamps)), int(0.9 * len(stamps))
    return (b - a) * track_s / (stamps[b] - stamps[a])


def cmd_model(args) -> None:
    started = time.perf_counter()
    adapter = build(args.key, args.device)
    batch = args.batch_size or adapter.batch_size
    sources = sorted(args.audio.glob("*.wav"))
    track_s = audio.info(sources[0]).duration_s
    y, sr = audio.load(sources[0], dtype=adapter.entry.input_dtype)
    prepared = adapter.preparer(y, sr, audio.segment_grid(len(y) / sr))
    parts = list(prepared.parts)
    audio_per_item = track_s / prepared.n_items
    bare_x = bare_rate(adapter, stages.Prepared(prepared.n_items, parts, None), batch, args.precision) * audio_per_item
    per_core_x = cpu_rate(adapter, sources[: max(1, args.cpu_tracks)])
    workers = args.workers if args.workers is not None else max(0, (os.cpu_count() or 2) - 2)
    left = args.cap_s - (time.perf_counter() - started) - 10
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tracks"
        folder.mkdir()

        def tracks(n: int) -> list[Path]:  # links: distinct tracks to the store, the page cache serves the bytes
            for i in range(len(list(folder.iterdir())), n):
                os.link(sources[i % len(sources)], folder / f"{i:05d}.wav")
            return sorted(folder.iterdir())[:n]

        guess = min(bare_x, per_core_x * max(1, workers))
        cpu_x = feed_rate(adapter, tracks(int(np.clip(0.15 * left * guess / track_s, 2 * max(1, workers), 
                                                      args.max_tracks))), workers)
        expected = min(bare_x, cpu_x)
        left = args.cap_s - (time.perf_counter() - started) - 10
        n_tracks = int(np.clip(0.7 * expected * min(args.target_s, 0.6 * left) / track_s, max(2, 2 * workers),
                               args.max_tracks))
        stamps: list[float] = []
        load = GpuLoad(args.device)
        load.start()
        report = extract(tracks(n_tracks), [args.key], db=Path(tmp) / "bench.duckdb", adapters=[adapter],
                         workers=workers, batch_size=batch, precision=args.precision,
                         progress=lambda done, total, name: stamps.append(time.perf_counter()))
        gpu_util = load.stop()
    assert not report.failures, report.failures[:3]
    e2e_x = report.audio_s / report.seconds
    steady_x = steady_rate(stamps, track_s)
    result = {
        "model": args.key, "precision": report.precisions[args.key], "device": args.device, "workers": workers,
        "batch": batch, "tracks": n_tracks, "audio_s": round(report.audio_s), "seconds": round(report.seconds, 1),
        "e2e_x": round(e2e_x, 1), "steady_x": None if steady_x is None else round(steady_x, 1),
        "bare_x": round(bare_x, 1), "cpu_x": round(cpu_x, 1), "cpu_x_per_worker": round(per_core_x, 1),
        "gpu_util": gpu_util, "of_target": round(e2e_x / (0.8 * expected), 2),
        "time": {k: round(v, 2) for k, v in sorted(report.timings.items())},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")
    table = args.out / "table.md"
    if not table.exists():
        table.write_text("| model | precision | workers | batch | end to end × | steady × | bare model × | CPU side × "
                         "| e2e / (0.8 · min) | GPU util % | audio s |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    with open(table, "a") as fh:
        fh.write(f"| {args.key} | {result['precision']} | {workers} | {batch} | {e2e_x:,.0f} | {result['steady_x']} "
                 f"| {bare_x:,.0f} | {cpu_x:,.0f} | {result['of_target']} | {gpu_util} | {report.audio_s:,.0f} |\n")
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_env)
    p = sub.add_parser("audio")
    p.add_argument("dir", type=Path)
    p.add_argument("--tracks", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30.0)
    p.set_defaults(func=cmd_audio)
    p = sub.add_parser("model")
    p.add_argument("key")
    p.add_argument("--audio", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--workers", type=int, default=None, help="default: the CPU cores less two")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--target-s", type=float, default=20.0, help="aimed length of the end-to-end run")
    p.add_argument("--cap-s", type=float, default=60.0, help="the time this step is given in all")
    p.add_argument("--max-tracks", type=int, default=4000)
    p.add_argument("--cpu-tracks", type=int, default=2, help="tracks timed for the CPU stage's rate")
    p.set_defaults(func=cmd_model)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
