#!/bin/sh
# Prints the names of the files in the WAL archive, one a line (nothing when it is empty).
# Environment: ROOT. Arguments: none.
set -eu
for file in "$ROOT"/archive/*; do
  [ -e "$file" ] || continue
  printf '%s\n' "${file##*/}"
done
