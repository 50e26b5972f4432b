"""One dump directory <-> one `tar + zstd` archive, streamed, with its sha256.

Archives are plain `tar --zstd` files: a person can inspect or unpack one with
`tar --zstd -xf mongo.tar.zst` and no rpger tooling. Nothing here knows about
databases or the catalogue; `backup.py` decides where archives go.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

CHUNK = 1 << 20


class ArchiveError(Exception):
    """An archive could not be written, read, or holds something unsafe."""


@dataclass(frozen=True)
class ArchiveInfo:
    bytes: int
    sha256: str


class _HashingWriter:
    """File-like sink that hashes and counts what passes through, so the
    archive is read only once (while being written)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


def _normalised(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # Owner names of the backup host mean nothing on the restore host.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if not (info.isfile() or info.isdir()):
        return None  # dumps hold only files and folders; skip sockets, links, devices
    return info


def create_archive(src_dir: Path, dest_file: Path, level: int = 6, threads: int = 0) -> ArchiveInfo:
    """Write `src_dir`'s contents as tar+zstd to `dest_file` (members relative to
    `src_dir`, sorted). On any failure the partial `dest_file` is removed.

    `threads`: zstd worker threads (0 = compress in this thread)."""
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise ArchiveError(f"not a directory: {src_dir}")
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    try:
        with open(dest_file, "xb") as raw:
            sink = _HashingWriter(raw)
            zw = compressor.stream_writer(sink, closefd=False)  # type: ignore[arg-type]
            with zw, tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for child in sorted(src_dir.iterdir()):
                    tar.add(child, arcname=child.name, recursive=True, filter=_normalised)
            raw.flush()
            os.fsync(raw.fileno())
    except FileExistsError:
        raise ArchiveError(f"refusing to overwrite existing archive {dest_file}") from None
    except BaseException:
        dest_file.unlink(missing_ok=True)
        raise
    return ArchiveInfo(bytes=sink.size, sha256=sink.sha.hexdigest())


# tarfile extraction filters arrived in 3.11.4; older 3.11 builds reject the argument.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


def extract_archive(file: Path, dest_dir: Path) -> list[str]:
    """Unpack a tar+zstd archive into `dest_dir` and return the member names.

    Refuses (ArchiveError) anything that could land outside `dest_dir`:
    absolute paths, `..`, links and special files. Python's `data` filter
    enforces the same rules; the explicit check keeps the message readable."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    root = dest_dir.resolve()
    names: list[str] = []
    try:
        with open(file, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as zr, \
                tarfile.open(fileobj=zr, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                _check_member(member, root)
                if _HAS_DATA_FILTER:
                    tar.extract(member, dest_dir, filter="data")
                else:  # Python < 3.11.4 (e.g. Debian 12's 3.11.2): _check_member is the guard
                    member.mode = 0o755 if member.isdir() else 0o644  # as the data filter would
                    tar.extract(member, dest_dir, set_attrs=member.isfile())
                names.append(member.name)
    except ArchiveError:
        raise
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise ArchiveError(f"{Path(file).name}: not a readable tar+zstd archive ({exc})") from None
    return names


def _check_member(member: tarfile.TarInfo, root: Path) -> None:
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"unsafe archive member {member.name!r}: only files and folders are allowed")
    target = (root / member.name).resolve()
    if member.name.startswith("/") or not target.is_relative_to(root):
        raise ArchiveError(f"unsafe archive member {member.name!r}: path escapes the destination")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
