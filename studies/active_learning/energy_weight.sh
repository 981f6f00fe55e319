#!/usr/bin/env bash
# How the loss's energy weight moves the energy bias on frames of the model's own MD.
#
# Each config in configs/active/energy_weight/ fine-tunes the shipped model for one short
# epoch (a random 10 % of the convergence runs' training structures, the same for every
# weight; warm-up 10 steps, lr 2e-4, one thread) with force weight 0.95 and its own energy
# weight; each run's weights at the end of that epoch are exported (`export --latest`: the
# EMA weights where it stopped, not the best-validating, which may be the start), and
# analysis/convergence_errors.py scores them, and the shipped file, on the held-out
# structures by origin and on the 300 K probe. Resumable: a finished weight is skipped.
# Results: docs/results/active_learning/energy_weight.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
PY=.venv/bin/python
OUT=runs/active/energy_weight
mkdir -p "$OUT"
models=(--model shipped=freecg_md/models/chignolin.pt)
for config in configs/active/energy_weight/w*.json; do
  name=$(basename "$config" .json)
  [ -f "$OUT/$name/model.pt" ] || $PY -m freecg_md.cli train "$config" --resume \
      > "$OUT/train_$name.log" 2>&1
  [ -f "$OUT/$name.pt" ] || $PY -m freecg_md.cli export "$config" "$OUT/$name.pt" --latest \
      --threads 1 > "$OUT/export_$name.json"
  models+=(--model "$name=$OUT/$name.pt")
done
$PY analysis/convergence_errors.py configs/active/converge_m0.json "${models[@]}" \
    --probe docs/results/active_learning/probe_300K_v1.extxyz.gz --threads 1 \
    --out docs/results/active_learning/energy_weight.json
