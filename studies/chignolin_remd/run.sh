#!/usr/bin/env bash
# The long REMD of chignolin with the shipped model (resumable: run it again to continue).
# 8 replicas, 300-450 K, from the shipped start states (12 ps of equilibration with the
# shipped model at each rung), 1 ps more of equilibration without exchanges, then 25 ps of
# replica exchange, frames every 0.1 ps; 1 fs with natural hydrogen masses (the flagship's
# defaults are 2 fs with 3.024 amu hydrogens).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python simulations/remd_chignolin.py --initial shipped \
    --timestep 1 --hydrogen-mass 1.008 \
    --equilibration-steps 1000 --equilibration-friction 1.0 --steps 25000 \
    --report-interval 100 --checkpoint-interval 500 --seed 1 --no-plots \
    --output studies/chignolin_remd/run --resume
