# Shared by the study scripts (sourced): the interpreter, waiting on background jobs, and
# training configs side by side, then exporting each.
PY=.venv/bin/python

# wait_all MESSAGE PID...: wait for each background PID; the first that failed prints
# MESSAGE to stderr and returns 1 (the others keep running: their logs are complete).
wait_all() {
  local message=$1 pid
  shift
  for pid in "$@"; do
    wait "$pid" || { echo "$message" >&2; return 1; }
  done
}

# train_and_export OUT NAME...: configs/active/NAME.json, one process per name (one thread
# each, as the configs say), then, once every one has finished, OUT/NAME.pt with its test
# metrics in OUT/export_NAME.json.
train_and_export() {
  local out=$1; shift
  local name
  local trainers=()
  for name in "$@"; do
    $PY -m freecg_md.cli train "configs/active/$name.json" --resume \
      > "$out/train_$name.log" 2>&1 &
    trainers+=($!)
  done
  # Export only what finished: a trainer that failed or was stopped (the end of a work
  # period) is resumed by the next run of the script, not exported half-trained.
  wait_all "a trainer stopped early (logs in $out/train_*.log)" "${trainers[@]}" || return 1
  for name in "$@"; do
    [ -f "$out/$name.pt" ] || $PY -m freecg_md.cli export "configs/active/$name.json" \
        "$out/$name.pt" --threads 1 > "$out/export_$name.json"
  done
}

# label_in_two FRAMES OUT LOG: label the frames of FRAMES (.npz, from freecg-md harvest) into
# OUT with GFN2-xTB/ALPB(water), two single-thread workers side by side (logs LOG_w0.log and
# LOG_w1.log); chunks already labelled are skipped. Frames that failed to label are left
# out and named on stderr.
label_in_two() {
  local frames=$1 out=$2 log=$3 worker
  local workers=()
  for worker in 0 1; do
    OMP_NUM_THREADS=1 $PY -m freecg_md.cli label "$frames" "$out" --chunk-size 16 \
      --worker $worker --n-workers 2 > "${log}_w$worker.log" 2>&1 &
    workers+=($!)
  done
  wait_all "$0: a labelling worker failed (${log}_w*.log)" "${workers[@]}" || return 1
  if compgen -G "$out/failed_w*.csv" > /dev/null; then
    echo "$0: some frames failed to label and are left out: $out/failed_w*.csv" >&2
  fi
}
