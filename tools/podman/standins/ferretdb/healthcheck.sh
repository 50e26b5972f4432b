#!/bin/bash
# MongoDB-wire ping without a client: send OP_MSG {ping: 1, $db: "admin"} over
# bash's /dev/tcp and require {ok: 1.0} in the reply. Exits non-zero otherwise.
set -euo pipefail
exec 3<>/dev/tcp/127.0.0.1/27017
# header: len=51, requestID=1, responseTo=0, opCode=2013; flags=0; kind 0; BSON
# shellcheck disable=SC2016  # "$db" is the literal BSON key
printf '\x33\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\x00\x00\x00\x00\x00\x1e\x00\x00\x00\x10ping\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00' >&3
reply=$(timeout 5 dd bs=4096 count=1 status=none <&3 | od -An -tx1 | tr -d ' \n')
exec 3>&-
# BSON element: double "ok" = 1.0
[[ $reply == *016f6b00000000000000f03f* ]]
