"""The mongodump directory layout, read and written without a server.

One folder per database; per collection `<name>.bson` (BSON documents
concatenated, each starting with its int32 little-endian length) and
`<name>.metadata.json` (canonical Extended JSON: indexes, options, uuid,
collectionName, type). `mongorestore --dir` reads it as is.

Documents travel as raw bytes end to end: nothing here decodes a document
except `validate_and_count`, whose job is to prove the files are intact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

import bson
from bson import json_util
from bson.binary import Binary
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import BSONError
from bson.json_util import CANONICAL_JSON_OPTIONS

BSON_SUFFIX = ".bson"
METADATA_SUFFIX = ".metadata.json"
MIN_DOCUMENT_SIZE = 5  # int32 length + terminating NUL
READ_CHUNK = 8 << 20
# Validation decodes whole documents; dates outside Python's range must not fail it.
_VALIDATE_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)


class DumpFormatError(Exception):
    """A dump file is truncated, corrupt or missing; the message names the file."""


@dataclass
class CollectionMetadata:
    name: str
    type: str = "collection"  # "collection", "view" or "timeseries"
    options: dict[str, Any] = field(default_factory=dict)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    uuid: str | None = None
    data_file: Path | None = None  # set when read from a dump folder; never serialised

    @property
    def has_documents(self) -> bool:
        return self.type != "view"

    def to_json(self) -> str:
        doc: dict[str, Any] = {"indexes": self.indexes}
        if self.uuid:
            doc["uuid"] = self.uuid
        doc.update({"collectionName": self.name, "type": self.type, "options": self.options})
        return json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS)

    @classmethod
    def from_json(cls, text: str, fallback_name: str) -> CollectionMetadata:
        doc = json_util.loads(text, json_options=CANONICAL_JSON_OPTIONS)
        if not isinstance(doc, dict):
            raise ValueError("metadata is not a JSON object")
        indexes, options = doc.get("indexes", []), doc.get("options", {})
        if not isinstance(indexes, list) or not isinstance(options, dict):
            raise ValueError("metadata 'indexes' must be a list and 'options' an object")
        return cls(name=str(doc.get("collectionName") or fallback_name), type=str(doc.get("type", "collection")),
                   options=options, indexes=indexes, uuid=doc.get("uuid"))


def uuid_hex(value: Any) -> str | None:
    """listCollections' info.uuid as mongodump writes it (32 hex digits)."""
    if isinstance(value, Binary) and value.subtype in (3, 4):
        return value.as_uuid(value.subtype).hex
    hex_value = getattr(value, "hex", None)  # uuid.UUID
    return hex_value if isinstance(hex_value, str) else None


def file_stem(collection: str) -> str:
    """mongodump escapes path separators and '%' in collection names; mongorestore unescapes."""
    return quote(collection, safe=" !#$&'()+,;=@[]^_`{}~.-")


def collection_from_stem(stem: str) -> str:
    return unquote(stem)


def bson_path(db_dir: Path, collection: str) -> Path:
    return db_dir / (file_stem(collection) + BSON_SUFFIX)


def metadata_path(db_dir: Path, collection: str) -> Path:
    return db_dir / (file_stem(collection) + METADATA_SUFFIX)


