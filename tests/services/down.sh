#!/usr/bin/env bash
# Stop the services started by up.sh, by the PIDs recorded in RUN_DIR/pids:
# SIGTERM to all, wait up to 15 s (weed can take ~12 s), then SIGKILL.
# Removes RUN_DIR/pids, RUN_DIR/env and what the tests stored in the two
# SeaweedFS instances, rclone and fake-gcs-server (gigabytes after a full run; every up.sh
# starts empty anyway);
# the other services' data and every log stay until the next up.sh.
#
# Usage: tests/services/down.sh [RUN_DIR]     (default: tests/services/.run)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RUN_DIR="${1:-$REPO/tests/services/.run}"
PIDS_FILE="$RUN_DIR/pids"

if [[ ! -f $PIDS_FILE ]]; then
  echo "down.sh: nothing recorded in $RUN_DIR"
  exit 0
fi

# alive PID MARKER: exists, is no zombie (PID 1 here does not reap orphans, so
# a dead daemon stays <defunct> and `kill -0` would still succeed), and its
# command line contains MARKER (so a recycled PID is never signalled).
alive() {
  local pid=$1 marker=$2 stat cmd
  [[ -r /proc/$pid/stat ]] || return 1
  stat=$(</proc/"$pid"/stat) 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z && ${stat%% *} != X ]] || return 1
  cmd=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null) || return 1
  [[ $cmd == *"$marker"* ]]
}

declare -A MARKER=()
while IFS=$'\t' read -r name pid marker; do
  [[ -n ${pid:-} ]] || continue
  if alive "$pid" "$marker"; then
    MARKER[$pid]=$marker
    kill -TERM "$pid" 2>/dev/null || true
    echo "down.sh: stopping $name ($pid)"
  fi
done <"$PIDS_FILE"

deadline=$((SECONDS + 15))
while ((${#MARKER[@]})); do
  for pid in "${!MARKER[@]}"; do
    alive "$pid" "${MARKER[$pid]}" || unset "MARKER[$pid]"
  done
  ((${#MARKER[@]})) || break
  if ((SECONDS >= deadline)); then
    for pid in "${!MARKER[@]}"; do
      echo "down.sh: $pid ignored SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    done
    sleep 0.2
    break
  fi
  sleep 0.1
done

rm -f "$PIDS_FILE" "$RUN_DIR/env"
rm -rf "${RUN_DIR:?}/weed/data" "${RUN_DIR:?}/weed-sts/data" "${RUN_DIR:?}/rclone/data" "${RUN_DIR:?}/fake-gcs/data"
