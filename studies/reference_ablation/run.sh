#!/usr/bin/env bash
# Train every variant of the ablation (configs/, written by make_configs.py) in two lanes
# side by side, seed 0 in one and seed 1 in the other, one thread each; a finished run
# returns at once and a stopped one resumes from its last checkpoint. Then the report
# (report.py) into docs/results/.
set -euo pipefail
cd "$(dirname "$0")"
export OMP_WAIT_POLICY=PASSIVE
PY=../../.venv/bin/python
mkdir -p run

lane() {
  local config name
  for config in configs/*_s"$1".json; do
    name=$(basename "$config" .json)
    [ -f "run/$name/test_metrics.json" ] && continue
    echo "$(date -u +%FT%TZ) $name: training" >> run/progress.log
    $PY -m freecg_md.cli train "$config" --resume --no-progress > "run/$name.log" 2>&1
    echo "$(date -u +%FT%TZ) $name: finished" >> run/progress.log
  done
}

lane 0 &
lane 1 &
wait
$PY report.py | tee run/report.md
