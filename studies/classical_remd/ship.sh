#!/usr/bin/env bash
# Ship the classical reference run: its per-frame numbers, its landscape, melting curve and
# exchange figures, the ML runs drawn over its landscape, figure 5b on its conformations and
# warm starts from them.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -m freecg_md.cli reduce studies/classical_remd/run docs/results/classical_remd.npz \
    --name "classical amber14 + GBn2"
# Its figures (landscape, melting curve and fit, exchanges, verdict, the ML runs over its
# landscape) are drawn where every shipped figure is, from the numbers just written.
analysis/redraw_figures.sh
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# Figure 5b on the reference's 300 K ensemble (not the ML model's MD): 20 folded and 20
# unfolded conformations of the demultiplexed 300 K trajectory, spread over the run after
# the equilibration its analysis detected (it starts from the native structure) and >= 5 ps
# apart, labelled once with GFN2-xTB/ALPB(water), and the errors of the shipped model and
# its ablation on them.
start_ps=$(.venv/bin/python -c "
import json
from freecg_md.analysis.reduced import load_reduced
frame = json.load(open('docs/figures/classical_remd_convergence.json'))['start_frame']
print(float(load_reduced('docs/results/classical_remd.npz').time_ps[frame]))")
.venv/bin/python analysis/basin_errors.py studies/classical_remd/run --temperature 300 \
    --start "$start_ps" --spacing 5 --spread --per-basin 20 \
    --labelled docs/results/conformations_classical_300K.extxyz.gz --out "$scratch/basins"
for name in basin_errors.png basin_errors.csv basin_errors_summary.csv; do
  cp "$scratch/basins/$name" "docs/figures/classical_$name"
done
# Warm starts for the ML runs from the reference's 300 K ensemble, folded and unfolded in
# turn (replica r starts from frame r): --initial docs/results/classical_starts_300K.extxyz
.venv/bin/python - <<'PY'
import ase.io
from ase import Atoms

frames = ase.io.read("docs/results/conformations_classical_300K.extxyz.gz", ":")
by_basin = {b: [a for a in frames if a.info["basin"] == b] for b in ("folded", "unfolded")}
starts = [Atoms(numbers=a.numbers, positions=a.positions, info={
    k: a.info[k] for k in ("basin", "run", "time_ps", "cv1_A", "cv2_A")})
    for pair in zip(by_basin["folded"], by_basin["unfolded"]) for a in pair]
if len(starts) < 8:
    raise SystemExit(f"only {len(starts)} warm starts (folded and unfolded in pairs); "
                     "expected at least 8, one per replica")
ase.io.write("docs/results/classical_starts_300K.extxyz", starts, format="extxyz")
print(f"wrote docs/results/classical_starts_300K.extxyz: {len(starts)} frames")
PY
