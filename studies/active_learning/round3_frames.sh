#!/usr/bin/env bash
# Active learning, round 3, its data: every frame 0.1 ps apart (after the first 0.5 ps of
# production) of the REMD runs that own_md_check.sh made of converge_m0's snapshots,
# labelled with GFN2-xTB/ALPB(water), for fine-tuning the converged models on the model's
# own MD (at 300-450 K, where the study's REMD goes):
#
#     studies/active_learning/round3_frames.sh NAME...     # e.g. m0_epoch29 m0_epoch35
#
# NAME is an own-MD check (runs/active/own_md/NAME/md must hold its finished REMD). The
# frames of NAME go to data/chignolin/active_round3/own_md_NAME/ (extxyz chunks, each frame
# with its temperature and the method); the 64 frames 0.5 ps apart that the check scored are
# among them, so a model trained on these sets is scored on the own MD of a later model,
# never on these. Labelling skips what is done: running the script again continues it.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 NAME..." >&2; exit 2; }
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
source studies/active_learning/common.sh
# The REMD must have reached the steps its config asks for: harvesting a run cut short
# would fix a partial frame set (the frames file is made once).
for name in "$@"; do
  md=runs/active/own_md/$name/md
  $PY - "$md" <<'EOF' || { echo "$0: $md holds no finished REMD" >&2; exit 2; }
import json, sys
from pathlib import Path
from freecg_md.md.checkpoint import load_checkpoint
run = Path(sys.argv[1])
try:
    wanted = json.loads((run / "config.json").read_text())["run"]["n_steps"]
    sys.exit(0 if load_checkpoint(run / "checkpoint.pt").step >= wanted else 1)
except (OSError, ValueError, KeyError):
    sys.exit(1)
EOF
done
OUT=runs/active/round_3
DATA=data/chignolin/active_round3
mkdir -p "$OUT"
for name in "$@"; do
  frames=$OUT/frames_$name.npz
  [ -f "$frames" ] || $PY -m freecg_md.cli harvest "runs/active/own_md/$name/md" \
      --spacing-ps 0.1 --discard-ps 0.5 --out "$frames"
  label_in_two "$frames" "$DATA/own_md_$name" "$OUT/label_$name"
done
