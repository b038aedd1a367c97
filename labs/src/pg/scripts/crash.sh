#!/bin/sh
# Stops a node as a crash would: SIGQUIT to the postmaster (an immediate stop: no checkpoint,
# no flush of unwritten WAL), then waits until it is gone. Processes a lab froze with SIGSTOP
# cannot act on SIGQUIT; they get SIGKILL, which runs none of their code, so nothing they held
# is written. Environment: ROOT. Arguments: the node, then the frozen process ids.
set -eu
node="$1"
shift
pidfile="$ROOT/$node/postmaster.pid"
if [ ! -f "$pidfile" ]; then
  echo "the $node server is not running" >&2
  exit 1
fi
kill -QUIT "$(head -n 1 "$pidfile")"
for pid in "$@"; do
  kill -KILL "$pid" 2>/dev/null || true
done
# The postmaster removes its pid file as it exits, after its children have gone.
i=0
while [ -f "$pidfile" ]; do
  i=$((i + 1))
  if [ "$i" -gt 400 ]; then
    echo "the $node server was still running 20 s after SIGQUIT" >&2
    exit 1
  fi
  sleep 0.05
done
