#!/usr/bin/env bash
# Reference data for the shipped chignolin model: classical conformations (OpenMM, amber14 +
# GBn2) in two parts, then GFN2-xTB/ALPB(water) labels for each. Idempotent and resumable:
# finished temperatures and labelled chunks are kept, a rerun does only what is missing.
#
#   nohup scripts/make_chignolin_data.sh [N_WORKERS] > data/chignolin/make.log 2>&1 &
#
# N_WORKERS (default 1) processes sample and label, one thread each; the default leaves a core
# of a 2-core machine to other work. The worker count may change between runs: chunks are
# assigned by index, so any split picks up whatever is missing.
#
# Output: data/chignolin/{frames,frames_flexible}.npz, labelled chunks in
# data/chignolin/{labelled,labelled_flexible}/, and logs beside them (sample_*_w*.log,
# label_*_w*.log; failed frames in <dir>/failed_w*.csv).
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
if ! flock -n 9 || pgrep -f "freecg_md.data.(sample|label) $out/frames" >/dev/null; then
  echo "another sampling/labelling run on $out is active; not starting" >&2
  exit 1
fi

# sample NAME ARGS...: conformations into $out/NAME.npz, split over the workers.
sample() {
  local name=$1; shift
  [ -f "$out/$name.npz" ] && return 0
  for ((w = 0; w < workers; w++)); do
    "$py" -m freecg_md.data.sample "$out/$name.npz" --worker "$w" --n-workers "$workers" "$@" \
      >>"$out/sample_${name}_w$w.log" 2>&1 &
  done
  wait
  # The last worker to finish assembles the .npz; run once more in case of a race.
  "$py" -m freecg_md.data.sample "$out/$name.npz" --worker 0 --n-workers 1 "$@" \
    >>"$out/sample_${name}_w0.log" 2>&1
}

# label NAME DIR: GFN2-xTB/ALPB labels of $out/NAME.npz into $out/DIR/chunk_*.extxyz.gz.
label() {
  for ((w = 0; w < workers; w++)); do
    "$py" -m freecg_md.data.label "$out/$1.npz" "$out/$2" --worker "$w" \
      --n-workers "$workers" >>"$out/label_$2_w$w.log" 2>&1 &
  done
  wait
  echo "$2: $(find "$out/$2" -name 'chunk_*.extxyz*' | wc -l) labelled chunks"
}

# Part 1 (3,420 frames): the first data set, sampled with X-H bonds constrained at 4 fs.
# Kept for reproducibility of the shipped model; on its own it lacks stretched X-H bonds.
sample frames --constrain-hydrogen-bonds --timestep-fs 4 --hydrogen-mass-amu 3 \
  --frames-per-temperature 570 --seed 2024
label frames labelled
# Part 2 (1,200 frames): unconstrained at 1 fs (the sampler's default), new seeds, so the
# data holds the thermal X-H stretches the model's own MD visits.
sample frames_flexible --frames-per-temperature 200 --seed 3024
label frames_flexible labelled_flexible
