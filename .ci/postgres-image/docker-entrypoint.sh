#!/bin/sh
# Entrypoint of the PostgreSQL image that CI builds from Debian's packages (see build.sh).
# It honours the official image's POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB, so the
# labs' container backend treats both images the same way. Extra arguments go to postgres
# (for example `-c wal_level=replica`), as with the official image.
set -eu
PGBIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
if [ "${1:-}" = "postgres" ]; then shift; fi
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set, as with the official image}"
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  chown postgres "$pwfile"
  as_postgres "$PGBIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  # Like the official image: password logins from any address (the port is published on loopback only).
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != "postgres" ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\";" | as_postgres "$PGBIN/postgres" --single -D "$PGDATA" postgres >/dev/null
  fi
fi
mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql
# exec: postgres becomes PID 1's replacement, so `docker stop` and an immediate stop reach it directly.
exec setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" -D "$PGDATA" \
  -c listen_addresses='*' "$@"
