"""docs/runbook.md stays true: its `rpger-ops` commands, and its by-hand Redis and
Chroma procedures, are run against real servers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from restore_support import digests, settings_env, wipe

from rpger_ops import cli, devservers, migrate, testdata
from rpger_ops.catalog import Catalog
from rpger_ops.connect import chroma_client
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.settings import Settings

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook.md"
SET_ID = re.compile(r"^\d{8}T\d{6}Z$")


def fenced_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```", text, flags=re.S | re.M)


def runbook_commands() -> list[str]:
    commands = []
    for block in fenced_blocks(RUNBOOK.read_text(), "console"):
        commands += [line[2:].strip() for line in block.splitlines() if line.startswith("$ ")]
    return commands


def block_after(heading: str, lang: str) -> str:
    text = RUNBOOK.read_text()
    return fenced_blocks(text[text.index(heading):], lang)[0]


def test_runbook_documents_every_operator_command() -> None:
    commands = runbook_commands()
    verbs = {c.split()[1] for c in commands}
    assert all(c.startswith("rpger-ops ") for c in commands)
    assert {"backup", "sets", "verify", "restore", "preseed"} <= verbs
    assert any("--deep" in c for c in commands) and any("--source offsite" in c for c in commands)
    assert any("--db" in c and "<SET_ID>" in c for c in commands)


def test_runbook_commands_work_in_order(settings_s3: Settings, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in settings_env(settings_s3).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(settings_s3.backup_dir.parent)  # no stray .env is read
    testdata.load_all(settings_s3, scale=20)
    migrate.apply_pending(settings_s3)  # a live stack is migrated: restores then have nothing pending
    set_id = ""
    for command in runbook_commands():
        if "<SET_ID>" in command:
            assert set_id, f"{command!r} needs a set, but no backup ran before it"
            command = command.replace("<SET_ID>", set_id)
        argv = command.split()[1:]
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"`{command}` exited {code}:\n{out}\n{err}"
        if argv[0] == "backup":
            set_id = out.strip().splitlines()[-1]
            assert SET_ID.match(set_id), out
        if argv[0] == "sets":
            assert set_id in out and "verified" in out and "local+offsite" in out
    # The walk ended restored from the off-site copy of the set it backed up.
    manifest = Catalog(settings_s3.backup_dir).read(set_id)
    assert digests(settings_s3) == {db: manifest["databases"][db]["source_digest"] for db in ENGINE_NAMES}


def test_restore_without_force_exits_3_and_names_the_data(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    testdata.load_redis(settings, scale=20)
    assert cli.main(["backup", "--db", "redis"]) == 0
    capsys.readouterr()
    assert cli.main(["restore", "--db", "redis"]) == 3
    err = capsys.readouterr().err
    assert "refused" in err and "redis holds" in err and "--force" in err
    for bad_args in (["--db", "postgres"], ["--set", "yesterday"], ["--source", "tape"]):
        with pytest.raises(SystemExit) as bad:
            cli.main(["restore", *bad_args])
        assert bad.value.code == 2


def _backed_up(settings: Settings) -> tuple[str, Path]:
    testdata.load_all(settings, scale=20)
    from rpger_ops.backup import take_backup_set

    set_id = take_backup_set(settings, kind="manual", offsite=False)
    return set_id, Catalog(settings.backup_dir).set_dir(set_id)


def test_by_hand_redis_procedure(settings: Settings, tmp_path: Path, redis_factory: Any,
                                 mongo_endpoint: Any, chroma_endpoint: Any) -> None:
    set_id, set_dir = _backed_up(settings)
    live = redis_factory()
    target = make_settings(tmp_path, mongo_endpoint, live, chroma_endpoint)
    secret = tmp_path / "redis_password"
    secret.write_text(live.secrets["password"])
    script = (block_after("### Redis", "sh")
              .replace("/tmp/restore", str(tmp_path / "manual"))
              .replace("6390", str(devservers.free_port())))
    env = {"PATH": "/usr/bin:/bin", "LIVE_HOST": live.host, "LIVE_PORT": str(live.port),
           "REDIS_PASSWORD_FILE": str(secret)}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=set_dir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = Catalog(settings.backup_dir).read(set_id)
    assert digests(target, ["redis"]) == {"redis": manifest["databases"]["redis"]["source_digest"]}


def test_by_hand_chroma_procedure(settings: Settings, tmp_path: Path) -> None:
    set_id, set_dir = _backed_up(settings)
    src = tmp_path / "chroma"
    src.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(set_dir / "chroma.tar.zst"), "-C", str(src)],
                   check=True, capture_output=True)
    wipe(settings, ["chroma"])
    code = block_after("### Chroma", "python")
    code = code.replace('"/tmp/restore/chroma"', repr(str(src)))
    code = re.sub(r"client = chromadb\.HttpClient\(.*\)", "client = make_client()", code)
    exec(compile(code, "runbook-chroma", "exec"), {"make_client": lambda: chroma_client(settings)})
    manifest = Catalog(settings.backup_dir).read(set_id)
    client = chroma_client(settings)
    counts = {c.name: c.count() for c in client.list_collections()}
    assert counts == manifest["databases"]["chroma"]["counts"]
    got = client.get_collection("monsters").get(ids=["monster_3_0"], include=["metadatas", "documents"])
    assert got["metadatas"][0]["monster_id"] == "monster-3" and "monsters document 3" in got["documents"][0]
