#!/usr/bin/env bash
# Creates the stack's data and backup volumes (compose.yaml declares them
# `external`, so Compose never creates -- and `down -v` never deletes -- them).
# Sourced by setup-secrets.sh; also runnable on its own. Idempotent: an
# existing volume is kept as it is.
#
# Engine: docker when its daemon answers, else podman (RPGER_CONTAINER_CLI
# overrides).
# To delete them for real, see docs/compose.md "Volumes".
set -euo pipefail

RPGER_VOLUMES=(rpger-mongodb-data rpger-redis-data rpger-chroma-data rpger-backups rpger-dagster-home)

rpger_setup_volumes() {
    local cli=${RPGER_CONTAINER_CLI:-}
    if [[ -z $cli ]]; then
        if command -v docker >/dev/null && docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
            cli=docker
        elif command -v podman >/dev/null; then
            cli=podman
        else
            echo "setup-volumes: no Docker daemon answers and podman is not installed:" \
                "create the volumes ${RPGER_VOLUMES[*]} yourself (docker volume create NAME)" >&2
            return 1
        fi
    fi
    local v made=()
    for v in "${RPGER_VOLUMES[@]}"; do
        if "$cli" volume inspect "$v" >/dev/null 2>&1; then
            continue
        fi
        "$cli" volume create --label org.rpger.stack=rpger-dbstack "$v" >/dev/null
        made+=("$v")
    done
    if ((${#made[@]})); then
        echo "setup-volumes: created ${made[*]} ($cli). They are external: 'compose down -v' keeps them;" \
            "deleting one deletes its data (docs/compose.md, Volumes)."
    else
        echo "setup-volumes: volumes present: ${RPGER_VOLUMES[*]} (kept as they are)"
    fi
}

# Sourced: run it; executed: run it and exit with its status.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    rpger_setup_volumes
else
    rpger_setup_volumes || exit 1
fi
