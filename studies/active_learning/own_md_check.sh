#!/usr/bin/env bash
# The errors of a model on conformations of its own MD, the set the training targets are
# about (issue: a model that holds where its MD goes):
#
#     studies/active_learning/own_md_check.sh MODEL NAME [CONFIG]
#
# 1. REMD of MODEL as figure 5a runs it (8 replicas 300-450 K from the shipped start states,
#    half folded and half unfolded, 1 fs, natural masses, exchanges every 10 steps), 0.5 ps
#    of equilibration, then 4 ps;
# 2. every frame 0.5 ps apart after the first 0.5 ps of production (64 frames), labelled with
#    GFN2-xTB/ALPB(water) by two workers;
# 3. the model's errors on them beside the training run's held-out sets
#    (analysis/convergence_errors.py with CONFIG, default configs/active/converge_m0.json)
#    and where its bias lies (analysis/energy_bias_sources.py).
#
# Work files go to runs/active/own_md/NAME/ (the labeller's failures, if any, in its
# labelled/failed_w*.csv); the labelled frames (with the MD's settings and model fingerprint
# in md_config.json) to docs/results/active_learning/own_md_NAME/ and the reports to
# docs/results/active_learning/own_md_errors_NAME.json and own_md_bias_sources_NAME.json.
# The MD and the labelling skip what is done (run it again to continue); the scoring runs
# each time. THREADS (default 2) sets the MD's torch threads.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 MODEL NAME [CONFIG]" >&2; exit 2; }
[ -f "$1" ] || { echo "$0: MODEL $1 does not exist" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# Paths as given from here, recorded relative to the repository (the reports name them).
MODEL=$(realpath --relative-to="$ROOT" "$1")
NAME=$2
[[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || { echo "$0: NAME $NAME: expected letters, digits, . _ -" >&2; exit 2; }
CONFIG=$(realpath --relative-to="$ROOT" "${3:-$ROOT/configs/active/converge_m0.json}")
cd "$ROOT"
[ -f "$CONFIG" ] || { echo "$0: CONFIG $CONFIG does not exist" >&2; exit 2; }
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
WORK=runs/active/own_md/$NAME
RESULTS=docs/results/active_learning
LABELLED=$RESULTS/own_md_$NAME
mkdir -p "$WORK/labelled" "$LABELLED"

$PY simulations/remd_chignolin.py --model "$MODEL" --initial shipped --timestep 1 \
  --hydrogen-mass 1.008 --exchange-interval 10 --equilibration-steps 500 --steps 4000 \
  --report-interval 100 --checkpoint-interval 500 --seed 41 --threads "${THREADS:-2}" \
  --no-plots --output "$WORK/md" --resume
cp "$WORK/md/config.json" "$LABELLED/md_config.json"

[ -f "$WORK/frames.npz" ] || $PY -m freecg_md.cli harvest "$WORK/md" --spacing-ps 0.5 \
    --discard-ps 0.5 --out "$WORK/frames.npz"
label_in_two "$WORK/frames.npz" "$WORK/labelled" "$WORK/label"
cp "$WORK"/labelled/chunk_*.extxyz.gz "$LABELLED/"

SET="own MD of $NAME=$LABELLED"
$PY analysis/convergence_errors.py "$CONFIG" --model "$NAME=$MODEL" --set "$SET" \
  --threads 1 --out "$RESULTS/own_md_errors_$NAME.json" > /dev/null
$PY analysis/energy_bias_sources.py "$CONFIG" --model "$NAME=$MODEL" --set "$SET" \
  --threads 1 --out "$RESULTS/own_md_bias_sources_$NAME.json" > /dev/null
echo "$NAME: $RESULTS/own_md_errors_$NAME.json, $RESULTS/own_md_bias_sources_$NAME.json"
