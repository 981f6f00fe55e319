#!/usr/bin/env bash
# Train the round-2 model (member 0, the shipped one) and the round-2 ablation without group
# CG to convergence on the same data with the same budget: all data (the original 4,620
# structures and the 624 frames of both rounds, every epoch), until the validation loss has
# not improved for 4 epochs (learning rate halved after 2 stale epochs), at most 60 epochs;
# one after the other, one thread each (the other core runs the classical reference REMD).
# Resumable (checkpoints every 50 steps): run it again to continue. Then each is exported
# with its test metrics (runs/active/converge/).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
OUT=runs/active/converge
mkdir -p "$OUT"
train_and_export "$OUT" converge_m0
train_and_export "$OUT" converge_ablation
