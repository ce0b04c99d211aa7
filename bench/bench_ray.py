"""Overhead of the Ray engine against the local one, on the same files and CPUs.

Usage: python bench/bench_ray.py [FOLDER] [--files N] [--model KEY ...]
Default: the first 120 files of ../shared/data/esc50_subset, with aisfx and with dsp, each model on its own.

For each model: the local engine's wall time (model loaded beforehand, as the app keeps it), then the Ray
engine's on a local Ray of all this machine's CPUs, from the call to the end of its ingest, its actors'
model loading included (Ray's own start is printed apart: a cluster pays it once), and the largest vector
difference between the two stores (Ray runs one BLAS thread per actor by default).
Take figures only when `uptime` shows a load below about 2, and write the load beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import audio  # noqa: E402
from core.extract import extract  # noqa: E402
from core.models.base import load_model  # noqa: E402
from core.ray_engine import extract_ray, start  # noqa: E402
from core.store import Store  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc50_subset"


def largest_difference(a: Path, b: Path, space: str) -> float:
    x, y = Store(a), Store(b)
    (ia, va), (ib, vb) = x.vectors(space), y.vectors(space)
    ka = x.rows(ia)[["path", "idx"]].apply(tuple, axis=1).to_numpy()
    kb = y.rows(ib)[["path", "idx"]].apply(tuple, axis=1).to_numpy()
    order_a, order_b = np.argsort(ka), np.argsort(kb)
    return float(np.abs(va[order_a] - vb[order_b]).max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--model", action="append")
    args = parser.parse_args()
    files = audio.find_audio_files([args.folder])[0][: args.files]
    t = time.perf_counter()
    start()
    print(f"{len(files)} files of {args.folder.name}; load {os.getloadavg()[0]:.1f}; Ray started in "
          f"{time.perf_counter() - t:.1f} s")
    print("| model | local s | Ray s | overhead | × real time local / Ray | largest difference |")
    print("|---|---|---|---|---|---|")
    for key in args.model or ["aisfx", "dsp"]:
        with tempfile.TemporaryDirectory() as tmp:
            local_db, ray_db = Path(tmp) / "local.duckdb", Path(tmp) / "ray.duckdb"
            adapter = load_model(key)
            t = time.perf_counter()
            local = extract(files, [key], db=local_db, adapters=[adapter])
            local_s = time.perf_counter() - t
            t = time.perf_counter()
            ray = extract_ray(files, [key], db=ray_db, workers=os.cpu_count())
            ray_s = time.perf_counter() - t
            diff = largest_difference(local_db, ray_db, key)
            print(f"| {key} | {local_s:.1f} | {ray_s:.1f} | {100 * (ray_s / local_s - 1):+.0f} % | "
                  f"{local.audio_s / local_s:.0f}× / {ray.audio_s / ray_s:.0f}× | {diff:.1e} |")


if __name__ == "__main__":
    main()
