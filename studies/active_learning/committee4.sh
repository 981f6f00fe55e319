#!/usr/bin/env bash
# Members 2 and 3 of the committee: trained exactly as members 0 and 1 (round 1 from
# chignolin_v1.pt, then round 2 on all data, one shared split), with seeds 2 and 3, side
# by side with one thread each; then the four-member committee's errors and calibration
# on the round-2 sets and the 300 K probe. Every stage skips what is done: running the
# script again continues it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
mkdir -p runs/active/round_1 runs/active/round_2
train_and_export runs/active/round_1 round1_m2 round1_m3
train_and_export runs/active/round_2 round2_m2 round2_m3
COMMITTEE=(models/chignolin.pt models/chignolin_m1.pt runs/active/round_2/round2_m2.pt
           runs/active/round_2/round2_m3.pt)
[ -f docs/results/active_learning/committee4.json ] || $PY analysis/active_learning_report.py \
    configs/active/round2_m0.json --model m0=models/chignolin.pt \
    --model m1=models/chignolin_m1.pt --model m2=runs/active/round_2/round2_m2.pt \
    --model m3=runs/active/round_2/round2_m3.pt --committee "${COMMITTEE[@]}" \
    --probe docs/results/active_learning/probe_300K_v1.extxyz.gz \
    --out docs/results/active_learning/committee4.json \
    --figure docs/figures/committee_calibration_4.png --threads 1
