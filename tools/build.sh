#!/usr/bin/env bash
# Build the Go programs the harness and the dev stack run, into the cache:
#   rpger-ferretdb  FerretDB v1.24.2 embedded (tools/ferretdb), the MongoDB-wire server
#   minio           MinIO from its Go module, the S3-compatible off-site store
#   rpger-mongod-standin  e2e `mongod` of the official-mongo-image stand-in (tools/ferretdb/mongod)
#   socket-proxy    e2e stand-in for wollomatic/socket-proxy (tools/podman/standins/socket-proxy;
#                   upstream's module is not served by the module proxy here)
# Each is rebuilt only when its inputs change (a stamp file records them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${RPGER_CACHE_DIR:-$HOME/.cache/rpger-dbstack}
bin="$cache/bin"
mkdir -p "$bin"
MINIO_VERSION=${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}

stamp_ok() { [ -x "$bin/$1" ] && [ -f "$bin/$1.stamp" ] && [ "$(cat "$bin/$1.stamp")" = "$2" ]; }

fdb_stamp=$(cat "$here/ferretdb/go.mod" "$here/ferretdb/go.sum" "$here/ferretdb/main.go" | sha256sum | cut -c1-16)
if stamp_ok rpger-ferretdb "$fdb_stamp"; then
  echo "build: rpger-ferretdb up to date"
else
  echo "build: rpger-ferretdb (FerretDB v1.24.2 embedded) ..."
  t0=$(date +%s)
  (cd "$here/ferretdb" && go build -trimpath -o "$bin/rpger-ferretdb.tmp" .)
  mv "$bin/rpger-ferretdb.tmp" "$bin/rpger-ferretdb"
  echo "$fdb_stamp" > "$bin/rpger-ferretdb.stamp"
  echo "build: rpger-ferretdb done in $(( $(date +%s) - t0 ))s"
fi

if stamp_ok minio "$MINIO_VERSION"; then
  echo "build: minio up to date"
else
  echo "build: minio $MINIO_VERSION (go install; several minutes on a cold cache) ..."
  t0=$(date +%s)
  tmpbin=$(mktemp -d)
  GOBIN="$tmpbin" go install "github.com/minio/minio@$MINIO_VERSION"
  mv "$tmpbin/minio" "$bin/minio"
  rmdir "$tmpbin"
  echo "$MINIO_VERSION" > "$bin/minio.stamp"
  echo "build: minio done in $(( $(date +%s) - t0 ))s"
fi

sp_dir="$here/podman/standins/socket-proxy"
sp_stamp=$(cat "$sp_dir/go.mod" "$sp_dir/main.go" | sha256sum | cut -c1-16)
if stamp_ok socket-proxy "$sp_stamp"; then
  echo "build: socket-proxy stand-in up to date"
else
  (cd "$sp_dir" && CGO_ENABLED=0 go build -trimpath -o "$bin/socket-proxy.tmp" .)
  mv "$bin/socket-proxy.tmp" "$bin/socket-proxy"
  echo "$sp_stamp" > "$bin/socket-proxy.stamp"
  echo "build: socket-proxy stand-in built"
fi

# The e2e's `mongod` for the official-image stand-in (tools/podman/standins/mongo).
md_stamp=$(cat "$here/ferretdb/go.mod" "$here/ferretdb/go.sum" "$here/ferretdb/mongod/main.go" | sha256sum | cut -c1-16)
if stamp_ok rpger-mongod-standin "$md_stamp"; then
  echo "build: rpger-mongod-standin up to date"
else
  (cd "$here/ferretdb" && go build -trimpath -o "$bin/rpger-mongod-standin.tmp" ./mongod)
  mv "$bin/rpger-mongod-standin.tmp" "$bin/rpger-mongod-standin"
  echo "$md_stamp" > "$bin/rpger-mongod-standin.stamp"
  echo "build: rpger-mongod-standin built"
fi
