#!/bin/sh
# Sends a signal to one server process: STOP freezes the WAL writer, CONT thaws it. Runs as the
# server's user, inside the container for the container backend.
# Arguments: the signal name (STOP or CONT) and the process id.
set -eu
kill -s "$1" "$2"
