#!/bin/sh
# Moves the primary to another port before a retried start: a free port found on the local
# machine can be taken by someone else before the server binds it. The last setting wins.
# Environment: ROOT. Arguments: the port.
set -eu
printf 'port = %s\n' "$1" >> "$ROOT/primary/postgresql.conf"
