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
# The RPGer app gets its own least-privilege users (rpger_app in MongoDB with
# readWrite on `rpger` only; rpger_app in Valkey without @admin/@dangerous
# except INFO and KEYS, which RPGer calls: scripts/redis-acl.sh) and
# ready-made connection secrets for its compose file: mongodb_app_uri and
# redis_app_url. The database containers (re)create those users from
# mongodb_app_password / redis_app_password at every start, so rotating the app
# passwords means: delete mongodb_app_password + mongodb_app_uri (and/or
# redis_app_password + redis_app_url), re-run this script, restart mongodb and
# redis (and the app), e.g. `docker compose up -d --force-recreate mongodb redis`.
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

urlenc() { # urlenc STRING -> percent-encoded except RFC 3986 unreserved chars
    local LC_ALL=C s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [A-Za-z0-9._~-]) out+=$c ;;
            *) printf -v c '%%%02X' "'$c"; out+=$c ;;
        esac
    done
    printf '%s' "$out"
}

secret() { # secret NAME -> the file's value without CR/LF (as the containers read it)
    tr -d '\r\n' <"$DIR/$1"
}

# The ops containers run as uid/gid 10001 (Dockerfile) and compose file
# secrets are bind mounts keeping host ownership: the secrets they read are
# made readable by group 10001 (0640); the others stay 0600 root.
OPS_GID=${RPGER_OPS_GID:-10001}
# The admin proxy's htpasswd: group 101 (nginx in nginxinc/nginx-unprivileged).
PROXY_GID=${RPGER_PROXY_GID:-101}
# The app's connection secrets: 0600 root (the app reads them as root, e.g. in
# its entrypoint), or 0640 root:$RPGER_APP_GID when the app runs as that group.
APP_GID=${RPGER_APP_GID:-}

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
    elif [[ ${3:-} == proxy ]]; then
        chgrp "$PROXY_GID" "$tmp" 2>/dev/null && chmod 640 "$tmp"
    elif [[ ${3:-} == app && -n $APP_GID ]]; then
        chgrp "$APP_GID" "$tmp" 2>/dev/null && chmod 640 "$tmp"
    fi
    mv -n "$tmp" "$f"
    rm -f "$tmp"
    created+=("$1")
}

put mongodb_password "$(rand 32)" ops
# Replica-set keyfile: 6..1024 characters of the standard base64 alphabet.
put mongodb_keyfile "$(head -c 756 /dev/urandom | base64 -w0)"
put redis_password "$(rand 32)" ops
# The app's users: only the database containers (root) read these passwords.
put mongodb_app_password "$(rand 32)"
put redis_app_password "$(rand 32)"
# ... and the app gets complete connection strings built from them.
mongodb_app_uri="mongodb://rpger_app:$(urlenc "$(secret mongodb_app_password)")@mongodb:27017/rpger?authSource=rpger&replicaSet=rs0"
redis_app_url="redis://rpger_app:$(urlenc "$(secret redis_app_password)")@redis:6379/0"
put mongodb_app_uri "$mongodb_app_uri" app
put redis_app_url "$redis_app_url" app
put s3_access_key "${RPGER_S3_ACCESS_KEY:-}" ops
put s3_secret_key "${RPGER_S3_SECRET_KEY:-}" ops
# Optional URLs (empty = off): alert webhook, heartbeat (dead man's switch).
put alert_webhook_url "${RPGER_ALERT_WEBHOOK_URL:-}" ops
put heartbeat_url "${RPGER_HEARTBEAT_URL:-}" ops
# The admin UI (compose profile `admin`): user `admin`; the proxy (nginx,
# uid 101) reads only the SHA-512-crypt hash.
put dagster_admin_password "$(rand 24)"
if [[ ! -e $DIR/dagster_admin_htpasswd ]]; then
    command -v openssl >/dev/null || { echo "setup-secrets: openssl is needed to hash the admin password" >&2; exit 1; }
    hash=$(tr -d '\r\n' <"$DIR/dagster_admin_password" | openssl passwd -6 -stdin)
    put dagster_admin_htpasswd "admin:$hash"$'\n' proxy
fi

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
# Only for the opt-in compose.docker-launcher.yaml (socket proxy): the engine
# socket and its group.
RPGER_DOCKER_SOCKET=$sock
RPGER_DOCKER_GID=$gid
ENV
    chmod 644 "$ENV_FILE"
    created+=(".env")
fi

# The data and backup volumes are `external` in compose.yaml: created here,
# once, so that `docker compose down -v` can never delete them.
# shellcheck source=setup-volumes.sh
. "$HERE/setup-volumes.sh"

if ((${#created[@]})); then
    echo "setup-secrets: created ${created[*]} in $DIR (existing files kept)"
else
    echo "setup-secrets: all secrets already present in $DIR (nothing changed)"
fi
# A kept connection secret must still carry the current password (rotation
# deletes both files; deleting only the password would leave a stale URL).
[[ $(secret mongodb_app_uri) == "$mongodb_app_uri" ]] ||
    echo "setup-secrets: mongodb_app_uri does not match mongodb_app_password: delete both files and re-run" >&2
[[ $(secret redis_app_url) == "$redis_app_url" ]] ||
    echo "setup-secrets: redis_app_url does not match redis_app_password: delete both files and re-run" >&2
for s in s3_access_key s3_secret_key; do
    if [[ ! -s $DIR/$s ]]; then
        echo "setup-secrets: $s is empty: off-site copy disabled until you fill it and set RPGER_S3_ENDPOINT in $ENV_FILE" >&2
    fi
done
