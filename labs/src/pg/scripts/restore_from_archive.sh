#!/bin/sh
# The primary's disk is gone: its data directory is replaced by the base backup, set to
# recover from the WAL archive (recovery.signal + restore_command). Started afterwards, it
# replays every archived segment, then ends recovery and becomes a primary again.
# Environment: ROOT. Arguments: none.
set -eu
if [ ! -d "$ROOT/base" ]; then
  echo "no base backup was taken" >&2
  exit 1
fi
if [ -f "$ROOT/primary/postmaster.pid" ]; then
  echo "the primary is still running; crash it first" >&2
  exit 1
fi
rm -rf "$ROOT/primary"
cp -a "$ROOT/base" "$ROOT/primary"
printf "restore_command = 'cp \"%s/archive/%%f\" \"%%p\"'\n" "$ROOT" >> "$ROOT/primary/postgresql.conf"
touch "$ROOT/primary/recovery.signal"
