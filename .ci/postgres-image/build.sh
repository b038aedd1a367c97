#!/usr/bin/env bash
# Builds a PostgreSQL 15 image from Debian's packages, for machines with a Docker engine but no
# image registry (this project's CI machines). GitHub's runners pull the official image instead.
#
#   .ci/postgres-image/build.sh [IMAGE]     default IMAGE: labs-postgres:15-debian
#
# Reuses the image when it already exists. Needs root and mmdebstrap; uses the Debian mirror already
# configured for apt on this machine, so it works wherever `apt-get install` does.
set -euo pipefail
image=${1:-labs-postgres:15-debian}
here=$(cd "$(dirname "$0")" && pwd)

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "postgres image: $image already present, reusing it"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "postgres image: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }

sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "postgres image: building $image from Debian's postgresql-15 (about a minute)"
start=$SECONDS
mmdebstrap --quiet --variant=apt --include=postgresql-15 \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --essential-hook='mkdir -p "$1/etc/postgresql-common" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.conf"' \
  --customize-hook="upload $here/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh" \
  --customize-hook='chmod 755 "$1/usr/local/bin/docker-entrypoint.sh"' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  bookworm "$work/rootfs.tar" "$sources"

docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  --change 'CMD ["postgres"]' \
  --change 'ENV PGDATA=/var/lib/postgresql/data' \
  --change 'EXPOSE 5432' \
  "$work/rootfs.tar" "$image" >/dev/null
echo "postgres image: $image built in $((SECONDS - start)) s"
