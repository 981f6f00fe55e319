# Shared by the round scripts (sourced): train configs side by side, then export each.
PY=.venv/bin/python

# train_and_export OUT NAME...: configs/active/NAME.json, one process per name (one thread
# each, as the configs say), then, once every one has finished, OUT/NAME.pt with its test
# metrics in OUT/export_NAME.json.
train_and_export() {
  local out=$1; shift
  local name pid
  local trainers=()
  for name in "$@"; do
    $PY -m freecg_md.cli train "configs/active/$name.json" --resume \
      > "$out/train_$name.log" 2>&1 &
    trainers+=($!)
  done
  # Export only what finished: a trainer that failed or was stopped (the end of a work
  # period) is resumed by the next run of the script, not exported half-trained.
  for pid in "${trainers[@]}"; do
    wait "$pid" || { echo "a trainer stopped early (logs in $out/train_*.log)" >&2; return 1; }
  done
  for name in "$@"; do
    [ -f "$out/$name.pt" ] || $PY -m freecg_md.cli export "configs/active/$name.json" \
        "$out/$name.pt" --threads 1 > "$out/export_$name.json"
  done
}
