"""CPU extraction throughput of the MERT adapter, in seconds of audio per second.

The hub is out of reach here, so the network is the MERT-v1-95M architecture
(``HubertConfig`` defaults, which are MERT-v1-95M's: 7 conv layers with group
norm, 768-D, 12 layers) with random weights, which cost the same as the
trained ones, behind a 24 kHz normalising ``Wav2Vec2FeatureExtractor``.  Two
figures:

* ``model_x``: the bare network on 5 s passes (all hidden states returned);
* ``embed_x``: the adapter as the pipeline calls it (resample, normalise,
  network, frame means; one ``embed`` per decoded clip on the 3 s grid).

Layer spaces (``mert-v1-95m/lN``) come from the same passes: see ``bench_layers.py``.

    python bench/bench_mert.py [--threads 2] [--limit 8] [--device cpu]
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
from bench.random_models import mert_95m  # noqa: E402
from core.models import mert  # noqa: E402


def bare_model(adapter: mert.MertAdapter, n: int) -> dict:
    rng = np.random.default_rng(0)
    window = int(mert.PASS_SECONDS * adapter.rate)
    passes = 0.1 * rng.standard_normal((n, window)).astype(np.float32)
    adapter.hidden_states(passes[:1])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, adapter.batch_size):
        adapter.hidden_states(passes[start:start + adapter.batch_size])
    model_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    audio_s = n * mert.PASS_SECONDS
    return {"model_x": round(audio_s / model_s, 1), "model_cpu_x": round(audio_s * torch.get_num_threads() / cpu_s, 1)}


if __name__ == "__main__":
    run_random_weight_bench(__doc__.splitlines()[0], mert_95m, bare_model, "bare 5 s passes", "3 s grid")
