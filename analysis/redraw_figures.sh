#!/usr/bin/env bash
# Redraw the figures of docs/figures/ from the numbers shipped in docs/results/ (no MD, no
# labelling; the error figures evaluate the shipped models on the labelled conformations).
# A result that is not shipped yet is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
PY=${PY:-.venv/bin/python}
FIGURES=docs/figures
RESULTS=docs/results
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# replica_figures NPZ PREFIX: a replica-exchange run's landscape, melting curve and
# exchanges as FIGURES/PREFIX_{landscape,melting,remd}.png, its verdict and melting fit as
# FIGURES/PREFIX_{convergence,melting}.json.
replica_figures() {
  local out="$scratch/$2"
  $PY -m freecg_md.cli plot landscape "$1" --out "$out"
  $PY -m freecg_md.cli plot remd "$1" --out "$out"
  for name in landscape melting remd; do
    cp "$out/$name.png" "$FIGURES/$2_$name.png"
  done
  cp "$out/convergence.json" "$FIGURES/$2_convergence.json"
  cp "$out/melting.json" "$FIGURES/$2_melting.json"
}

# The flagship's default run (make demo): landscape, melting curve, exchanges, verdict.
if [ -f $RESULTS/demo_remd.npz ]; then
  $PY -m freecg_md.cli plot landscape $RESULTS/demo_remd.npz --out "$scratch/demo"
  $PY -m freecg_md.cli plot remd $RESULTS/demo_remd.npz --out "$scratch/demo"
  cp "$scratch/demo/landscape.png" "$scratch/demo/melting.png" "$scratch/demo/remd.png" $FIGURES/
  cp "$scratch/demo/convergence.json" $FIGURES/convergence_demo.json
else
  echo "skipped the demo figures: no $RESULTS/demo_remd.npz"
fi

# Figure 5b: errors per basin on labelled 300 K conformations of the shipped model's MD.
if [ -f $RESULTS/conformations_300K.extxyz.gz ]; then
  $PY analysis/basin_errors.py --labelled $RESULTS/conformations_300K.extxyz.gz --out $FIGURES
else
  echo "skipped figure 5b: no $RESULTS/conformations_300K.extxyz.gz"
fi

# Figure 5a (long REMD) and 5c (RMSD band), once their runs are reduced.
if [ -f $RESULTS/remd_chignolin.npz ]; then
  replica_figures $RESULTS/remd_chignolin.npz remd_chignolin
else
  echo "skipped figure 5a: no $RESULTS/remd_chignolin.npz (studies/chignolin_remd/)"
fi
if [ -f $RESULTS/rmsd_chignolin.npz ]; then
  $PY -m freecg_md.cli plot rmsd $RESULTS/rmsd_chignolin.npz --out "$scratch/rmsd"
  cp "$scratch/rmsd/rmsd.png" $FIGURES/rmsd.png
else
  echo "skipped figure 5c: no $RESULTS/rmsd_chignolin.npz (studies/chignolin_rmsd/)"
fi

# The stability runs: largest force and longest X-H bond over time, failures marked.
if [ -f $RESULTS/stability/stability.csv ]; then
  $PY analysis/plot_stability.py $RESULTS/stability $FIGURES/stability.png
else
  echo "skipped the stability figure: no $RESULTS/stability/ (studies/chignolin_stability/)"
fi

# The classical reference (studies/classical_remd/): landscape, melting curve and fit,
# exchanges, the ML runs over its landscape, figure 5b on its 300 K conformations.
if [ -f $RESULTS/classical_remd.npz ]; then
  replica_figures $RESULTS/classical_remd.npz classical_remd
  ml=()
  for f in $RESULTS/remd_chignolin.npz $RESULTS/md300.npz; do [ -f "$f" ] && ml+=("$f"); done
  if [ ${#ml[@]} -gt 0 ]; then
    $PY -m freecg_md.cli plot overlay $RESULTS/classical_remd.npz "${ml[@]}" \
        --out "$scratch/overlay"
    cp "$scratch/overlay/overlay.png" $FIGURES/ml_over_classical.png
    cp "$scratch/overlay/overlay.json" $FIGURES/ml_over_classical.json
  fi
  if [ -f $RESULTS/conformations_classical_300K.extxyz.gz ]; then
    $PY analysis/basin_errors.py --labelled $RESULTS/conformations_classical_300K.extxyz.gz --spacing 5 \
        --out "$scratch/classical_basins"
    for name in basin_errors.png basin_errors.csv basin_errors_summary.csv; do
      cp "$scratch/classical_basins/$name" "$FIGURES/classical_$name"
    done
  fi
else
  echo "skipped the classical reference: no $RESULTS/classical_remd.npz (studies/classical_remd/)"
fi
