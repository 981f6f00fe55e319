# Shared by the round scripts (sourced): train configs side by side, then export each.
PY=.venv/bin/python

# train_and_export OUT NAME...: configs/active/NAME.json, one process per name (one thread
# each, as the configs say), then OUT/NAME.pt with its test metrics in OUT/export_NAME.json.
train_and_export() {
  local out=$1; shift
  local name
  for name in "$@"; do
    $PY -m freecg_md.cli train "configs/active/$name.json" --resume \
      > "$out/train_$name.log" 2>&1 &
  done
  wait
  for name in "$@"; do
    [ -f "$out/$name.pt" ] || $PY -m freecg_md.cli export "configs/active/$name.json" \
        "$out/$name.pt" --threads 1 > "$out/export_$name.json"
  done
}
