#!/bin/bash
# HTTP health probe for images without curl/wget (e.g. chromadb/chroma 1.x):
# bash /dev/tcp, HTTP/1.0 GET, success only on status 200.
#   http-healthcheck.sh PORT PATH
set -euo pipefail
port=${1:?port}
path=${2:?path}
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 5 status <&3
exec 3>&-
[[ $status =~ ^HTTP/1\.[01]\ 200 ]]
