#!/bin/sh
# Entrypoint wrapper for valkey/valkey (and the e2e redis-server stand-in).
# The password never appears on a command line: it is turned into an ACL file
# holding only its sha256 (tmpfs /run/rpger, readable by the server user only),
# referenced from a generated config. Then the image's entrypoint drops root.
# Two users, both rewritten at every start (rotation = new secret + restart),
# defined in redis-acl.sh (shared with the test harness and `rpger-ops dev`):
#   default   (ops layer) all rights: backups need PSYNC/REPLCONF, forced
#             restores FLUSHDB;
#   rpger_app (the app)   all keys and channels, no @admin/@dangerous commands
#             but INFO and KEYS (RPGer calls them); never FLUSHALL/FLUSHDB,
#             CONFIG, ACL, SHUTDOWN, PSYNC/SYNC, DEBUG, MODULE, MONITOR ...
set -eu
# shellcheck source=check-secrets.sh
. /usr/local/lib/rpger/check-secrets.sh
require_secret /run/secrets/redis_password redis_password
require_secret /run/secrets/redis_app_password redis_app_password

if command -v valkey-server >/dev/null 2>&1; then server=valkey-server; user=valkey
else server=redis-server; user=redis; fi

install -d -m 0755 /run/rpger
umask 077
sh /usr/local/lib/rpger/redis-acl.sh /run/secrets/redis_password /run/secrets/redis_app_password >/run/rpger/users.acl
cat >/run/rpger/server.conf <<CONF
bind * -::*
port 6379
protected-mode yes
dir /data
aclfile /run/rpger/users.acl
appendonly yes
appendfsync everysec
save 900 1 300 100 60 10000
maxmemory ${RPGER_REDIS_MAXMEMORY:-384mb}
maxmemory-policy noeviction
# No replicas here: the ops layer's snapshot (a replica's PSYNC, like redis-cli --rdb)
# would wait the default 5 s for more replicas to join before it starts.
repl-diskless-sync-delay 0
CONF
chown "$user" /run/rpger/users.acl /run/rpger/server.conf
exec docker-entrypoint.sh "$server" /run/rpger/server.conf
