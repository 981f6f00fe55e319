#!/usr/bin/env bash
# Train the round-2 member 0 to convergence on all data (the original 4,620 structures and
# the 624 frames of both rounds, every epoch), until the validation loss has not improved
# for 4 epochs (learning rate halved after 2 stale epochs), at most 60 epochs; and the
# ablation's round-1 fine-tune beside it. Resumable (checkpoints every 50 steps): run it
# again to continue.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
OUT=runs/active/converge
mkdir -p "$OUT"
train_and_export runs/active/round_1 round1_ablation &
train_and_export "$OUT" converge_m0 &
wait
