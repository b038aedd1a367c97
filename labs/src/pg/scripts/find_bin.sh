#!/bin/sh
# Prints the directory of the image's PostgreSQL server binaries, so the container backend
# works with any image that has a server, not only one at a hard-coded path.
# Order: `pg_config --bindir` when it points at initdb (Debian's pg_config can come from
# libpq-dev, another major than the server), then the highest /usr/lib/postgresql/<major>/bin,
# then wherever initdb is on PATH. Arguments: none.
set -eu
if command -v pg_config >/dev/null 2>&1; then
  dir=$(pg_config --bindir 2>/dev/null || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
    exit 0
  fi
fi
best=""
best_major=0
for dir in /usr/lib/postgresql/*/bin; do
  [ -x "$dir/initdb" ] || continue
  major=${dir#/usr/lib/postgresql/}
  major=${major%%/*}
  major=${major%%.*}
  case "$major" in
    '' | *[!0-9]*) continue ;;
  esac
  if [ "$major" -gt "$best_major" ]; then
    best="$dir"
    best_major="$major"
  fi
done
if [ -n "$best" ]; then
  echo "$best"
  exit 0
fi
if initdb=$(command -v initdb 2>/dev/null); then
  dirname "$initdb"
  exit 0
fi
echo "no PostgreSQL server binaries in this image: pg_config --bindir, /usr/lib/postgresql/*/bin and PATH have no initdb" >&2
exit 1
