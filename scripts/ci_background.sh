#!/usr/bin/env bash
# Steps of CI that wait on the network or the disk (check_pins asks PyPI; the extra venvs unpack wheels), run in
# the background from the start of .ci/run while the main suite runs (issue 26: CI time), then reported in order.
#   bash scripts/ci_background.sh start DIR JOB COMMAND...   # runs COMMAND detached: DIR/JOB.log, DIR/JOB.status
#   bash scripts/ci_background.sh wait DIR JOB               # waits for it, prints its log and time, exits with its status
set -uo pipefail
action=$1 dir=$2 job=$3
shift 3
case $action in
  start)
    mkdir -p "$dir"
    rm -f "$dir/$job.status"
    ( t0=$SECONDS; "$@" > "$dir/$job.log" 2>&1 </dev/null; code=$?
      echo "$code $((SECONDS - t0))" > "$dir/$job.status.tmp" && mv "$dir/$job.status.tmp" "$dir/$job.status" ) &
    ;;
  wait)
    t0=$SECONDS
    until [ -f "$dir/$job.status" ]; do
      [ $((SECONDS - t0)) -lt 1800 ] || { echo "ci: $job gave no result in 30 minutes" >&2; exit 1; }
      sleep 1
    done
    read -r code took < "$dir/$job.status"
    cat "$dir/$job.log"
    echo "ci: $job took $took s in the background (waited $((SECONDS - t0)) s for it here), exit status $code"
    exit "$code"
    ;;
  *) echo "ci_background: error: unknown action '$action' (start or wait)" >&2; exit 2 ;;
esac
