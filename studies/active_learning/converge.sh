#!/usr/bin/env bash
# Train the round-2 model (member 0, the shipped one) and the round-2 ablation without group
# CG to convergence on the same data with the same budget: all data (the original 4,620
# structures and the 624 frames of both rounds, every epoch), until the validation loss has
# not improved for 4 epochs (learning rate halved after 2 stale epochs), at most 60 epochs;
# both start from the shipped files (freecg_md/models/chignolin.pt, chignolin_visnet.pt)
# and train side by side, one thread each.
#
# Resumable (checkpoints every 50 steps): run it again to continue. The run directories
# (studies/active_learning/run/converge_*) are committed with `git add -f` while unfinished
# (checkpoint.pt, best_model.pt, split.json, config.json, log.csv; not the data cache,
# which is rebuilt), so that a fresh checkout continues where the last commit left them.
# Then each is exported with its test metrics (runs/active/converge/).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
OUT=runs/active/converge
mkdir -p "$OUT" studies/active_learning/run
train_and_export "$OUT" converge_m0 converge_ablation
