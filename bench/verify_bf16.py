"""bfloat16 against float32 for each model family, segment by segment, on the shared data.

What the catalogue's ``bf16_cosine`` values come from: each model's vectors on
the 3 s grid of real clips (ESC-50, whole tracks, instrument notes, speech),
with the network under bfloat16 autocast and in float32
(:func:`core.models.stages.verify_bf16`); a model runs in bfloat16 only if the
lowest cosine is at least 0.999.  musicnn, VGG and aisfx use their real
weights where installed; CLAP, MERT and OpenL3 cannot be fetched here and
use their real architectures with random weights (``bench/random_models.py``).

    python bench/verify_bf16.py [--device cpu] [--clips 6] [--model KEY ...] [--weights random] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.random_models import build  # noqa: E402
from core.audio import load, segment_grid  # noqa: E402
from core.models import stages  # noqa: E402
from core.models.base import ModelUnavailable, load_model  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = ("esc50_subset", "librosa_examples", "gm_notes", "fsdd")
MODELS = ("aisfx", "musicnn-msd", "musicnn-mtt", "vgg-msd", "vgg-mtt", "clap-htsat-unfused", "mert-v1-95m",
          "openl3-mel128-music-512")


def adapter_for(key: str, device: str, weights: str):
    """The real weights where they can be loaded here (unless ``weights`` is "random"), else the architecture
    with random weights."""
    if weights != "random":
        try:
            return load_model(key, device), "real"
        except ModelUnavailable:
            pass
    return build(key, device), "random"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", type=int, default=6, help="clips per data set")
    parser.add_argument("--seconds", type=float, default=30.0, help="longest excerpt per clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", action="append", help="catalogue key (repeatable)")
    parser.add_argument("--weights", choices=("auto", "random"), default="auto",
                        help="random: never try to load or fetch real weights (a machine without network)")
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding the data sets (default ../shared/data)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        sys.exit(f"{args.data} is not present")
    paths = [args.data / name / rel for name in SETS
             for rel in pd.read_csv(args.data / name / "metadata.csv").head(args.clips)["path"]]
    rows = []
    for key in args.model or MODELS:
        adapter, weights = adapter_for(key, args.device, args.weights)
        clips = [load(p, duration_s=args.seconds, dtype=adapter.entry.input_dtype) for p in paths]
        t0 = time.perf_counter()
        result = stages.verify_bf16(adapter, clips, segment_grid)
        rows.append({"model": key, "weights": weights, **result, "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    print(f"{', '.join(SETS)}: {args.clips} clips each, at most {args.seconds:g} s; device {args.device}")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
