#!/usr/bin/env bash
# Ship the finished 2 fs REMD: its per-frame numbers, and the rung-by-rung comparison with
# figure 5a's 1 fs run (kinetic temperatures, mean potential energies).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m freecg_md.cli reduce studies/chignolin_remd_hmr/run docs/results/remd_hmr_2fs.npz \
    --name "REMD at 2 fs"
.venv/bin/python analysis/timestep_check.py docs/results/remd_chignolin.npz \
    docs/results/remd_hmr_2fs.npz --out docs/results/remd_timestep_check.json
