#!/bin/sh
# A plain base backup of the primary into $ROOT/base, from which restore_from_archive.sh
# rebuilds the primary. A second backup replaces the first.
# Environment: BIN, ROOT. Arguments: the primary's port.
set -eu
rm -rf "$ROOT/base"
"$BIN/pg_basebackup" -h "$ROOT" -p "$1" -U postgres -D "$ROOT/base" -X stream -c fast
