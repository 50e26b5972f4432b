"""Pure parts of the Redis engine: address parsing, RDB header checks, TTL bucketing, RESP packing."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpger_ops.engines._redis_raw import pack
from rpger_ops.engines._redis_sync import check_rdb_header, parse_address
from rpger_ops.engines.base import EngineError


def test_url_credentials_win_over_settings_like_redis_py() -> None:
    addr = parse_address("redis://app:s%40cret@cache:6380/2", "ops", "other")
    assert (addr.host, addr.port, addr.username, addr.password) == ("cache", 6380, "app", "s@cret")
    plain = parse_address("redis://cache/0", "ops", "pw")
    assert (plain.port, plain.username, plain.password, plain.tls) == (6379, "ops", "pw", False)


def test_password_is_not_in_the_repr() -> None:
    assert "topsecret" not in repr(parse_address("redis://:topsecret@h:1/0", None, None))


def test_tls_options_follow_redis_py_query_names() -> None:
    strict = parse_address("rediss://h:6380/0", None, None)
    assert strict.tls and strict.tls_verify and strict.tls_check_hostname and strict.tls_ca_file is None
    loose = parse_address("rediss://h/0?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem", None, None)
    assert not loose.tls_verify and loose.tls_ca_file == "/ca.pem"
    no_host = parse_address("rediss://h/0?ssl_check_hostname=false", None, None)
    assert no_host.tls_verify and not no_host.tls_check_hostname


def test_unix_socket_url() -> None:
    addr = parse_address("unix:///run/redis.sock?db=1", None, "pw")
    assert addr.unix_path == "/run/redis.sock" and addr.label == "/run/redis.sock" and addr.password == "pw"


def _rdb(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "dump.rdb"
    path.write_bytes(data)
    return path


def test_rdb_header_accepts_redis_and_valkey_magic(tmp_path: Path) -> None:
    body = b"\xfa" + b"x" * 20 + b"\xff" + b"\0" * 8
    assert check_rdb_header(_rdb(tmp_path, b"REDIS0011" + body)) == 11
    assert check_rdb_header(_rdb(tmp_path, b"VALKEY080" + body)) == 80


@pytest.mark.parametrize("data", [b"", b"REDIS0011", b"HELLO0011" + b"x" * 40, b"REDIS0011" + b"x" * 40])
def test_rdb_header_rejects_garbage_and_missing_end(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(EngineError):
        check_rdb_header(_rdb(tmp_path, data))


def test_pack_is_resp() -> None:
    assert pack(b"SET", b"k", b"") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
