#!/usr/bin/env bash
# Ship the classical reference run: its per-frame numbers, and its landscape, melting
# curve and exchange figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m freecg_md.cli reduce studies/classical_remd/run docs/results/classical_remd.npz
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
.venv/bin/python -m freecg_md.cli plot landscape docs/results/classical_remd.npz --out "$scratch"
.venv/bin/python -m freecg_md.cli plot remd docs/results/classical_remd.npz --out "$scratch"
for name in landscape melting remd; do
  cp "$scratch/$name.png" "docs/figures/classical_remd_$name.png"
done
cp "$scratch/convergence.json" docs/figures/classical_remd_convergence.json
