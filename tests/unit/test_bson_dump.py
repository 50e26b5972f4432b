"""The mongodump file layout, without a server."""

from __future__ import annotations

from pathlib import Path

import bson
import pytest
from bson import Int64

from rpger_ops.engines import _bson_dump as layout


def write_docs(path: Path, docs: list[dict]) -> list[bytes]:
    raw = [bson.encode(d) for d in docs]
    path.write_bytes(b"".join(raw))
    return raw


def test_documents_spanning_read_chunks_come_back_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "READ_CHUNK", 7)  # every document spans several reads
    raw = write_docs(tmp_path / "c.bson", [{"i": i, "s": "x" * i} for i in range(50)])
    assert list(layout.iter_documents(tmp_path / "c.bson")) == raw
    assert layout.validate_and_count(tmp_path / "c.bson") == 50


def test_batches_respect_count_and_size_limits(tmp_path: Path) -> None:
    raw = write_docs(tmp_path / "c.bson", [{"i": i} for i in range(25)])
    batches = list(layout.iter_batches(tmp_path / "c.bson", max_docs=10, max_bytes=1 << 20))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [d for b in batches for d in b] == raw
    by_size = list(layout.iter_batches(tmp_path / "c.bson", max_docs=1000, max_bytes=len(raw[0]) * 4))
    assert all(len(b) <= 4 for b in by_size) and sum(map(len, by_size)) == 25


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_partial_trailing_document_is_truncation(tmp_path: Path, cut: int) -> None:
    raw = write_docs(tmp_path / "c.bson", [{"i": i} for i in range(3)])
    (tmp_path / "c.bson").write_bytes(b"".join(raw)[:-cut])
    with pytest.raises(layout.DumpFormatError, match="truncated|does not end"):
        list(layout.iter_documents(tmp_path / "c.bson"))


def test_empty_file_has_no_documents(tmp_path: Path) -> None:
    (tmp_path / "c.bson").write_bytes(b"")
    assert layout.validate_and_count(tmp_path / "c.bson") == 0


def test_split_documents_rejects_overrunning_length() -> None:
    data = bson.encode({"a": 1})
    assert [bytes(d) for d in layout.split_documents(data + data)] == [data, data]
    with pytest.raises(layout.DumpFormatError):
        list(layout.split_documents(data + data[:-1]))


def test_metadata_round_trip_keeps_types_and_order() -> None:
    meta = layout.CollectionMetadata(
        name="users", options={"capped": True, "size": Int64(1 << 20)},
        indexes=[{"v": 2, "key": {"userId": 1, "name": -1}, "name": "userId_1_name_-1", "unique": True}],
        uuid="0" * 32)
    back = layout.CollectionMetadata.from_json(meta.to_json(), "ignored")
    assert back.name == "users" and back.uuid == "0" * 32 and back.type == "collection"
    assert type(back.options["size"]) is Int64 and type(back.indexes[0]["v"]) is int
    assert list(back.indexes[0]["key"]) == ["userId", "name"]


def test_collection_names_escape_path_separators() -> None:
    for name in ("users", "a/b", "50%", "x.y.z"):
        stem = layout.file_stem(name)
        assert "/" not in stem
        assert layout.collection_from_stem(stem) == name
    assert layout.file_stem("x.y.z") == "x.y.z"


def test_layout_requires_pairs(tmp_path: Path) -> None:
    (tmp_path / "a.bson").write_bytes(b"")
    with pytest.raises(layout.DumpFormatError, match="a.metadata.json"):
        layout.read_layout(tmp_path)
    (tmp_path / "a.metadata.json").write_text(layout.CollectionMetadata(name="a").to_json())
    (tmp_path / "v.metadata.json").write_text(layout.CollectionMetadata(name="v", type="view").to_json())
    metas = {m.name: m for m in layout.read_layout(tmp_path)}
    assert metas["a"].data_file == tmp_path / "a.bson" and metas["v"].data_file is None


def test_gzipped_mongodump_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    (tmp_path / "users.bson.gz").write_bytes(b"\x1f\x8b")
    (tmp_path / "users.metadata.json.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(layout.DumpFormatError, match="gzip"):
        layout.read_layout(tmp_path)
