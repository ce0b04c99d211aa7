#!/usr/bin/env bash
# Prepare a machine without network for bench/gpu/run.sh, from one with it:
# the wheels its image lacks into .whl/ (CPython 3.12, manylinux x86-64, one
# version each, no dependencies pulled in) and a few clips of each data set of
# ../shared/data into .gpu-data/ for the bfloat16 check.  Both folders are
# git-ignored; together about 40 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
binary=(duckdb==2.0.1 soundfile==0.14.0 cffi==2.0.0 soxr==1.1.0 samplerate==0.2.4)
pure=(pycparser==3.12 resampy==0.4.3 librosa==0.11.0 audioread==3.1.0 pooch==1.9.0 platformdirs==4.14.9
      decorator==5.3.1)
for spec in "${binary[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$spec"
done
for spec in "${pure[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "$spec"
done
python3 - "${CLIPS:-4}" <<'PY'
import csv, shutil, sys
from pathlib import Path

n = int(sys.argv[1])
for name in ("esc50_subset", "librosa_examples", "gm_notes", "fsdd"):
    src, dst = Path("../shared/data") / name, Path(".gpu-data") / name
    with open(src / "metadata.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)[:n]
    dst.mkdir(parents=True, exist_ok=True)
    with open(dst / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        (dst / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / row["path"], dst / row["path"])
PY
du -sh .whl .gpu-data
