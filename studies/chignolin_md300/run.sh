#!/usr/bin/env bash
# Conformations of chignolin from the shipped model's own MD at 300 K, for figure 5b
# (resumable: run it again to continue). 8 Langevin trajectories from the shipped start
# states (4 folded, 4 unfolded; velocities drawn at 300 K), 0.5 ps of equilibration, then
# 8 ps each, frames every 0.1 ps.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python simulations/langevin_chignolin.py --initial shipped \
    --trajectories 8 --temperature 300 --equilibration-steps 500 --equilibration-friction 5.0 \
    --steps 8000 --report-interval 100 --checkpoint-interval 500 --seed 2 --no-plots \
    --output studies/chignolin_md300/run --resume
