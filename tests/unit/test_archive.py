"""tar+zstd archives: round trip, checksum, atomic failure, path-traversal safety."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from rpger_ops.archive import ArchiveError, create_archive, extract_archive, sha256_file


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dump_dir(tmp_path: Path) -> Path:
    src = tmp_path / "dump"
    (src / "rpger").mkdir(parents=True)
    (src / "rpger" / "monsters.bson").write_bytes(bytes(range(256)) * 400)
    (src / "rpger" / "monsters.metadata.json").write_text('{"indexes": []}')
    (src / "empty.txt").write_bytes(b"")
    return src


def test_round_trip_restores_identical_files(dump_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.tar.zst"
    info = create_archive(dump_dir, dest, level=3)
    assert info.bytes == dest.stat().st_size > 0
    assert info.sha256 == sha256_file(dest)
    names = extract_archive(dest, tmp_path / "x")
    assert "rpger/monsters.bson" in names
    assert _tree(tmp_path / "x") == _tree(dump_dir)


def test_archive_is_standard_tar_zstd(dump_dir: Path, tmp_path: Path) -> None:
    # A person must be able to unpack it without our code.
    dest = tmp_path / "out.tar.zst"
    create_archive(dump_dir, dest)
    listing = subprocess.run(["tar", "--zstd", "-tf", str(dest)], capture_output=True, text=True)
    if listing.returncode != 0 and "zstd" in listing.stderr:
        pytest.skip("tar without zstd support on this machine")
    assert "rpger/monsters.bson" in listing.stdout.split()


def test_level_changes_size_and_same_input_same_content(dump_dir: Path, tmp_path: Path) -> None:
    (dump_dir / "big.txt").write_text("lorem ipsum dolor " * 50_000)
    fast = create_archive(dump_dir, tmp_path / "a.tar.zst", level=1)
    small = create_archive(dump_dir, tmp_path / "b.tar.zst", level=19)
    assert small.bytes < fast.bytes
    # Same files, same level -> byte-identical archive (an off-site re-upload is skipped).
    again = create_archive(dump_dir, tmp_path / "c.tar.zst", level=1)
    assert again == fast


def test_refuses_to_overwrite(dump_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.tar.zst"
    dest.write_bytes(b"precious")
    with pytest.raises(ArchiveError, match="overwrite"):
        create_archive(dump_dir, dest)
    assert dest.read_bytes() == b"precious"


def test_failure_removes_partial_file(dump_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fail after the first member is already compressed into the file.
    import rpger_ops.archive as archive_mod

    seen: list[str] = []
    real = archive_mod._normalised

    def failing(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        seen.append(info.name)
        if len(seen) > 2:
            raise OSError("disk went away")
        return real(info)

    monkeypatch.setattr(archive_mod, "_normalised", failing)
    dest = tmp_path / "out.tar.zst"
    with pytest.raises(OSError, match="disk went away"):
        create_archive(dump_dir, dest)
    assert len(seen) == 3
    assert not dest.exists()


def test_corrupted_archive_is_rejected(dump_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.tar.zst"
    info = create_archive(dump_dir, dest)
    data = bytearray(dest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dest.write_bytes(bytes(data))
    assert sha256_file(dest) != info.sha256
    with pytest.raises(ArchiveError, match="not a readable"):
        extract_archive(dest, tmp_path / "x")


def test_truncated_archive_is_rejected(dump_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out.tar.zst"
    create_archive(dump_dir, dest)
    dest.write_bytes(dest.read_bytes()[:-40])
    with pytest.raises(ArchiveError):
        extract_archive(dest, tmp_path / "x")


def _evil_archive(path: Path, member: tarfile.TarInfo, payload: bytes = b"pwned") -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        member.size = len(payload) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))


@pytest.mark.parametrize("name", ["../escape.txt", "/tmp/rpger-abs-escape.txt", "a/../../escape.txt"])
def test_path_traversal_is_refused(tmp_path: Path, name: str) -> None:
    evil = tmp_path / "evil.tar.zst"
    _evil_archive(evil, tarfile.TarInfo(name))
    with pytest.raises(ArchiveError, match="unsafe"):
        extract_archive(evil, tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/rpger-abs-escape.txt").exists()


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.zst"
    link = tarfile.TarInfo("link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    _evil_archive(evil, link)
    with pytest.raises(ArchiveError, match="unsafe"):
        extract_archive(evil, tmp_path / "dest")
    assert not (tmp_path / "dest" / "link").exists()


def test_extract_works_without_tarfile_data_filter(tmp_path, monkeypatch):
    """Python < 3.11.4 (Debian 12's 3.11.2) has no extraction filters: same result, same guards."""
    from rpger_ops import archive

    monkeypatch.setattr(archive, "_HAS_DATA_FILTER", False)
    src = tmp_path / "src" / "rpger"
    src.mkdir(parents=True)
    (src / "monsters.bson").write_bytes(b"\x05\x00\x00\x00\x00")
    archive.create_archive(tmp_path / "src", tmp_path / "a.tar.zst", 3)
    names = archive.extract_archive(tmp_path / "a.tar.zst", tmp_path / "out")
    assert "rpger/monsters.bson" in names
    assert (tmp_path / "out" / "rpger" / "monsters.bson").read_bytes() == b"\x05\x00\x00\x00\x00"
