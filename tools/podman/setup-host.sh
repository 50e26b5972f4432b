#!/usr/bin/env bash
# Prepare a Debian 12 host (as root) to run the compose stack under podman:
# podman + runc + debootstrap + chromium from Debian, podman-compose 1.6.x from
# PyPI, a containers.conf that works on this machine kind, and the local base
# image localhost/debian:bookworm built with debootstrap (no image registry
# needed). Idempotent: every step checks before it acts.
set -euo pipefail

log() { printf '[setup-host] %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "setup-host.sh: run as root" >&2
    exit 1
fi

need_pkgs=()
for p in podman runc debootstrap chromium uidmap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    log "apt-get install ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# podman-compose from PyPI (Debian's 1.0.3 lacks much of the compose spec).
PC_VENV=${RPGER_PODMAN_COMPOSE_VENV:-/opt/rpger-podman-compose}
if ! "$PC_VENV/bin/podman-compose" version 2>/dev/null | grep -q 'podman-compose version 1\.6\.'; then
    log "installing podman-compose 1.6.x into $PC_VENV"
    python3 -m venv "$PC_VENV" 2>/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$PC_VENV"
    }
    "$PC_VENV/bin/pip" install -q 'podman-compose>=1.6,<1.7'
fi
ln -sf "$PC_VENV/bin/podman-compose" /usr/local/bin/podman-compose

# containers.conf: without it crun fails on setrlimit and "cgroups in hybrid mode".
CONF=/etc/containers/containers.conf
want_conf='[containers]
default_ulimits = []
pids_limit = 0
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"'
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$want_conf" ]]; then
    if [[ -f $CONF ]] && ! grep -q '^# rpger-dbstack' "$CONF" 2>/dev/null && [[ -s $CONF ]]; then
        cp -n "$CONF" "$CONF.rpger-orig" || true
    fi
    log "writing $CONF"
    mkdir -p /etc/containers
    printf '%s\n' "$want_conf" >"$CONF"
fi

# Base images without a registry: debootstrap minbase from the apt mirror in use.
#   bookworm: base of the stand-ins (Debian 12, like the official images)
#   trixie:   base of the e2e rpger-ops image (Python 3.13; Debian 12's python3
#             3.11.2 lacks the PEP 706 tarfile filters rpger_ops.archive uses,
#             which the production base python:3.11.13 has)
mirror=$(
    { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
      grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } |
        grep -E '/debian/?$' | head -n1 || true
)
mirror=${mirror:-http://deb.debian.org/debian}
for suite in ${RPGER_BASE_SUITES:-bookworm trixie}; do
    podman image exists "localhost/debian:$suite" && continue
    rootfs=$(mktemp -d /tmp/rpger-rootfs.XXXXXX)
    log "debootstrap $suite from $mirror"
    debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"/tmp/rpger-debootstrap-$suite.log" 2>&1 || {
        tail -20 "/tmp/rpger-debootstrap-$suite.log" >&2
        exit 1
    }
    # apt inside the image: same mirror, no recommends.
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" >"$rootfs/etc/apt/sources.list"
    rm -f "$rootfs"/etc/apt/sources.list.d/*.sources
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$rootfs/etc/apt/apt.conf.d/99norecommends"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "localhost/debian:$suite" >/dev/null 2>&1
    rm -rf "$rootfs"
    log "imported localhost/debian:$suite"
done
log "host ready: $(podman --version), $(podman-compose version 2>/dev/null | grep podman-compose)"
