#!/bin/sh
# Mimics the official valkey image: when started as root with the server as
# command, own /data and drop to the unprivileged `valkey` user.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- valkey-server "$@"
fi
if [ "$1" = 'valkey-server' ] && [ "$(id -u)" = '0' ]; then
    find /data \! -user valkey -exec chown valkey '{}' +
    exec setpriv --reuid=valkey --regid=valkey --clear-groups -- "$0" "$@"
fi
exec "$@"
