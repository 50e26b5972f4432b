#!/bin/bash
# Entrypoint wrapper for the official mongo image (the e2e runs it on a
# stand-in that keeps that image's entrypoint contract). Checks the secrets,
# then copies the password and the replica-set keyfile from /run/secrets
# (root-owned bind mounts the mongodb user cannot read) into the tmpfs
# /run/rpger, owned by mongodb, mode 0400 -- mongod
# insists on that for a keyfile -- and hands over to the image's entrypoint,
# which creates the root user on first start (MONGO_INITDB_ROOT_*_FILE).
set -euo pipefail
# shellcheck source=check-secrets.sh
. /usr/local/lib/rpger/check-secrets.sh
require_secret /run/secrets/mongodb_password mongodb_password
require_secret /run/secrets/mongodb_keyfile mongodb_keyfile
# Read by the healthcheck (root), which creates the app user rpger_app from it.
require_secret /run/secrets/mongodb_app_password mongodb_app_password

install -d -m 0755 /run/rpger
# Mode first, owner second: chmod of a file root owns needs no capability,
# chown needs only CAP_CHOWN (compose drops every other one, FOWNER included).
for s in mongodb_password mongodb_keyfile; do
    install -m 0400 /run/secrets/$s /run/rpger/$s
    chown mongodb:mongodb /run/rpger/$s
done
export MONGO_INITDB_ROOT_PASSWORD_FILE=/run/rpger/mongodb_password
exec docker-entrypoint.sh "$@"
