#!/usr/bin/env bash
# Reference data for the shipped chignolin model: classical conformations (OpenMM, amber14 +
# GBn2), then GFN2-xTB/ALPB(water) labels. Idempotent and resumable: finished temperatures
# and labelled chunks are kept, a rerun does only what is missing.
#
#   scripts/make_chignolin_data.sh [N_WORKERS]     (default 2; one process per core)
#
# Output: data/chignolin/frames.npz, data/chignolin/labelled/chunk_*.extxyz, logs beside.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-2}
py=${PYTHON:-.venv/bin/python}
out=data/chignolin
mkdir -p "$out"
export OMP_NUM_THREADS=1 OPENMM_CPU_THREADS=1

if [ ! -f "$out/frames.npz" ]; then
  for ((w = 0; w < workers; w++)); do
    "$py" -m freecg_md.data.sample "$out/frames.npz" --worker "$w" --n-workers "$workers" \
      >"$out/sample_w$w.log" 2>&1 &
  done
  wait
  # The last worker to finish assembles frames.npz; run once more in case of a race.
  "$py" -m freecg_md.data.sample "$out/frames.npz" --worker 0 --n-workers 1 >>"$out/sample_w0.log" 2>&1
fi

for ((w = 0; w < workers; w++)); do
  "$py" -m freecg_md.data.label "$out/frames.npz" "$out/labelled" --worker "$w" \
    --n-workers "$workers" >"$out/label_w$w.log" 2>&1 &
done
wait
echo "labelled chunks: $(ls "$out"/labelled/chunk_*.extxyz | wc -l)"
