#!/usr/bin/env bash
# Build the local stand-in images (no image registry on this machine kind) and
# the rpger_ops image from the repo Dockerfile on top of localhost/debian:bookworm.
# Idempotent and cached: every image carries a label with the sha256 of its
# inputs; an image whose inputs did not change is not rebuilt.
#
#   localhost/rpger-valkey-standin:8.1  Debian 13 valkey-server, for valkey/valkey:8.1.3
#   localhost/rpger-ferretdb-standin:1  our FerretDB build,   for mongo:8.0
#   localhost/rpger-chroma-standin:1.5.9 pip chromadb==1.5.9, for chromadb/chroma:1.5.9
#   localhost/rpger-minio-standin:1     MinIO binary, test S3 endpoint
#   localhost/rpger-ops:e2e             the repo Dockerfile with BASE_IMAGE=localhost/debian:trixie
#   localhost/rpger-mongo-standin:8.0   the official mongo image's entrypoint + mongosh, FerretDB behind our mongod
#   localhost/rpger-nginx-standin:1     Debian nginx as uid 101, for nginxinc/nginx-unprivileged
#   localhost/rpger-socket-proxy-standin:1.13.1  our stand-in for wollomatic/socket-proxy (same flags)
# and the stack's own derived images (compose/images/*: scripts built in),
# built from the same Dockerfiles as production, on the stand-ins:
#   localhost/rpger-mongodb:e2e, localhost/rpger-valkey:e2e, localhost/rpger-chroma:e2e,
#   localhost/rpger-admin-proxy:e2e
#
# Needs: tools/podman/setup-host.sh done; ${RPGER_CACHE_DIR}/bin/{rpger-ferretdb,minio}
# (tools/build.sh builds them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RPGER_CACHE_DIR:-$HOME/.cache/rpger-dbstack}
BASE=${RPGER_BASE_IMAGE:-localhost/debian:bookworm}
ONLY=("$@")

log() { printf '[build-images] %s\n' "$*" >&2; }

