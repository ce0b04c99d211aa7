"""What storing N of MERT's hidden states costs against storing one: forward passes, time and store size.

The network is the MERT-v1-95M architecture with random weights (see
``bench_mert.py``), run through ``core.extract.extract`` on real clips into a
fresh store per row: the model's own space only, one layer besides it
(``--layers 6``), and all 13 (``--layers all``).  Forward calls are counted
with a hook on the network; CPU seconds are given beside wall seconds
because the machine is shared.  Before layers were data, each layer was a
catalogue key of its own that re-ran the network: 13 layers cost 13 runs.

    python bench/bench_layers.py [--limit 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.bench_mert import random_95m_adapter  # noqa: E402
from core.extract import extract  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "esc50_subset"


def run(adapter, paths: list[Path], layers, db: Path) -> dict:
    calls = [0]
    handle = adapter.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        report = extract(paths, [adapter.entry.key], db=db, adapters=[adapter], layers=layers)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        handle.remove()
    assert report.stored == len(paths) and not report.failures
    return {"forward_calls": calls[0], "wall_s": wall, "cpu_s": cpu, "store_mb": db.stat().st_size / 2**20,
            "model_s": report.timings.get(f"model:{adapter.entry.key}", float("nan")),
            "store_s": report.timings.get("store", float("nan"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10, help="clips of esc50_subset (5 s each)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adapter = random_95m_adapter("cpu")
    paths = [DATA / rel for rel in pd.read_csv(DATA / "metadata.csv")["path"].head(args.limit)]
    print(f"{len(paths)} clips of {DATA.name} ({5 * len(paths)} s), MERT-95M random weights, "
          f"{args.threads} threads; load before {os.getloadavg()[0]:.1f}")
    print("| stored | spaces | forward calls | wall s | CPU s | model s | store s | store MB |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        run(adapter, paths[:1], None, Path(tmp) / "warm.duckdb")  # first-call costs out of the way
        for name, layers, n_spaces in (("mean only", None, 1), ("mean + layer 6", (6,), 2),
                                       ("mean + all 13 layers", "all", 14)):
            r = run(adapter, paths, layers, Path(tmp) / f"{n_spaces}.duckdb")
            print(f"| {name} | {n_spaces} | {r['forward_calls']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                  f"{r['model_s']:.1f} | {r['store_s']:.2f} | {r['store_mb']:.1f} |")
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
