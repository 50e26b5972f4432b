#!/bin/sh
# Prints the stack's Valkey/Redis ACL file: the ONE definition of its users,
# used by redis-entrypoint.sh in the container and by the test harness and
# `rpger-ops dev` (rpger_ops/devservers.py) on a plain redis-server, so the
# rules cannot drift apart. Passwords are read from files (never argv) and
# only their sha256 is written.
#
#   redis-acl.sh OPS_PASSWORD_FILE APP_PASSWORD_FILE > users.acl
#
#   default    the ops layer: everything (backups need PSYNC/REPLCONF, forced
#              restores FLUSHDB).
#   rpger_app  the RPGer app: every key and channel; every command except the
#              @admin and @dangerous categories, with two read-only ones given
#              back because RPGer calls them:
#                INFO  its /api/health and /api/status routes (version,
#                      memory, uptime);
#                KEYS  its RedisInterface (game:state:characters:*) and its
#                      Node VectorService (vector:collection:*). KEYS walks the
#                      whole keyspace in one go: fine for RPGer's few thousand
#                      keys; new code should SCAN (rpger_stack_client's
#                      StackClients.scan_keys).
#              Then, whatever category a server version files them under,
#              never: FLUSHALL/FLUSHDB, CONFIG, ACL (but WHOAMI), SHUTDOWN,
#              PSYNC/SYNC/REPLCONF, DEBUG, MODULE, MONITOR, REPLICAOF/SLAVEOF,
#              FAILOVER.
# Valid on Valkey 8.1 (compose) and Redis 7.0 (Debian 12, the test harness).
set -eu
[ $# -eq 2 ] || { echo "usage: redis-acl.sh OPS_PASSWORD_FILE APP_PASSWORD_FILE" >&2; exit 64; }
APP_RULES='~* &* +@all -@admin -@dangerous +info +keys'
APP_NEVER='-flushall -flushdb -config -acl +acl|whoami -shutdown -psync -sync -replconf -debug -module -monitor -replicaof -slaveof -failover'
sha() { tr -d '\r\n' <"$1" | sha256sum | cut -d' ' -f1; }
printf 'user default on #%s ~* &* +@all\n' "$(sha "$1")"
printf 'user rpger_app on #%s %s %s\n' "$(sha "$2")" "$APP_RULES" "$APP_NEVER"
