# rpger_ops image: the Dagster code location (gRPC server), webserver, daemon,
# the run containers of the opt-in DockerRunLauncher, and the one-shot `preseed`.
# It runs as uid/gid 10001 on a read-only root filesystem (compose sets
# read_only + a /tmp tmpfs); everything it writes is on the two volumes.
#
#   docker build -t rpger-ops:0.1.0 .          (compose/compose.yaml does this)
#
# BASE_IMAGE defaults to the official Python image; tools/podman/build-images.sh
# builds FROM a debootstrapped localhost/debian:bookworm where no registry exists
# (Debian's python3 is 3.11 too). No secret is ever copied or passed in here:
# they arrive at run time as files under /run/secrets (compose `secrets:`).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm
# The Redis engine reads RDB dumps with a throwaway server of the SAME major
# version as the stack's (a newer server's RDB/DUMP format cannot be loaded by
# an older one): take valkey-server from the pinned Valkey image. Where that
# image is unavailable (the podman e2e passes its Debian base here), the
# distribution's valkey-server (Debian 13: 8.1, like the e2e stand-in) or else
# redis-server is installed.
ARG VALKEY_IMAGE=valkey/valkey:8.1.11

FROM ${VALKEY_IMAGE} AS valkey
RUN mkdir -p /rpger-valkey \
    && if command -v valkey-server >/dev/null; then cp -L "$(command -v valkey-server)" /rpger-valkey/; fi

FROM ${BASE_IMAGE}

# Only set by tools/podman/build-images.sh behind a TLS-intercepting proxy.
ARG PIP_CERT

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/home \
    RPGER_BACKUP_DIR=/var/lib/rpger/backups

RUN set -eux; \
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/venv; \
    groupadd --system --gid 10001 rpger; \
    useradd --system --uid 10001 --gid rpger --home-dir /opt/dagster --shell /usr/sbin/nologin rpger; \
    install -d -o rpger -g rpger -m 0750 /opt/dagster /opt/dagster/home /var/lib/rpger /var/lib/rpger/backups

COPY --from=valkey /rpger-valkey/ /usr/local/bin/
RUN set -eux; \
    if ! command -v valkey-server >/dev/null; then \
        apt-get update; \
        apt-get install -y --no-install-recommends valkey-server \
            || apt-get install -y --no-install-recommends redis-server; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    { valkey-server --version 2>/dev/null || redis-server --version; }

# Dependencies first (cached while only the code changes).
COPY pyproject.toml /tmp/build/pyproject.toml
RUN set -eux; \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/build/pyproject.toml','rb'))['project']['dependencies']))" \
        > /tmp/build/requirements.txt; \
    pip install -r /tmp/build/requirements.txt

# ./client: rpger_ops.clients re-exports it; its requirements are already in
# (chromadb-client's by the full chromadb: see pyproject.toml).
COPY --chown=root:root . /tmp/build/src
RUN set -eux; \
    cd /tmp/build/src; \
    [ -f README.md ] || echo "rpger-ops" > README.md; \
    pip install --no-deps . ./client; \
    install -d /usr/local/lib/rpger /opt/rpger; \
    install -m 0755 compose/scripts/ops-entrypoint.sh /usr/local/bin/rpger-entrypoint; \
    install -m 0644 compose/scripts/check-secrets.sh /usr/local/lib/rpger/check-secrets.sh; \
    install -m 0644 dagster.yaml /opt/rpger/dagster.yaml; \
    install -m 0644 dagster.docker-launcher.yaml /opt/rpger/dagster.docker-launcher.yaml; \
    install -m 0644 compose/dagster/workspace.yaml /opt/rpger/workspace.yaml; \
    rm -rf /tmp/build; \
    # An image that cannot load its own code must not be built (no fallbacks that hide it).
    rpger-ops --help >/dev/null; \
    python3 -c "import rpger_ops.definitions"

USER rpger
WORKDIR /opt/dagster
ENTRYPOINT ["/usr/local/bin/rpger-entrypoint"]
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "rpger_ops.definitions"]
