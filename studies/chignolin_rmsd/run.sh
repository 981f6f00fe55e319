#!/usr/bin/env bash
# Figure 5c: 10 Langevin trajectories of chignolin at 300 K from the native structure with the
# shipped model, 20 ps each, frames every 0.1 ps (resumable: run it again to continue).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python simulations/langevin_chignolin.py --initial native --trajectories 10 \
    --temperature 300 --steps 20000 --report-interval 100 --checkpoint-interval 500 \
    --seed 3 --no-plots --output studies/chignolin_rmsd/run --resume
