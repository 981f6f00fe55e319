#!/usr/bin/env bash
# Reference data for the shipped chignolin model: classical conformations (OpenMM, amber14 +
# GBn2), then GFN2-xTB/ALPB(water) labels. Idempotent and resumable: finished temperatures
# and labelled chunks are kept, a rerun does only what is missing.
#
#   nohup scripts/make_chignolin_data.sh [N_WORKERS] > data/chignolin/make.log 2>&1 &
#
# N_WORKERS (default 1) processes sample and label, one thread each; the default leaves a core
# of a 2-core machine to other work. The worker count may change between runs: chunks are
# assigned by index, so any split picks up whatever is missing.
#
# Output: data/chignolin/frames.npz, data/chignolin/labelled/chunk_*.extxyz, and logs beside
# them (sample_w*.log, label_w*.log; failed frames in labelled/failed_w*.csv).
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$script")/.."
workers=${1:-1}
py=${PYTHON:-.venv/bin/python}
out=data/chignolin
mkdir -p "$out"
export OMP_NUM_THREADS=1 OPENMM_CPU_THREADS=1 PYTHONPATH=${PYTHONPATH:-$PWD}

# Two runs at once would compute the same chunks twice: refuse, including against labellers
# started by hand. The lock is held on this script itself, so no lock file is left behind.
exec 9<"$script"
if ! flock -n 9 || pgrep -f "freecg_md.data.(sample|label) $out/frames.npz" >/dev/null; then
  echo "another sampling/labelling run on $out is active; not starting" >&2
  exit 1
fi

if [ ! -f "$out/frames.npz" ]; then
  for ((w = 0; w < workers; w++)); do
    "$py" -m freecg_md.data.sample "$out/frames.npz" --worker "$w" --n-workers "$workers" \
      >>"$out/sample_w$w.log" 2>&1 &
  done
  wait
  # The last worker to finish assembles frames.npz; run once more in case of a race.
  "$py" -m freecg_md.data.sample "$out/frames.npz" --worker 0 --n-workers 1 \
    >>"$out/sample_w0.log" 2>&1
fi

for ((w = 0; w < workers; w++)); do
  "$py" -m freecg_md.data.label "$out/frames.npz" "$out/labelled" --worker "$w" \
    --n-workers "$workers" >>"$out/label_w$w.log" 2>&1 &
done
wait
echo "labelled chunks: $(find "$out/labelled" -name 'chunk_*.extxyz' | wc -l)"
