#!/usr/bin/env bash
# Active learning, round 1: frames of the shipped model's own MD, labelled with
# GFN2-xTB/ALPB(water), and a fine-tune of two committee members (seeds 0 and 1, one split)
# and of the ablation without group CG on them. Every stage skips what is done, so running
# the script again continues it.
#
# The pool: every 0.25 ps of the 12 ps equilibration of the shipped start states (8
# replicas, 300-450 K, half folded and half unfolded; runs/starts_equilibration, made by
# simulations/prepare_starts.py), and every 0.1 ps of 2 ps Langevin probes at 500 and 600 K
# (4 trajectories each from the start states). Round 1 has no committee yet to rank frames,
# so it labels all of them.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
OUT=runs/active/round_1
DATA=data/chignolin/active_round1
mkdir -p "$OUT"

for T in 500 600; do
  $PY simulations/langevin_chignolin.py --initial shipped --trajectories 4 \
    --temperature $T --steps 2000 --report-interval 50 --checkpoint-interval 250 --seed $T \
    --threads 1 --no-plots --no-bond-guard --output "$OUT/probe_${T}K" --resume \
    || echo "the $T K probe stopped (its frames up to the stop are kept)"
done

[ -f "$OUT/pool_300_450K.npz" ] || $PY -m freecg_md.cli harvest runs/starts_equilibration \
    --spacing-ps 0.25 --out "$OUT/pool_300_450K.npz"
for T in 500 600; do
  [ -f "$OUT/pool_${T}K.npz" ] || $PY -m freecg_md.cli harvest "$OUT/probe_${T}K" \
      --spacing-ps 0.1 --out "$OUT/pool_${T}K.npz"
done
for pool in 300_450K 500K 600K; do
  $PY -m freecg_md.cli label "$OUT/pool_$pool.npz" "$DATA/md_$pool" --chunk-size 32
done

# Two epochs each (the budget is steps, not minutes, so that runs sharing the CPU get the
# same); the members side by side, one thread each, then the ablation.
train_and_export "$OUT" round1_m0 round1_m1
train_and_export "$OUT" round1_ablation
