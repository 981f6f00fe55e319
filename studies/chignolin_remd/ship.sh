#!/usr/bin/env bash
# Ship the finished REMD run: its per-frame numbers (production and equilibration) to
# docs/results/, then the figures redrawn from them (figure 5a).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m freecg_md.cli reduce studies/chignolin_remd/run docs/results/remd_chignolin.npz \
    --name "figure 5a REMD"
.venv/bin/python -m freecg_md.cli reduce studies/chignolin_remd/run/equilibration \
    docs/results/remd_chignolin_equilibration.npz --name "figure 5a REMD, equilibration"
analysis/redraw_figures.sh
