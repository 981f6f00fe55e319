#!/usr/bin/env bash
# The classical reference ensemble (not the ML model): replica exchange of chignolin with
# amber14 + GBn2 (OpenMM), 8 replicas 300-450 K, 4 fs with hydrogen mass repartitioning and
# X-H constraints, exchanges every 1 ps, 5,000 cycles (5 ns per replica), frames every
# 1 ps, two replicas stepped at a time on one CPU thread each (resumable: run it again to
# continue; a larger --cycles extends it).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m freecg_md.cli classical-remd --replicas 8 --t-min 300 --t-max 450 \
    --cycles 5000 --steps-per-cycle 250 --timestep 4 --hydrogen-mass 3.024 \
    --report-every 1 --checkpoint-every 20 --threads 1 --workers 2 --seed 5 \
    --output studies/classical_remd/run --resume
