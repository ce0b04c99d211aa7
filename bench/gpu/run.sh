#!/usr/bin/env bash
# The whole GPU benchmark on a fresh machine, within about five minutes:
#
#   bash bench/gpu/run.sh OUT_DIR               # on a CUDA machine
#   bash bench/gpu/run.sh OUT_DIR --device cpu  # the dry run: tiny input, same code
#
# Each model runs in a process of its own with a time cap, and appends its
# result to OUT_DIR/results.jsonl and OUT_DIR/table.md as soon as it has it, so
# a run cut short still leaves figures.  Packages the machine lacks are
# installed from wheels in .whl/ (bench/gpu/fetch_wheels.sh downloads them
# beforehand); the bfloat16 check reads clips in .gpu-data/ when they are there
# (bench/gpu/fetch_wheels.sh copies a few from ../shared/data).
set -uo pipefail
PY=${PYTHON:-python3}  # the interpreter: the machine's python3, or e.g. PYTHON=.venv/bin/python for a dry run here
OUT=${1:?usage: bench/gpu/run.sh OUT_DIR [--device cpu]}
DEVICE=cuda
[ "${2:-}" = "--device" ] && DEVICE=${3:?--device needs a value}
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! $PY -c "import duckdb, soundfile, soxr, samplerate, resampy, librosa" 2>/dev/null; then
  [ -d .whl ] || { echo "missing packages and no .whl/ folder: run bench/gpu/fetch_wheels.sh first"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

if [ "$DEVICE" = cpu ]; then
  TRACKS=2; SECONDS_PER_TRACK=6; TARGET=3; SCALE=2; EXTRA="--workers 2 --max-tracks 6 --batch-size 4 --cpu-tracks 1"
else
  TRACKS=16; SECONDS_PER_TRACK=30; TARGET=15; SCALE=1; EXTRA=""
fi
AUDIO=$(mktemp -d)/audio
$PY bench/gpu/gpu_bench.py env --out "$OUT" || exit 2
$PY bench/gpu/gpu_bench.py audio "$AUDIO" --tracks $TRACKS --seconds $SECONDS_PER_TRACK || exit 2

# model, precision, seconds allowed
while read -r model precision cap; do
  [ "$DEVICE" = cpu ] && cap=$((cap * 4))
  echo "== $model $precision (at most $cap s)"
  timeout --kill-after=5 "$cap" $PY bench/gpu/gpu_bench.py model "$model" --precision "$precision" \
    --device "$DEVICE" --audio "$AUDIO" --out "$OUT" --target-s $TARGET --cap-s "$cap" $EXTRA \
    || echo "| $model | $precision | stopped (exit $?) after at most $cap s | | | | | | | | |" >> "$OUT/table.md"
done <<'MODELS'
clap-htsat-unfused bf16 60
clap-htsat-unfused fp32 35
mert-v1-95m bf16 35
aisfx bf16 30
musicnn-msd bf16 30
openl3-mel128-music-512 bf16 60
MODELS

if [ -d .gpu-data ]; then
  echo "== bf16 against fp32 on shared clips"
  CLIPS=4; [ "$DEVICE" = cpu ] && CLIPS=1
  MODELS=""
  for key in clap-htsat-unfused clap-htsat-fused mert-v1-95m mert-v1-95m-l0 mert-v1-95m-l4 mert-v1-95m-l8 \
             mert-v1-95m-l12 vgg-mtt vgg-msd musicnn-msd musicnn-mtt aisfx openl3-mel128-music-512; do
    MODELS="$MODELS --model $key"
  done
  timeout --kill-after=5 $((40 * SCALE)) $PY bench/verify_bf16.py --device "$DEVICE" --weights random \
    --data .gpu-data --clips $CLIPS --threads 8 $MODELS > "$OUT/bf16.txt" 2>&1 \
    || echo "stopped (exit $?)" >> "$OUT/bf16.txt"
fi
cat "$OUT/table.md"
