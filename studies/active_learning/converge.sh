#!/usr/bin/env bash
# Train the shipped FreeCG model and its ablation without group CG to convergence on the
# same data with the same budget, one thread each, side by side, in two phases:
#
# 1. converge_m0 / converge_ablation (configs/active/converge_*.json): from the shipped
#    files (freecg_md/models/chignolin.pt, chignolin_visnet.pt) on the original 4,620
#    structures and the 624 frames of active-learning rounds 1 and 2, 40 epochs (0-39).
#    Epochs 0-8 weigh energies at 0.05 and forces at 0.95; from epoch 9 on (stage two of
#    the loss) energies weigh 10: under the first loss the energies of the own-MD frames
#    barely moved, and of the weights a short fine-tune tried
#    (studies/active_learning/energy_weight.sh: 0.05, 1, 10, 100) 10 fitted energies best
#    at a force cost under 1 % (100 cost 5 %). Up to FreeCG's epoch 34 and the ablation's
#    28 the weighted validation loss was monitored, then the validation force MAE; the
#    plateau schedule and early stopping (4 stale epochs) watch it, but neither had acted
#    when phase 1 was cut at 40 epochs to add round 3's data (models/README.md).
# 2. converge3_m0 / converge3_ablation (configs/active/converge3_*.json): each continues
#    from its phase-1 run's best weights with the 1,152 frames of round 3 added (the REMD
#    of four converge_m0 snapshots at 300-450 K, every 0.1 ps:
#    studies/active_learning/round3_frames.sh), the phase-1 split kept for the earlier
#    structures; energies weigh 10 throughout; until the validation force MAE has not
#    improved for 4 epochs (the learning rate halved at the third stale epoch in a row:
#    plateau patience 2), at most 40 epochs.
#
# The two models train independently (FreeCG may be in phase 2 while the ablation finishes
# phase 1). Resumable (checkpoints every 50 steps): run it again to continue. The run
# directories (studies/active_learning/run/converge*) are committed with `git add -f` while
# unfinished (checkpoint.pt, best_model.pt, split.json, data.json, config.json, log.csv;
# not the data cache, which is rebuilt), so that a fresh checkout continues where the last
# commit left them. Each phase-2 run is then exported with its test metrics
# (runs/active/converge/).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
OUT=runs/active/converge
mkdir -p "$OUT" studies/active_learning/run

# phases FIRST SECOND: train configs/active/FIRST.json, then SECOND.json (each resumed where
# it stands; a finished run, with its test_metrics.json written, is left as it is: resuming
# it would score its test split again and rewrite its files), then export SECOND.
phases() {
  local name
  for name in "$@"; do
    [ -f "studies/active_learning/run/$name/test_metrics.json" ] && continue
    $PY -m freecg_md.cli train "configs/active/$name.json" --resume > "$OUT/train_$name.log" 2>&1
  done
  [ -f "$OUT/$2.pt" ] || $PY -m freecg_md.cli export "configs/active/$2.json" "$OUT/$2.pt" \
      --threads 1 > "$OUT/export_$2.json"
}
phases converge_m0 converge3_m0 &
freecg=$!
phases converge_ablation converge3_ablation &
ablation=$!
wait_all "$0: a training stopped early (logs in $OUT/train_*.log)" "$freecg" "$ablation"
