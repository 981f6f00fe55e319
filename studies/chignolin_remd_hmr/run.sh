#!/usr/bin/env bash
# The REMD of figure 5a at twice the time step: hydrogens of 3.024 amu (mass repartitioned
# from their heavy atoms) and 2 fs steps, otherwise the same run (8 replicas, 300-450 K, the
# shipped start states, 1 ps of equilibration without exchanges, an exchange attempt every
# 10 fs, as there), 10 ps of production, frames every 0.1 ps. Whether it samples what the
# 1 fs run samples is checked rung by rung by ship.sh (resumable: run it again to continue).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python simulations/remd_chignolin.py --initial shipped \
    --timestep 2 --hydrogen-mass 3.024 --exchange-interval 5 \
    --equilibration-steps 500 --equilibration-friction 1.0 --steps 5000 \
    --report-interval 50 --checkpoint-interval 250 --seed 1 --no-plots \
    --output studies/chignolin_remd_hmr/run --resume
