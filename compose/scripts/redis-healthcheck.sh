#!/bin/sh
# Fails unless an AUTHENTICATED ping answers: `-e` makes the cli exit non-zero
# on an error reply (a bare `redis-cli ping` exits 0 even on NOAUTH); the
# password comes from the secret file via the environment of this process only.
set -eu
cli=$(command -v valkey-cli || command -v redis-cli)
pw=$(tr -d '\r\n' </run/secrets/redis_password)
out=$(REDISCLI_AUTH=$pw VALKEYCLI_AUTH=$pw "$cli" -e --no-auth-warning ping)
[ "$out" = PONG ]
