#!/usr/bin/env bash
# Ship the classical reference run: its per-frame numbers, its landscape, melting curve and
# exchange figures, and the ML runs drawn over its landscape.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m freecg_md.cli reduce studies/classical_remd/run docs/results/classical_remd.npz \
    --name "classical amber14 + GBn2"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
.venv/bin/python -m freecg_md.cli plot landscape docs/results/classical_remd.npz --out "$scratch"
.venv/bin/python -m freecg_md.cli plot remd docs/results/classical_remd.npz --out "$scratch"
for name in landscape melting remd; do
  cp "$scratch/$name.png" "docs/figures/classical_remd_$name.png"
done
cp "$scratch/convergence.json" docs/figures/classical_remd_convergence.json
cp "$scratch/melting.json" docs/figures/classical_remd_melting.json
# Where the ML runs went against it, on the same axes and bins.
ml=()
for f in docs/results/remd_chignolin.npz docs/results/md300.npz; do [ -f "$f" ] && ml+=("$f"); done
if [ ${#ml[@]} -gt 0 ]; then
  .venv/bin/python -m freecg_md.cli plot overlay docs/results/classical_remd.npz "${ml[@]}" \
      --out "$scratch/overlay"
  cp "$scratch/overlay/overlay.png" docs/figures/ml_over_classical.png
  cp "$scratch/overlay/overlay.json" docs/figures/ml_over_classical.json
fi
