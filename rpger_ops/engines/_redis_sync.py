"""Pull an RDB snapshot from a live Redis over the replication protocol.

This is what `redis-cli --rdb` does: connect as a replica, ask for a full
sync, and stream the snapshot the server's fork produces. The server keeps
serving clients meanwhile (no SAVE, no reading of its files). The payload
arrives either with a length (`$<len>`, disk-based sync) or, for diskless
sync, as `$EOF:<40-byte mark>` followed by data ending with the same mark.
Before it, the server sends bare `\\n` keep-alives while its fork starts.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from rpger_ops.engines.base import EngineError, NotReadyError, Progress

EOF_MARK_LEN = 40
CHUNK = 1 << 20
PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True)
class RedisAddress:
    """Where and how to connect; `password` never leaves this process."""

    host: str = ""
    port: int = 6379
    unix_path: str = ""
    tls: bool = False
    tls_verify: bool = True
    tls_check_hostname: bool = True
    tls_ca_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.unix_path or f"{self.host}:{self.port}"


def parse_address(url: str, username: str | None, password: str | None) -> RedisAddress:
    """Credentials in the URL win, as in redis-py's `from_url`; TLS options are
    read from the same query parameters redis-py takes (ssl_cert_reqs,
    ssl_ca_certs, ssl_check_hostname)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    user = unquote(parts.username) if parts.username else username
    pw = unquote(parts.password) if parts.password else password
    if parts.scheme == "unix":
        return RedisAddress(unix_path=parts.path, username=user, password=pw)
    cert_reqs = query.get("ssl_cert_reqs", ["required"])[0].lower()
    check_hostname = query.get("ssl_check_hostname", ["true"])[0].lower() not in ("false", "no", "0", "n", "f")
    ca_file = query.get("ssl_ca_certs", [""])[0] or None
    return RedisAddress(host=parts.hostname or "localhost", port=parts.port or 6379,
                        tls=parts.scheme == "rediss", tls_verify=cert_reqs not in ("none", "cert_none"),
                        tls_check_hostname=check_hostname,
                        tls_ca_file=ca_file, username=user, password=pw)


@dataclass
class SyncResult:
    path: Path
    bytes: int
    diskless: bool
    replid: str
    offset: int


