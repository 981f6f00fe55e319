#!/usr/bin/env bash
# Ship the 300 K run: its per-frame numbers, and figure 5b from the labelled conformations
# (picked and labelled once: an existing docs/results/conformations_300K.extxyz.gz is used).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m freecg_md.cli reduce studies/chignolin_md300/run docs/results/md300.npz \
    --name "300 K Langevin"
.venv/bin/python -m freecg_md.cli reduce studies/chignolin_md300/run/equilibration \
    docs/results/md300_equilibration.npz --name "300 K Langevin, equilibration"
.venv/bin/python analysis/basin_errors.py studies/chignolin_md300/run \
    --labelled docs/results/conformations_300K.extxyz.gz --per-basin 24 --out docs/figures
