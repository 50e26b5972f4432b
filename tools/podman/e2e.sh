#!/usr/bin/env bash
# The compose stack end to end under podman (CI: scripts/test --e2e calls this).
# On a fresh Debian 12 machine, as root: installs podman/runc/debootstrap/
# chromium and podman-compose, builds the base and stand-in images (cached),
# starts the podman API socket for the Dagster DockerRunLauncher, then runs
#
#   pytest -m e2e tests/e2e -v
#
# Idempotent. Extra arguments go to pytest. RPGER_E2E_KEEP=1 leaves the stack up.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"
t0=$SECONDS
log() { printf '[e2e.sh %4ss] %s\n' "$((SECONDS - t0))" "$*" >&2; }

# Python environment with rpger_ops (scripts/bootstrap: cached venv, Go builds).
if [[ -z ${VIRTUAL_ENV:-} ]] || ! python3 -c 'import rpger_ops' 2>/dev/null; then
    log "bootstrap (venv, FerretDB/MinIO builds)"
    # shellcheck source=/dev/null
    . scripts/bootstrap
else
    bash tools/build.sh >/dev/null
fi
python3 -c 'import jsonschema, yaml, redis' 2>/dev/null || python3 -m pip install -q jsonschema pyyaml redis

# Docker Compose v2 from its Go module (no Docker engine needed for `config`):
# the e2e suite validates the compose files with it too. Cached.
DC_VERSION=${RPGER_DOCKER_COMPOSE_VERSION:-v2.29.7}
DC_BIN=${RPGER_CACHE_DIR:-$HOME/.cache/rpger-dbstack}/bin/docker-compose
if command -v go >/dev/null && { [[ ! -x $DC_BIN ]] || [[ "$(cat "$DC_BIN.stamp" 2>/dev/null)" != "$DC_VERSION" ]]; }; then
    log "building docker compose $DC_VERSION (go install)"
    tmpbin=$(mktemp -d)
    if GOBIN="$tmpbin" go install "github.com/docker/compose/v2/cmd@$DC_VERSION" >/tmp/rpger-docker-compose-build.log 2>&1; then
        mkdir -p "$(dirname "$DC_BIN")"
        mv "$tmpbin/cmd" "$DC_BIN"
        echo "$DC_VERSION" >"$DC_BIN.stamp"
    else
        log "docker compose build failed (see /tmp/rpger-docker-compose-build.log); continuing without it"
    fi
    rm -rf "$tmpbin"
fi

log "host setup (podman, runc, debootstrap, chromium, podman-compose, base image)"
bash "$HERE/setup-host.sh"

log "images (cached by input hash)"
bash "$HERE/build-images.sh"

# Docker-compatible API socket (for the DockerRunLauncher in the daemon container).
SOCK=/run/podman/podman.sock
sock_answers() {
    python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])' "$SOCK" 2>/dev/null
}
# A fresh service for every run, started from / and stopped at the end: a
# long-lived service whose working directory was deleted (an old clone) fails
# every container start with "write child: broken pipe".
PIDFILE=/run/podman/rpger-e2e-service.pid
mkdir -p /run/podman
if [[ -f $PIDFILE ]]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
fi
pkill -f "podman system service --time=0 unix://$SOCK" 2>/dev/null || true
for _ in $(seq 25); do sock_answers || break; sleep 0.2; done
# A bind mount of a missing socket once made a directory here: never keep one.
[[ -d $SOCK && ! -S $SOCK ]] && rmdir "$SOCK" 2>/dev/null
rm -f "$SOCK"
log "starting podman system service on $SOCK"
(cd / && exec nohup podman system service --time=0 "unix://$SOCK" >/tmp/rpger-podman-service.log 2>&1) &
echo $! >"$PIDFILE"
# shellcheck disable=SC2317  # invoked by the trap
stop_service() { kill "$(cat "$PIDFILE" 2>/dev/null)" 2>/dev/null || true; rm -f "$PIDFILE"; }
[[ ${RPGER_E2E_KEEP:-} == 1 ]] || trap stop_service EXIT
for _ in $(seq 50); do sock_answers && break; sleep 0.2; done
sock_answers || { echo "e2e.sh: podman system service did not come up" >&2; exit 1; }
# Like Docker's root:docker 0660 socket: the daemon container (uid 10001) gets
# the socket's group (setup-secrets.sh puts it into RPGER_DOCKER_GID).
chmod 0660 "$SOCK"
export RPGER_DOCKER_SOCKET=$SOCK

log "pytest -m e2e tests/e2e"
export RPGER_E2E=1
set +e
python3 -m pytest -m e2e tests/e2e -v -s -p no:cacheprovider "$@"
rc=$?
set -e
log "done (pytest exit $rc)"
exit $rc
