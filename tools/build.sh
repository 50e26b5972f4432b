#!/usr/bin/env bash
# Build the Go programs the harness and the dev stack run, into the cache:
#   rpger-ferretdb  FerretDB v1.24.2 embedded (tools/ferretdb), the MongoDB-wire server
#   minio           MinIO from its Go module, the S3-compatible off-site store
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
