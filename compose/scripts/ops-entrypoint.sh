#!/bin/sh
# Entrypoint of the rpger_ops image (Dockerfile). Before anything runs:
# - every *_FILE variable must name a readable, non-empty, non-placeholder
#   secret file; the container refuses to start otherwise (exit 78);
# - the off-site secrets are only required when RPGER_S3_ENDPOINT is set
#   (without an endpoint their *_FILE variables are emptied, so an empty
#   secret file means "off-site copy disabled", not an error);
# - optional secrets (alert webhook, heartbeat URL) may be empty files: their
#   *_FILE variables are then emptied ("not configured");
# - the instance config baked into the image is installed into $DAGSTER_HOME
#   (the rpger-dagster-home volume), so an image update also updates it:
#   /opt/rpger/dagster.yaml, or dagster.$RPGER_DAGSTER_INSTANCE.yaml when
#   RPGER_DAGSTER_INSTANCE names another one (docker-launcher overlay);
# - $TMPDIR and the code server's socket folder exist (the root filesystem
#   is read-only).
set -eu
# shellcheck source=check-secrets.sh
. /usr/local/lib/rpger/check-secrets.sh

# An empty *_FILE means "not used" (rpger_ops.settings skips it); it stays set,
# empty, because the DockerRunLauncher passes these variables on by name.
if [ -z "${RPGER_S3_ENDPOINT:-}" ]; then
    export RPGER_S3_ACCESS_KEY_FILE='' RPGER_S3_SECRET_KEY_FILE=''
fi

for var in RPGER_ALERT_WEBHOOK_URL_FILE RPGER_HEARTBEAT_URL_FILE; do
    eval "path=\${$var:-}"
    if [ -n "$path" ] && [ -r "$path" ] && [ ! -s "$path" ]; then
        export "$var="
    fi
done

for var in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*_FILE\)=.*/\1/p'); do
    eval "path=\${$var}"
    [ -n "$path" ] || continue
    require_secret "$path" "$var"
done

instance_file=/opt/rpger/dagster.yaml
case "${RPGER_DAGSTER_INSTANCE:-default}" in
    default | "") ;;
    *[!a-z0-9-]*)
        echo "rpger: refusing to start: RPGER_DAGSTER_INSTANCE must be a name like docker-launcher" >&2
        exit 78
        ;;
    *) instance_file=/opt/rpger/dagster.$RPGER_DAGSTER_INSTANCE.yaml ;;
esac
if [ -n "${DAGSTER_HOME:-}" ] && [ -d /opt/rpger ]; then
    if [ ! -f "$instance_file" ]; then
        echo "rpger: refusing to start: no instance file $instance_file (RPGER_DAGSTER_INSTANCE)" >&2
        exit 78
    fi
    mkdir -p "$DAGSTER_HOME" "$DAGSTER_HOME/grpc"
    if ! cmp -s "$instance_file" "$DAGSTER_HOME/dagster.yaml" 2>/dev/null; then
        tmp=$(mktemp "$DAGSTER_HOME/.dagster.yaml.XXXXXX")
        cat "$instance_file" >"$tmp"
        chmod 0644 "$tmp"
        mv -f "$tmp" "$DAGSTER_HOME/dagster.yaml"
    fi
fi

if [ -n "${TMPDIR:-}" ]; then
    mkdir -p "$TMPDIR" 2>/dev/null || export TMPDIR=/tmp
fi

exec "$@"
