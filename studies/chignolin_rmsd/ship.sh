#!/usr/bin/env bash
# Ship the finished RMSD run (figure 5c): its per-frame numbers, then the band redrawn.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m freecg_md.cli reduce studies/chignolin_rmsd/run docs/results/rmsd_chignolin.npz \
    --name "figure 5c"
analysis/redraw_figures.sh
