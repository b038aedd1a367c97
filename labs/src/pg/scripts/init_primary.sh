#!/bin/sh
# Creates the primary's cluster in $ROOT/primary with initdb and appends the lab's settings.
# It does not start it (start.sh does). Password logins (scram) over TCP because a container
# publishes its ports and a standby connects over TCP; trust only on the Unix socket in $ROOT.
# Environment: BIN, ROOT, LABS_PASSWORD (the throwaway password), LABS_CONF (postgresql.conf
# lines made by the provider: port, listen address, socket directory, the lab's settings).
set -eu
umask 077
printf '%s\n' "$LABS_PASSWORD" > "$ROOT/pwfile"
# --no-sync only skips initdb's final flush of a throwaway cluster; the server runs with
# fsync on, which every durability lab depends on.
"$BIN/initdb" -D "$ROOT/primary" -U postgres --encoding=UTF8 --locale=C --no-sync \
  --auth-local=trust --auth-host=scram-sha-256 --pwfile="$ROOT/pwfile" >/dev/null
rm -f "$ROOT/pwfile"
# Password logins from any address, and replication from the standby's.
printf 'host all all all scram-sha-256\nhost replication all all scram-sha-256\n' >> "$ROOT/primary/pg_hba.conf"
mkdir -p "$ROOT/archive"
printf '%s\n' "$LABS_CONF" >> "$ROOT/primary/postgresql.conf"
