#!/usr/bin/env bash
# Score the convergence runs' best weights where they stand (studies/active_learning/converge.sh):
# errors by origin against the training targets, the own-MD training frames included
# (analysis/convergence_errors.py), the energy error's trend with compactness
# (analysis/energy_error_trend.py) and where the own-MD energy bias comes from
# (analysis/energy_bias_sources.py), on the held-out structures, the 300 K probe of
# chignolin_v1.pt's MD, the 47 labelled frames of chignolin.pt's own 300 K MD (the
# shipped model the runs start from; figure 5b's conformations) and, for the errors by
# origin, sets from outside the run's data:
#
# - phase 1 (converge_m0, converge_ablation): the frames of each own-MD check of
#   converge_m0's weights (docs/results/active_learning/own_md_m0_epoch*/) and round 3's
#   frames (data/chignolin/active_round3/, every 0.1 ps of those checks' REMD: the errors
#   on them before training on them);
# - phase 2 (converge3_m0, converge3_ablation, the default): the frames of each own-MD
#   check of converge3_m0's weights (own_md_m0_phase2_epoch*/); round 3's frames are its
#   data, scored by split (the held-out ones lie 0.1 ps from training frames of the same
#   trajectories).
#
# Each run's best_model.pt is copied first (training overwrites it) and named by the epoch
# it holds; the reports go to
# docs/results/active_learning/{convergence_errors,energy_error_trend,energy_bias_sources}_<short>_epoch<N>.json
# (short: m0, ablation, m0_phase2, ablation_phase2), each with the model file's
# fingerprint. Then the learning curves as they stand (analysis/learning_curve.py): phase 1
# (learning_curve.json, docs/figures/learning_curve.png) from stage two of its loss on (the
# loss changes there and so does the course of the force error: one geometric curve through
# all epochs leaves residuals ten times those of one through stage two alone), and phase 2
# on its own (learning_curve_phase2.json, docs/figures/learning_curve_phase2.png): its
# validation set holds round 3's frames too, so its errors do not continue phase 1's.
#
#     studies/active_learning/converge_report.sh [RUN...]    # default: the phase-2 runs
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
PY=.venv/bin/python
RESULTS=docs/results/active_learning
RUNS=studies/active_learning/run
PROBE=$RESULTS/probe_300K_v1.extxyz.gz
OWN="own MD of chignolin.pt at 300 K=docs/results/conformations_300K.extxyz.gz"

# sets_of PATTERN LABEL: a --set per folder matching PATTERN, named "LABEL <epoch>".
sets_of() {
    local folder
    for folder in $1; do
        [ -d "$folder" ] || continue
        folder=${folder%/}
        printf '%s\0' --set "$2 ${folder##*epoch}=$folder"
    done
}

mkdir -p runs/active/snap
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(converge3_m0 converge3_ablation)
for name in "${runs[@]}"; do
    case $name in
        converge_*)
            short=${name#converge_}
            mapfile -d '' outside < <(sets_of "$RESULTS/own_md_m0_epoch*/" "REMD of FreeCG epoch"
                sets_of "data/chignolin/active_round3/own_md_m0_epoch*/" \
                    "round 3, every 0.1 ps of the REMD of FreeCG epoch") ;;
        converge3_*)
            short=${name#converge3_}_phase2
            mapfile -d '' outside < <(sets_of "$RESULTS/own_md_m0_phase2_epoch*/" \
                "REMD of FreeCG phase 2 epoch") ;;
        *) echo "$0: $name: expected converge_* or converge3_*" >&2; exit 2 ;;
    esac
    best=$RUNS/$name/best_model.pt
    [ -f "$best" ] || { echo "$best is missing: has $name finished an epoch?" >&2; exit 2; }
    # Copied before its epoch is read: training replaces best_model.pt when an epoch ends.
    taken=runs/active/snap/${short}_taken.pt
    cp "$best" "$taken"
    epoch=$($PY -c "from freecg_md.io import load_model; print(load_model('$taken').metadata['epoch'])")
    copy=runs/active/snap/${short}_epoch$epoch.pt
    mv "$taken" "$copy"
    $PY analysis/convergence_errors.py configs/active/$name.json --model "epoch$epoch=$copy" \
        --probe "$PROBE" --set "$OWN" "${outside[@]}" --training-own-md --threads 1 \
        --out "$RESULTS/convergence_errors_${short}_epoch$epoch.json" > /dev/null
    $PY analysis/energy_error_trend.py configs/active/$name.json --model "epoch$epoch=$copy" \
        --probe "$PROBE" --set "$OWN" --threads 1 \
        --out "$RESULTS/energy_error_trend_${short}_epoch$epoch.json" > /dev/null
    $PY analysis/energy_bias_sources.py configs/active/$name.json --model "epoch$epoch=$copy" \
        --set "probe, own MD at 300 K=$PROBE" --set "$OWN" --threads 1 \
        --out "$RESULTS/energy_bias_sources_${short}_epoch$epoch.json" > /dev/null
    echo "$name epoch $epoch: $RESULTS/{convergence_errors,energy_error_trend,energy_bias_sources}_${short}_epoch$epoch.json"
done
$PY analysis/learning_curve.py $RUNS/converge_m0 $RUNS/converge_ablation \
    --out $RESULTS/learning_curve.json --figure docs/figures/learning_curve.png
phase2=()
for name in converge3_m0 converge3_ablation; do
    [ -f "$RUNS/$name/log.csv" ] && phase2+=("$RUNS/$name")
done
if [ ${#phase2[@]} -gt 0 ]; then
    $PY analysis/learning_curve.py "${phase2[@]}" --out $RESULTS/learning_curve_phase2.json \
        --figure docs/figures/learning_curve_phase2.png
fi
