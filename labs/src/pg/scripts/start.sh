#!/bin/sh
# Starts a node whose settings are in its postgresql.conf and waits until it accepts
# connections (pg_ctl -w). On failure it prints the end of the server's log, which says why.
# Environment: BIN, ROOT. Arguments: the node (primary or standby).
set -eu
node="$1"
if ! "$BIN/pg_ctl" -D "$ROOT/$node" -l "$ROOT/$node.log" -w -t 60 start >/dev/null; then
  tail -n 8 "$ROOT/$node.log" >&2
  exit 1
fi