def split_documents(data: bytes | memoryview) -> Iterator[memoryview]:
    """Walk a buffer of whole concatenated documents (a server batch) by their length prefixes."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        size = int.from_bytes(view[pos:pos + 4], "little")
        if size < MIN_DOCUMENT_SIZE or pos + size > end:
            raise DumpFormatError(f"bad document length {size} at byte {pos} of a {end}-byte batch")
        yield view[pos:pos + size]
        pos += size


def iter_documents(path: Path) -> Iterator[bytes]:
    """Raw documents of one .bson file; raises DumpFormatError on a bad length or a partial last document."""
    with path.open("rb") as fh:
        yield from _iter_stream(fh, path.name)


def _iter_stream(fh: BinaryIO, label: str) -> Iterator[bytes]:
    buf = b""
    offset = 0  # file offset of buf[0], for error messages
    while True:
        chunk = fh.read(READ_CHUNK)
        if chunk:
            buf = buf + chunk if buf else chunk
        pos, end = 0, len(buf)
        while end - pos >= 4:
            size = int.from_bytes(buf[pos:pos + 4], "little")
            if size < MIN_DOCUMENT_SIZE:
                raise DumpFormatError(f"{label}: bad document length {size} at byte {offset + pos}")
            if end - pos < size:
                break
            if buf[pos + size - 1] != 0:
                raise DumpFormatError(f"{label}: document at byte {offset + pos} does not end with NUL")
            yield buf[pos:pos + size]
            pos += size
        buf = buf[pos:]
        offset += pos
        if not chunk:
            if buf:
                raise DumpFormatError(f"{label}: truncated: {len(buf)} trailing bytes at byte {offset} "
                                      "are not a whole document")
            return


def count_documents(path: Path) -> int:
    """Documents in a .bson file by their length prefixes (no decoding); raises on truncation."""
    return sum(1 for _ in iter_documents(path))


def iter_batches(path: Path, max_docs: int, max_bytes: int) -> Iterator[list[bytes]]:
    """Documents of one .bson file grouped for bulk inserts."""
    batch: list[bytes] = []
    size = 0
    for doc in iter_documents(path):
        batch.append(doc)
        size += len(doc)
        if len(batch) >= max_docs or size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def validate_and_count(path: Path) -> int:
    """Count the documents of a .bson file, decoding each to prove it is well-formed BSON."""
    count = 0
    pending: list[bytes] = []
    pending_bytes = 0
    for doc in iter_documents(path):
        pending.append(doc)
        pending_bytes += len(doc)
        if pending_bytes >= READ_CHUNK:
            count += _decode_count(b"".join(pending), path)
            pending, pending_bytes = [], 0
    if pending:
        count += _decode_count(b"".join(pending), path)
    return count


def _decode_count(data: bytes, path: Path) -> int:
    try:
        return len(bson.decode_all(data, _VALIDATE_OPTIONS))
    except (BSONError, ValueError, OverflowError) as exc:
        raise DumpFormatError(f"{path.name}: corrupt BSON document: {exc}") from None


def database_dir(src: Path, preferred: str | None = None) -> Path:
    """The one database folder of a dump (or the one named `preferred` when there are several)."""
    dirs = sorted(p for p in src.iterdir() if p.is_dir())
    if preferred and (src / preferred).is_dir():
        return src / preferred
    if len(dirs) != 1:
        names = ", ".join(p.name for p in dirs) or "none"
        raise DumpFormatError(f"{src}: expected one database folder in the dump, found {names}")
    return dirs[0]


def read_layout(db_dir: Path) -> list[CollectionMetadata]:
    """Every collection of a database folder, from its metadata files; every .bson file must have one."""
    compressed = sorted(p.name for p in db_dir.glob("*.gz"))
    if compressed:  # mongodump --gzip output would otherwise look like an empty database
        raise DumpFormatError(f"{db_dir.name}: gzip-compressed mongodump files are not supported "
                              f"({', '.join(compressed[:3])}); gunzip them first")
    found: dict[str, CollectionMetadata] = {}
    for meta_file in sorted(db_dir.glob("*" + METADATA_SUFFIX)):
        stem = meta_file.name[: -len(METADATA_SUFFIX)]
        try:
            meta = CollectionMetadata.from_json(meta_file.read_text(encoding="utf-8"), collection_from_stem(stem))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise DumpFormatError(f"{meta_file.name}: unreadable metadata: {exc}") from None
        found[stem] = meta
    for data_file in sorted(db_dir.glob("*" + BSON_SUFFIX)):
        stem = data_file.name[: -len(BSON_SUFFIX)]
        if stem not in found:
            raise DumpFormatError(f"{data_file.name}: no matching {stem}{METADATA_SUFFIX}")
    for stem, meta in found.items():
        data_file = db_dir / (stem + BSON_SUFFIX)
        if meta.has_documents and not data_file.is_file():
            raise DumpFormatError(f"{stem}{METADATA_SUFFIX}: its data file {stem}{BSON_SUFFIX} is missing")
        meta.data_file = data_file if meta.has_documents else None
    return list(found.values())
