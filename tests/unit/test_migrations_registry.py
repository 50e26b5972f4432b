"""The migration registry: ordering, required attributes, checksums (no servers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from rpger_ops.migrations import Registry, RegistryError
from rpger_ops.migrations import registry as shipped
from rpger_ops.migrations.base import Migration, module_checksum


def write_module(tmp_path: Path, name: str, body: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    spec = importlib.util.spec_from_file_location(f"unit_migrations.{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def migration(tmp_path: Path, version: int, name: str = "x", down: bool = True) -> ModuleType:
    body = f"VERSION = {version}\nNAME = {name!r}\n\ndef up(ctx):\n    return None\n"
    if down:
        body += "\ndef down(ctx):\n    return None\n"
    return write_module(tmp_path, f"m{version:04d}_{name}", body)


def test_shipped_registry_starts_at_the_rpger_schema():
    reg = shipped.default_registry()
    assert reg.versions()[0] == 1 and reg.get(1).name == "rpger_schema"
    assert shipped.latest_version() == reg.latest_version() >= 1
    first = reg.get(1)
    assert first.databases == ("mongo", "redis", "chroma") and not first.combined
    assert all(step.down is not None for step in first.steps.values())
    # 0.1 shipped the same schema as one combined migration: ledgers with its checksum still count.
    assert first.accepts("475c7c420ba4bc072dffd7bfc5bf73c73507bce82bea13f12e98b713e1463d9f")
    assert first.accepts(first.checksum) and not first.accepts("0" * 64)


def test_versions_must_be_unique_and_ascending(tmp_path):
    one, two = migration(tmp_path, 1, "a"), migration(tmp_path, 2, "b")
    assert Registry([one, two]).latest_version() == 2
    with pytest.raises(RegistryError, match="unique and ascending"):
        Registry([two, one])
    with pytest.raises(RegistryError, match="unique and ascending"):
        Registry([one, migration(tmp_path, 1, "again")])
    assert Registry([]).latest_version() == 0


def test_a_migration_needs_version_name_and_steps(tmp_path):
    broken = write_module(tmp_path, "m0001_broken", "VERSION = 1\nNAME = 'broken'\n")
    with pytest.raises(RegistryError, match="needs up_<db>.ctx. steps"):
        Migration.from_module(broken)
    nameless = write_module(tmp_path, "m0001_nameless", "VERSION = 1\ndef up_redis(ctx):\n    pass\n")
    with pytest.raises(RegistryError, match="needs VERSION and NAME"):
        Migration.from_module(nameless)
    wrong = write_module(tmp_path, "m0001_wrong", "VERSION = 1\nNAME = 'w'\nDATABASES = ('postgres',)\n"
                                                  "def up(ctx):\n    pass\n")
    with pytest.raises(RegistryError, match="DATABASES must name"):
        Migration.from_module(wrong)
    zero = write_module(tmp_path, "m0000_zero", "VERSION = 0\nNAME = 'zero'\ndef up(ctx):\n    pass\n")
    with pytest.raises(RegistryError, match="positive int"):
        Migration.from_module(zero)


def test_checksum_is_the_source_file_and_changes_with_it(tmp_path):
    module = migration(tmp_path, 1, "a", down=False)
    m = Migration.from_module(module)
    assert m.combined and m.databases == ("mongo", "redis", "chroma")
    assert all(step.down is None for step in m.steps.values()) and m.label == "0001 a"
    before = module_checksum(module)
    assert m.checksum == before and len(before) == 64
    path = Path(module.__file__)
    # Line endings alone are not drift (a checkout with CRLF is the same migration).
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert module_checksum(module) == before
    path.write_text(path.read_text() + "# edited\n")
    assert module_checksum(module) != before


def test_steps_per_database(tmp_path):
    module = write_module(tmp_path, "m0002_split", "VERSION = 2\nNAME = 'split'\n"
                                                   "def up_mongo(ctx):\n    pass\n"
                                                   "def down_mongo(ctx):\n    pass\n"
                                                   "def up_chroma(ctx):\n    pass\n")
    m = Migration.from_module(module)
    assert not m.combined and m.databases == ("mongo", "chroma")
    assert m.steps["mongo"].down is not None and m.steps["chroma"].down is None


def test_between_selects_the_versions_to_run(tmp_path):
    reg = Registry([migration(tmp_path, v, f"m{v}") for v in (1, 2, 5)])
    assert [m.version for m in reg.between(1, 5)] == [2, 5]
    assert [m.version for m in reg.between(0, 2)] == [1, 2]
    assert reg.get(3) is None
