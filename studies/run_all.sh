#!/usr/bin/env bash
# Continue every run of the chignolin study, one after another, in the order the figures
# need them (each is resumable; a finished run returns at once). Logs go to
# studies/<folder>/run.log. Stop it at any time; running it again continues.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
for study in chignolin_md300 chignolin_remd chignolin_rmsd chignolin_stability chignolin_remd_hmr \
    classical_remd; do
  echo "$(date -u +%FT%TZ) $study: start" >> studies/run_all.log
  if "studies/$study/run.sh" >> "studies/$study/run.log" 2>&1; then
    echo "$(date -u +%FT%TZ) $study: finished" >> studies/run_all.log
    # Its reduced numbers and figures into docs/ (to commit), where it has a ship script,
    # unless these frames were shipped already (a finished run returns at once, and its
    # files are rewritten unchanged; shipping it again would only redo the same work).
    # After a change to the analysis, `rm studies/*/run/.shipped` ships them all again.
    marker="studies/$study/run/.shipped"
    # A run without frames.csv (the stability runs) ships every time it finishes.
    frames=$(cksum 2>/dev/null < "studies/$study/run/frames.csv" || date +%s%N)
    if [ -x "studies/$study/ship.sh" ] && [ "$frames" != "$(cat "$marker" 2>/dev/null)" ]; then
      if "studies/$study/ship.sh" >> "studies/$study/run.log" 2>&1; then
        echo "$frames" > "$marker"
        echo "$(date -u +%FT%TZ) $study: shipped to docs/" >> studies/run_all.log
      fi
    fi
  else
    echo "$(date -u +%FT%TZ) $study: stopped with an error (studies/$study/run.log)" \
      >> studies/run_all.log
  fi
done
