#!/bin/sh
# Entrypoint of the rpger_ops image (Dockerfile). Before anything runs:
# - every *_FILE variable must name a readable, non-empty, non-placeholder
#   secret file; the container refuses to start otherwise (exit 78);
# - the off-site secrets are only required when RPGER_S3_ENDPOINT is set
#   (without an endpoint their *_FILE variables are emptied, so an empty
#   secret file means "off-site copy disabled", not an error);
# - the instance config baked into the image is installed into $DAGSTER_HOME
#   (the rpger-dagster-home volume), so an image update also updates it.
set -eu
# shellcheck source=check-secrets.sh
. /usr/local/lib/rpger/check-secrets.sh

# An empty *_FILE means "not used" (rpger_ops.settings skips it); it stays set,
# empty, because the DockerRunLauncher passes these variables on by name.
if [ -z "${RPGER_S3_ENDPOINT:-}" ]; then
    export RPGER_S3_ACCESS_KEY_FILE='' RPGER_S3_SECRET_KEY_FILE=''
fi

for var in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*_FILE\)=.*/\1/p'); do
    eval "path=\${$var}"
    [ -n "$path" ] || continue
    require_secret "$path" "$var"
done

if [ -n "${DAGSTER_HOME:-}" ] && [ -f /opt/rpger/dagster.yaml ]; then
    mkdir -p "$DAGSTER_HOME"
    if ! cmp -s /opt/rpger/dagster.yaml "$DAGSTER_HOME/dagster.yaml" 2>/dev/null; then
        tmp=$(mktemp "$DAGSTER_HOME/.dagster.yaml.XXXXXX")
        cat /opt/rpger/dagster.yaml >"$tmp"
        chmod 0644 "$tmp"
        mv -f "$tmp" "$DAGSTER_HOME/dagster.yaml"
    fi
fi

exec "$@"