class _Reader:
    """Buffered reads from the replication socket; EOF mid-way is an EngineError."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(CHUNK)
        except TimeoutError:
            raise EngineError("Redis stopped sending the snapshot (read timed out)") from None
        except OSError as exc:
            raise EngineError(f"connection to Redis lost during the snapshot: {exc.strerror or exc}") from None
        if not chunk:
            raise EngineError("Redis closed the connection before the snapshot was complete")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def take_buffer(self) -> bytes:
        data, self.buf = self.buf, b""
        return data

    def recv(self) -> bytes:
        self._fill()
        return self.take_buffer()


def _connect(addr: RedisAddress, timeout: float) -> socket.socket:
    sock: socket.socket | None = None
    try:
        if addr.unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(addr.unix_path)
        else:
            sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if addr.tls:
            ctx = ssl.create_default_context(cafile=addr.tls_ca_file)
            ctx.check_hostname = addr.tls_verify and addr.tls_check_hostname
            if not addr.tls_verify:
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=addr.host)
        return sock
    except OSError as exc:  # ssl.SSLError is an OSError too
        if sock is not None:
            sock.close()
        if isinstance(exc, ssl.SSLError):
            raise NotReadyError(f"TLS handshake with Redis at {addr.label} failed: {exc.reason}") from None
        raise NotReadyError(f"cannot connect to Redis at {addr.label}: {exc.strerror or exc}") from None


def _command(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _simple(sock: socket.socket, reader: _Reader, *args: str) -> bytes:
    sock.sendall(_command(*args))
    return reader.line()


def _authenticate(sock: socket.socket, reader: _Reader, addr: RedisAddress) -> None:
    if addr.password is None:
        return
    args = ["AUTH", addr.username, addr.password] if addr.username else ["AUTH", addr.password]
    reply = _simple(sock, reader, *args)
    if not reply.startswith(b"+"):
        # The server's error text names no secret, but keep ours generic anyway.
        raise NotReadyError(f"Redis at {addr.label} refused our credentials")


def fetch_rdb(addr: RedisAddress, dest: Path, progress: Progress, timeout: float) -> SyncResult:
    """Stream a fresh snapshot into `dest`; raise EngineError (and delete `dest`) on any failure."""
    sock = _connect(addr, timeout)
    try:
        reader = _Reader(sock)
        _authenticate(sock, reader, addr)
        # Tell the server we take diskless (EOF-marked) payloads and want the
        # snapshot only, no replication stream after it; old servers refuse
        # `rdb-only`, which only costs us ignoring the stream.
        _simple(sock, reader, "REPLCONF", "capa", "eof")
        _simple(sock, reader, "REPLCONF", "rdb-only", "1")
        sock.sendall(_command("PSYNC", "?", "-1"))
        replid, offset = "", 0
        started = time.monotonic()
        next_progress = started
        while True:
            line = reader.line()
            if not line:  # keep-alive while the server's fork starts
                if time.monotonic() >= next_progress:
                    progress("waiting for Redis to start the snapshot", 0, None)
                    next_progress = time.monotonic() + PROGRESS_EVERY_S
                continue
            if line.startswith(b"+FULLRESYNC"):
                fields = line.split()
                if len(fields) >= 3:
                    replid, offset = fields[1].decode(), int(fields[2])
                continue
            if line.startswith(b"-"):
                message = line[1:].decode(errors="replace")
                if message.startswith("NOAUTH"):
                    raise NotReadyError("Redis requires a password for the snapshot (set REDIS_PASSWORD)")
                if message.startswith("NOPERM"):
                    raise NotReadyError(f"Redis refused the snapshot (the user needs +psync +replconf): {message}")
                raise EngineError(f"Redis refused the snapshot: {message}")
            if line.startswith(b"$"):
                break
            raise EngineError(f"unexpected reply from Redis before the snapshot: {line[:60]!r}")
        try:
            if line.startswith(b"$EOF:"):
                mark = line[5:5 + EOF_MARK_LEN]
                size = _stream_until_mark(reader, dest, mark, progress)
                diskless = True
            else:
                size = _stream_length(reader, dest, int(line[1:]), progress)
                diskless = False
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return SyncResult(dest, size, diskless, replid, offset)
    finally:
        sock.close()


def _stream_length(reader: _Reader, dest: Path, total: int, progress: Progress) -> int:
    done = 0
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    with dest.open("wb") as out:
        data = reader.take_buffer()
        while True:
            if done + len(data) > total:  # anything after the payload is the replication stream
                data = data[:total - done]
            out.write(data)
            done += len(data)
            if done >= total:
                return done
            if time.monotonic() >= next_progress:
                progress("receiving the Redis snapshot", done, total)
                next_progress = time.monotonic() + PROGRESS_EVERY_S
            data = reader.recv()


def _stream_until_mark(reader: _Reader, dest: Path, mark: bytes, progress: Progress) -> int:
    if len(mark) != EOF_MARK_LEN:
        raise EngineError("malformed diskless snapshot header from Redis")
    done = 0
    pending = reader.take_buffer()  # the last bytes may be the mark: hold them back
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    with dest.open("wb") as out:
        while True:
            if len(pending) >= EOF_MARK_LEN and pending.endswith(mark):
                out.write(pending[:-EOF_MARK_LEN])
                return done + len(pending) - EOF_MARK_LEN
            if len(pending) > EOF_MARK_LEN:
                flush = len(pending) - EOF_MARK_LEN
                out.write(pending[:flush])
                done += flush
                pending = pending[flush:]
            if time.monotonic() >= next_progress:
                progress("receiving the Redis snapshot", done, None)
                next_progress = time.monotonic() + PROGRESS_EVERY_S
            pending += reader.recv()


def check_rdb_header(path: Path) -> int:
    """Cheap structural check before loading: magic, version, EOF opcode. Returns the version.

    The CRC64 in the last 8 bytes is verified by loading the file (redis-server
    refuses a wrong checksum)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
            f.seek(max(0, size - 9))
            tail = f.read(9)
    except OSError as exc:
        raise EngineError(f"cannot read {path.name}: {exc.strerror}") from None
    # "REDIS" + 4 digits; Valkey 9+ writes "VALKEY" + 3 digits for its own formats.
    digits = head[5:9] if head[:5] == b"REDIS" else head[6:9] if head[:6] == b"VALKEY" else b""
    if size < 18 or not digits.isdigit():
        raise EngineError(f"{path.name} is not an RDB file (bad header or too short)")
    version = int(digits)
    if version >= 5 and tail[0] != 0xFF:
        raise EngineError(f"{path.name} is truncated (no end-of-file marker)")
    return version
