#!/bin/sh
# One-shot of the chroma-init service: make the Chroma volume belong to the
# unprivileged user the chroma service runs as (the official image has no
# user of its own and would run as root). Runs as root with CAP_CHOWN (and
# DAC_READ_SEARCH to walk folders of that user) only; no network. Idempotent;
# also fixes a volume written by an earlier, root-run Chroma.
set -eu
uid=${RPGER_CHROMA_UID:-10003}
gid=${RPGER_CHROMA_GID:-10003}
find /data \( \! -user "$uid" -o \! -group "$gid" \) -exec chown -h "$uid:$gid" '{}' +
echo "chroma-init: /data owned by $uid:$gid"
