"""CPU extraction throughput of the CLAP adapter, in seconds of audio per second.

The hub is out of reach here, so the network is the ``laion/clap-htsat-unfused``
architecture (``ClapConfig`` defaults: HTSAT-tiny, depths 2-2-6-2, RoBERTa-base
text tower, 512-D projection, no fusion) with random weights, which cost the
same as the trained ones, behind LAION's processor settings (64 mels, 50 Hz to
14 kHz, repeat-padding).  Three figures:

* ``model_x``: the bare network on full 10 s inputs (features ready);
* ``processor_x``: the checkpoint's feature extractor alone (numpy mel of the
  padded 10 s window), and ``frontend_x`` the adapter's torch twin of it on
  the device, which the adapter runs instead;
* ``embed_x``: the adapter as the pipeline calls it (resample, front end,
  network; one ``embed`` per decoded clip on the 3 s grid).

Every segment is padded to the 10 s window, so a 3 s segment costs as much as
a 10 s one: per second of audio the adapter is about 3x slower than the bare
model on 10 s inputs.

    python bench/bench_clap.py [--threads 2] [--limit 8] [--device cpu]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.adapter_timing import run_random_weight_bench  # noqa: E402
from bench.random_models import clap_unfused  # noqa: E402
from core.models import clap  # noqa: E402


def bare_model(adapter: clap.ClapAdapter, n: int) -> dict:
    rng = np.random.default_rng(0)
    windows = [0.1 * rng.standard_normal(adapter.window).astype(np.float32) for _ in range(n)]
    t0 = time.perf_counter()
    inputs = adapter.processor(audio=windows, sampling_rate=48000, return_tensors="pt")
    processor_s = time.perf_counter() - t0
    features = inputs["input_features"].to(adapter.device)
    stacked = torch.from_numpy(np.stack(windows)).to(adapter.device)
    lengths = torch.full((n,), adapter.window)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n, adapter.batch_size):
            adapter.frontend(stacked[start:start + adapter.batch_size], lengths[start:start + adapter.batch_size])
    frontend_s = time.perf_counter() - t0
    with torch.inference_mode():
        adapter.model.get_audio_features(input_features=features[:1])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, n, adapter.batch_size):
            adapter.model.get_audio_features(input_features=features[start:start + adapter.batch_size])
        model_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    audio_s = n * adapter.window / 48000
    return {"model_x": round(audio_s / model_s, 1), "model_cpu_x": round(audio_s * torch.get_num_threads() / cpu_s, 1),
            "processor_x": round(audio_s / processor_s, 1), "frontend_x": round(audio_s / frontend_s, 1)}


if __name__ == "__main__":
    run_random_weight_bench(__doc__.splitlines()[0], clap_unfused, bare_model, "bare 10 s windows", "3 s grid, each segment padded to 10 s")
