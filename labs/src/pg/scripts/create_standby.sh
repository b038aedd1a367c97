#!/bin/sh
# Builds a streaming standby from the running primary with pg_basebackup (-R writes its
# primary_conninfo and standby.signal), on its own port and without archiving (the archive
# belongs to the primary). It does not start it (start.sh does).
# Environment: BIN, ROOT. Arguments: the primary's port, the standby's port.
set -eu
primary_port="$1"
standby_port="$2"
"$BIN/pg_basebackup" -h "$ROOT" -p "$primary_port" -U postgres -D "$ROOT/standby" -X stream -R -c fast
printf 'port = %s\narchive_mode = off\n' "$standby_port" >> "$ROOT/standby/postgresql.conf"
