#!/usr/bin/env bash
# One-time setup of the stack's secrets (and compose/.env) -- run once per host:
#
#   compose/setup-secrets.sh
#
# Creates compose/secrets/<name> (umask 077, strong random values) for every
# secret compose.yaml mounts. Never overwrites an existing file, so re-running
# it is safe and rotating a secret means deleting its file first (and, for a
# database password, changing it in the database too).
#
# The S3 keys come from your storage provider, not from us: pass them in the
# environment (RPGER_S3_ACCESS_KEY / RPGER_S3_SECRET_KEY) on the first run, or
# write the files yourself later. Left empty, the off-site copy stays disabled
# (the ops containers only require them when RPGER_S3_ENDPOINT is set).
set -euo pipefail
umask 077

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${RPGER_SECRETS_DIR:-$HERE/secrets}
mkdir -p "$DIR"
chmod 711 "$DIR"  # traversable, not listable: files carry their own modes

rand() { # rand BYTES -> url-safe random string
    head -c "$1" /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_'
}

# The ops containers run as uid/gid 10001 (Dockerfile) and compose file
# secrets are bind mounts keeping host ownership: the secrets they read are
# made readable by group 10001 (0640); the others stay 0600 root.
OPS_GID=${RPGER_OPS_GID:-10001}

created=()
put() { # put NAME VALUE [ops] : write only when missing
    local f=$DIR/$1
    if [[ -e $f ]]; then
        return 0
    fi
    local tmp
    tmp=$(mktemp "$DIR/.$1.XXXXXX")
    printf '%s' "$2" >"$tmp"
    chmod 600 "$tmp"
    if [[ ${3:-} == ops ]]; then
        chgrp "$OPS_GID" "$tmp" 2>/dev/null && chmod 640 "$tmp"
    fi
    mv -n "$tmp" "$f"
    rm -f "$tmp"
    created+=("$1")
}

put mongodb_password "$(rand 32)" ops
# Replica-set keyfile: 6..1024 characters of the standard base64 alphabet.
put mongodb_keyfile "$(head -c 756 /dev/urandom | base64 -w0)"
put redis_password "$(rand 32)" ops
put s3_access_key "${RPGER_S3_ACCESS_KEY:-}" ops
put s3_secret_key "${RPGER_S3_SECRET_KEY:-}" ops

# compose/.env: non-secret settings read by `docker compose` for substitution.
ENV_FILE=${RPGER_COMPOSE_ENV_FILE:-$HERE/.env}
if [[ ! -e $ENV_FILE ]]; then
    sock=${RPGER_DOCKER_SOCKET:-/var/run/docker.sock}
    gid=0
    [[ -S $sock ]] && gid=$(stat -c %g "$sock")
    cat >"$ENV_FILE" <<ENV
# Written by compose/setup-secrets.sh; edit freely. No secrets here.
RPGER_STACK_ID=rpger
# Off-site copy: host[:port] of an S3-compatible endpoint; empty = disabled.
RPGER_S3_ENDPOINT=
RPGER_S3_BUCKET=rpger-backups
RPGER_S3_PREFIX=rpger
RPGER_S3_SECURE=true
RPGER_S3_REGION=
RPGER_BACKUP_CRON=0 3 * * *
RPGER_RETENTION_CRON=30 4 * * *
# Engine socket for the Dagster DockerRunLauncher (daemon only) and its group.
RPGER_DOCKER_SOCKET=$sock
RPGER_DOCKER_GID=$gid
ENV
    chmod 644 "$ENV_FILE"
    created+=(".env")
fi

if ((${#created[@]})); then
    echo "setup-secrets: created ${created[*]} in $DIR (existing files kept)"
else
    echo "setup-secrets: all secrets already present in $DIR (nothing changed)"
fi
for s in s3_access_key s3_secret_key; do
    if [[ ! -s $DIR/$s ]]; then
        echo "setup-secrets: $s is empty: off-site copy disabled until you fill it and set RPGER_S3_ENDPOINT in $ENV_FILE" >&2
    fi
done
