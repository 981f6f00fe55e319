#!/usr/bin/env bash
# Stability: 8 trajectories of chignolin at each of 450, 600 and 800 K with the shipped model,
# 10 ps each, two side by side, failures counted (resumable: run it again to continue).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python simulations/stability_chignolin.py --temperatures 450 600 800 \
    --trajectories 8 --steps 10000 --report-interval 100 --jobs 2 --seed 4 \
    --output studies/chignolin_stability/run --resume
