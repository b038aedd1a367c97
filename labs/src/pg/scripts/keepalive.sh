#!/bin/sh
# The container's main process (PID 1). It only keeps the container alive: the PostgreSQL
# servers inside are started and crashed by the other scripts, so a crashed server leaves the
# container, its standby and its WAL archive in place. `docker stop` (TERM) ends it at once.
# Runs as root. Arguments: the directory for the nodes, and the line that says it is ready.
set -eu
root="$1"
ready_line="$2"
trap 'exit 0' TERM INT
mkdir -p "$root"
chown postgres:postgres "$root"
chmod 700 "$root"
echo "$ready_line"
# `sleep & wait`: a TERM interrupts `wait` at once, where it would wait for a plain `sleep`.
while :; do
  sleep 1 &
  wait $!
done