want() { # want NAME -> true when selected (no args = all)
    ((${#ONLY[@]} == 0)) && return 0
    local x
    for x in "${ONLY[@]}"; do [[ $x == "$1" ]] && return 0; done
    return 1
}

base_id=$(podman image inspect --format '{{.Id}}' "$BASE") || {
    echo "build-images.sh: base image $BASE missing; run tools/podman/setup-host.sh" >&2
    exit 1
}

# build TAG CONTEXT CONTAINERFILE INPUT_HASH [extra podman build args...]
build() {
    local tag=$1 ctx=$2 file=$3 hash=$4
    shift 4
    local have
    have=$(podman image inspect --format '{{index .Labels "rpger.inputs"}}' "$tag" 2>/dev/null || true)
    if [[ $have == "$hash" ]]; then
        log "$tag up to date"
        return 0
    fi
    log "building $tag"
    local t0=$SECONDS blog
    blog=$(mktemp /tmp/rpger-build.XXXXXX.log)
    if ! podman build --layers --build-arg "BASE_IMAGE=$BASE" --label "rpger.inputs=$hash" \
        "${ca_args[@]}" -f "$file" -t "$tag" "$@" "$ctx" >"$blog" 2>&1; then
        tail -40 "$blog" >&2
        echo "build-images.sh: building $tag failed (full log: $blog)" >&2
        exit 1
    fi
    rm -f "$blog"
    log "built $tag in $((SECONDS - t0))s"
}

# A TLS-intercepting proxy on the way to PyPI: hand the host's CA bundle to the
# build (a build-time volume, never a layer) and point pip at it.
ca_args=()
HOST_CA=${RPGER_HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [[ -f $HOST_CA ]]; then
    ca_args=(--volume "$HOST_CA:/run/rpger-host-ca.crt:ro" --build-arg PIP_CERT=/run/rpger-host-ca.crt)
fi

hash_of() { # sha256 over the named files' contents and names, plus the base image id
    { echo "$base_id"; for f in "$@"; do echo "$f"; sha256sum <"$f"; done; } | sha256sum | cut -d' ' -f1
}

S=$HERE/standins

TRIXIE=${RPGER_TRIXIE_IMAGE:-localhost/debian:trixie}
trixie_id=$(podman image inspect --format '{{.Id}}' "$TRIXIE") || {
    echo "build-images.sh: base image $TRIXIE missing; run tools/podman/setup-host.sh" >&2
    exit 1
}

if want redis; then
    # Debian 13 ships valkey-server 8.1: the closest stand-in for valkey/valkey:8.1.3.
    BASE=$TRIXIE build localhost/rpger-valkey-standin:8.1 "$S/redis" "$S/redis/Containerfile" \
        "$(echo "$(hash_of "$S/redis/Containerfile" "$S/redis/docker-entrypoint.sh") $trixie_id" | sha256sum | cut -c1-64)"
fi

if want ferretdb; then
    bin=$CACHE/bin/rpger-ferretdb
    [[ -x $bin ]] || { echo "build-images.sh: $bin missing (run tools/build.sh)" >&2; exit 1; }
    ctx=$(mktemp -d)
    cp "$S/ferretdb/Containerfile" "$S/ferretdb/healthcheck.sh" "$ctx/"
    cp "$bin" "$ctx/rpger-ferretdb"
    build localhost/rpger-ferretdb-standin:1 "$ctx" "$ctx/Containerfile" \
        "$(hash_of "$S/ferretdb/Containerfile" "$S/ferretdb/healthcheck.sh" "$bin")"
    rm -rf "$ctx"
fi

if want chroma; then
    build localhost/rpger-chroma-standin:1.5.9 "$S/chroma" "$S/chroma/Containerfile" \
        "$(hash_of "$S/chroma/Containerfile")"
fi

if want minio; then
    bin=$CACHE/bin/minio
    [[ -x $bin ]] || { echo "build-images.sh: $bin missing (run tools/build.sh)" >&2; exit 1; }
    ctx=$(mktemp -d)
    cp "$S/minio/Containerfile" "$REPO/compose/scripts/http-healthcheck.sh" "$ctx/"
    cp "$bin" "$ctx/minio"
    build localhost/rpger-minio-standin:1 "$ctx" "$ctx/Containerfile" \
        "$(hash_of "$S/minio/Containerfile" "$REPO/compose/scripts/http-healthcheck.sh" "$bin")"
    rm -rf "$ctx"
fi

if want mongo; then
    # The official mongo image's contract (its entrypoint, mongosh, initdb) with
    # our mongod front for FerretDB.
    for b in rpger-ferretdb rpger-mongod-standin; do
        [[ -x $CACHE/bin/$b ]] || { echo "build-images.sh: $CACHE/bin/$b missing (run tools/build.sh)" >&2; exit 1; }
    done
    ctx=$(mktemp -d)
    cp "$S/mongo/Containerfile" "$S/mongo/docker-entrypoint.sh" "$ctx/"
    cp "$CACHE/bin/rpger-ferretdb" "$ctx/rpger-ferretdb"
    cp "$CACHE/bin/rpger-mongod-standin" "$ctx/mongod"
    BASE=$TRIXIE build localhost/rpger-mongo-standin:8.0 "$ctx" "$ctx/Containerfile" \
        "$(echo "$(hash_of "$S/mongo/Containerfile" "$S/mongo/docker-entrypoint.sh" "$CACHE/bin/rpger-ferretdb" \
            "$CACHE/bin/rpger-mongod-standin") $trixie_id" | sha256sum | cut -c1-64)"
    rm -rf "$ctx"
fi

if want nginx; then
    build localhost/rpger-nginx-standin:1 "$S/nginx" "$S/nginx/Containerfile" "$(hash_of "$S/nginx/Containerfile")"
fi

if want socket-proxy; then
    bin=$CACHE/bin/socket-proxy
    [[ -x $bin ]] || { echo "build-images.sh: $bin missing (run tools/build.sh)" >&2; exit 1; }
    ctx=$(mktemp -d)
    cp "$S/socket-proxy/Containerfile" "$ctx/"
    cp "$bin" "$ctx/socket-proxy"
    build localhost/rpger-socket-proxy-standin:1.13.1 "$ctx" "$ctx/Containerfile" \
        "$(hash_of "$S/socket-proxy/Containerfile" "$bin")"
    rm -rf "$ctx"
fi

# The stack's derived images: compose/images/<name>/Dockerfile FROM a stand-in.
# derived NAME BASE_ARG BASE_IMAGE
derived() {
    local name=$1 arg=$2 base=$3 base_id files h
    base_id=$(podman image inspect --format '{{.Id}}' "$base") || {
        echo "build-images.sh: $base missing" >&2
        exit 1
    }
    mapfile -t files < <(cd "$REPO/compose" && { ls .dockerignore; find images/"$name" scripts -type f; } | sort)
    h=$(cd "$REPO/compose" && { echo "$base_id"; for f in "${files[@]}"; do echo "$f"; sha256sum <"$f"; done; } |
        sha256sum | cut -c1-64)
    build "localhost/rpger-$name:e2e" "$REPO/compose" "$REPO/compose/images/$name/Dockerfile" "$h" \
        --build-arg "$arg=$base"
}
want mongo && derived mongodb MONGO_IMAGE localhost/rpger-mongo-standin:8.0
want redis && derived valkey VALKEY_IMAGE localhost/rpger-valkey-standin:8.1
want chroma && derived chroma CHROMA_IMAGE localhost/rpger-chroma-standin:1.5.9
want nginx && derived admin-proxy NGINX_IMAGE localhost/rpger-nginx-standin:1

if want ops; then
    # Inputs: everything the Dockerfile copies (see .dockerignore).
    mapfile -t files < <(cd "$REPO" && { ls Dockerfile .dockerignore pyproject.toml dagster.yaml dagster.docker-launcher.yaml README.md 2>/dev/null
        find rpger_ops compose/scripts compose/dagster -type f ! -name '*.pyc' ! -path '*/__pycache__/*' 2>/dev/null; } | sort)
    h=$(cd "$REPO" && hash_of "${files[@]}")
    # VALKEY_IMAGE: no valkey/valkey here; the Dockerfile then installs Debian's
    # redis-server, the same version as the Redis stand-in.
    # Base: Debian 13 (Python 3.13); Debian 12's python3 3.11.2 lacks the PEP 706
    # tarfile filters rpger_ops.archive uses (production: python:3.11.13-slim).
    ops_base=${RPGER_OPS_BASE_IMAGE:-$TRIXIE}
    ops_base_id=$(podman image inspect --format '{{.Id}}' "$ops_base") || {
        echo "build-images.sh: $ops_base missing; run tools/podman/setup-host.sh" >&2
        exit 1
    }
    BASE=$ops_base build localhost/rpger-ops:e2e "$REPO" "$REPO/Dockerfile" "$(echo "$h $ops_base_id" | sha256sum | cut -c1-64)" \
        --build-arg "VALKEY_IMAGE=$ops_base"
fi
