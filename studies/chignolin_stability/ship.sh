#!/usr/bin/env bash
# Ship the finished stability runs: the table per trajectory, the per-frame numbers and
# the figure (written by the stability command's analysis).
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m freecg_md.cli stability --temperatures 450 600 800 --trajectories 8 \
    --steps 10000 --output studies/chignolin_stability/run --analyse-only
mkdir -p docs/results/stability
cp studies/chignolin_stability/run/stability.csv studies/chignolin_stability/run/stability_summary.json \
   studies/chignolin_stability/run/stability_frames.csv.gz docs/results/stability/
cp studies/chignolin_stability/run/stability.png docs/figures/stability.png
