#!/usr/bin/env bash
# Active learning, round 2: MD of the round-1 committee (members m0 and m1, their mean
# force) at 8 temperatures from 300 to 600 K (no exchanges) from the shipped start states,
# half folded and half unfolded, with the committee's force disagreement logged per frame;
# frames every 0.1 ps after 0.5 ps, the 80 the committee disagrees on most labelled with
# GFN2-xTB/ALPB(water); each member fine-tuned from its round-1 run on all data. Every
# stage skips what is done: running the script again continues it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
R1=runs/active/round_1
OUT=runs/active/round_2
DATA=data/chignolin/active_round2
mkdir -p "$OUT"
COMMITTEE=("$R1/round1_m0.pt" "$R1/round1_m1.pt")

$PY simulations/remd_chignolin.py --model "${COMMITTEE[@]}" \
  --temperatures 300 340 380 420 460 510 555 600 --exchange-interval 0 --initial shipped \
  --timestep 1 --hydrogen-mass 1.008 \
  --equilibration-steps 200 --steps 2500 --report-interval 50 --checkpoint-interval 250 \
  --seed 22 --no-bond-guard --no-plots --output "$OUT/probe" --resume \
  || echo "the probe stopped (its frames up to the stop are kept)"

[ -f "$OUT/selected.npz" ] || $PY -m freecg_md.cli harvest "$OUT/probe" --spacing-ps 0.1 \
    --discard-ps 0.5 --committee "${COMMITTEE[@]}" --select 80 --out "$OUT/selected.npz"
for worker in 0 1; do
  $PY -m freecg_md.cli label "$OUT/selected.npz" "$DATA/md_committee" --chunk-size 25 \
    --worker $worker --n-workers 2 > "$OUT/label_w$worker.log" 2>&1 &
done
wait

train_and_export "$OUT" round2_m0 round2_m1
# The ablation without group CG on the same data and budget (after round1.sh trained its
# round-1 run).
train_and_export "$OUT" round2_ablation
