#!/usr/bin/env bash
# Score the convergence runs' best weights where they stand (studies/active_learning/converge.sh):
# errors by origin against the training targets, the own-MD training frames included
# (analysis/convergence_errors.py), the energy error's trend with compactness
# (analysis/energy_error_trend.py) and where the own-MD energy bias comes from
# (analysis/energy_bias_sources.py), on the held-out structures, the 300 K probe of
# chignolin_v1.pt's MD, the 47 labelled frames of chignolin.pt's own 300 K MD (the
# shipped model the runs start from; figure 5b's conformations) and, for the errors by
# origin, the frames of each own-MD check of FreeCG's convergence weights. Each run's
# best_model.pt is copied first (training overwrites it) and named by the epoch it holds; the
# reports go to docs/results/active_learning/{convergence_errors,energy_error_trend,energy_bias_sources}_<run>_epoch<N>.json,
# each with the model file's fingerprint. Then both runs' learning curves as they stand
# (analysis/learning_curve.py: docs/results/active_learning/learning_curve.json,
# docs/figures/learning_curve.png), both errors from stage two on: the loss changes there
# and so does the course of the force error too (one geometric curve through all epochs
# leaves residuals ten times those of one through stage two alone), so a fit across the
# switch would mix two regimes.
#
#     studies/active_learning/converge_report.sh [converge_m0] [converge_ablation]
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
PY=.venv/bin/python
RESULTS=docs/results/active_learning
PROBE=$RESULTS/probe_300K_v1.extxyz.gz
OWN="own MD of chignolin.pt at 300 K=docs/results/conformations_300K.extxyz.gz"
# The frames of FreeCG's convergence weights' own REMD (own_md_check.sh), one set per epoch
# checked: the region the model's MD reached most recently.
OWN_MD_SETS=()
for folder in "$RESULTS"/own_md_m0_epoch*/; do
    [ -d "$folder" ] || continue
    checked=${folder%/}
    OWN_MD_SETS+=(--set "REMD of FreeCG epoch ${checked##*epoch}=$checked")
done
mkdir -p runs/active/snap
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(converge_m0 converge_ablation)
for name in "${runs[@]}"; do
    best=studies/active_learning/run/$name/best_model.pt
    [ -f "$best" ] || { echo "$best is missing: has $name finished an epoch?" >&2; exit 2; }
    # Copied before its epoch is read: training replaces best_model.pt when an epoch ends.
    short=${name#converge_}
    taken=runs/active/snap/${short}_taken.pt
    cp "$best" "$taken"
    epoch=$($PY -c "from freecg_md.io import load_model; print(load_model('$taken').metadata['epoch'])")
    copy=runs/active/snap/${short}_epoch$epoch.pt
    mv "$taken" "$copy"
    $PY analysis/convergence_errors.py configs/active/$name.json --model "epoch$epoch=$copy" \
        --probe "$PROBE" --set "$OWN" "${OWN_MD_SETS[@]}" --training-own-md --threads 1 \
        --out "$RESULTS/convergence_errors_${short}_epoch$epoch.json" > /dev/null
    $PY analysis/energy_error_trend.py configs/active/$name.json --model "epoch$epoch=$copy" \
        --probe "$PROBE" --set "$OWN" --threads 1 \
        --out "$RESULTS/energy_error_trend_${short}_epoch$epoch.json" > /dev/null
    $PY analysis/energy_bias_sources.py configs/active/$name.json --model "epoch$epoch=$copy" \
        --set "probe, own MD at 300 K=$PROBE" --set "$OWN" --threads 1 --out "$RESULTS/energy_bias_sources_${short}_epoch$epoch.json" \
        > /dev/null
    echo "$name epoch $epoch: $RESULTS/{convergence_errors,energy_error_trend,energy_bias_sources}_${short}_epoch$epoch.json"
done
$PY analysis/learning_curve.py studies/active_learning/run/converge_m0 \
    studies/active_learning/run/converge_ablation \
    --out $RESULTS/learning_curve.json --figure docs/figures/learning_curve.png
