"""The backup pipeline and its Dagster wiring without servers: the `pipeline`
resource is the seam, and here it is built on the in-memory engine and an
in-memory off-site store (the real-server runs are tests/integration/
test_backup_e2e.py and test_backup_faults.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest

from rpger_ops.definitions import defs
from rpger_ops.defs.partitions import BACKUP_SETS_PARTITION
from rpger_ops.defs.resources import PipelineResource
from rpger_ops.engines.base import ENGINE_NAMES
from rpger_ops.pipeline import BackupPipeline
from rpger_ops.sets import EntryStatus, SetKind
from rpger_ops.settings import load_settings
from rpger_ops.store import StoreError
from rpger_ops.store.memory import MemoryStore
from tests.memory_engine import MemoryEngine, MemoryServer

OFFSITE: dict[str, MemoryStore] = {}


def _pipeline(root: str, stack: str) -> BackupPipeline:
    settings = load_settings(_env_file=None, RPGER_BACKUP_DIR=root, RPGER_STACK_ID="wiring")
    return BackupPipeline(settings, offsite=OFFSITE.setdefault(stack, MemoryStore("offsite")),
                          engine_factory=lambda db, s: MemoryEngine(f"{stack}-{db}", db))


class FakePipelineResource(PipelineResource):
    root: str
    stack: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._pipeline = _pipeline(self.root, self.stack)


@pytest.fixture
def stack(tmp_path: Path) -> str:
    name = f"wiring-{uuid.uuid4().hex[:6]}"
    for db in ENGINE_NAMES:
        server = MemoryServer.get(f"{name}-{db}")
        server.data = {f"{db}-a": {str(i): f"v{i}" for i in range(5)}, f"{db}-b": {"x": "y"}}
    return name


def _run(tmp_path: Path, stack: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("backup_all")
    return job.execute_in_process(instance=instance, raise_on_error=False, resources={
        "pipeline": FakePipelineResource(root=str(tmp_path / "backups"), stack=stack)})


def test_backup_all_is_one_run_recording_every_chain_of_the_new_set(tmp_path: Path, stack: str) -> None:
    with dg.instance_for_test() as instance:
        result = _run(tmp_path, stack, instance)
        assert result.success
        set_id = result.output_for_node("close_set")
        assert set_id in instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)
        assert [r.run_id for r in instance.get_runs()] == [result.run_id]  # nothing nested
        for db in ENGINE_NAMES:
            for step in ("dump", "archive", "offsite"):
                event = instance.get_latest_materialization_event(dg.AssetKey([db, step]))
                assert event is not None and event.run_id == result.run_id
                assert event.asset_materialization.partition == set_id  # type: ignore[union-attr]
        checks = {(e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name,
                   e.asset_check_evaluation_data.partition): e.asset_check_evaluation_data.passed
                  for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        expected = {(f"{db}/archive", name, set_id) for db in ENGINE_NAMES
                    for name in ("sha256", "readable", "counts", "not_shrunk")}
        expected |= {(f"{db}/offsite", "offsite_copy", set_id) for db in ENGINE_NAMES}
        assert set(checks) == expected and all(checks.values())
    remote = OFFSITE[stack].read(set_id)
    assert remote.complete and remote.kind == SetKind.MANUAL


def test_a_database_dying_fails_the_run_and_the_set_is_partial_everywhere(tmp_path: Path, stack: str) -> None:
    MemoryServer.get(f"{stack}-redis").die_after = 1
    with dg.instance_for_test() as instance:
        result = _run(tmp_path, stack, instance)
        assert not result.success
        failed = {e.step_key for e in result.all_events if e.is_step_failure}
        assert failed == {"back_up_redis"}
        (set_id,) = instance.get_dynamic_partitions(BACKUP_SETS_PARTITION)
    local = _pipeline(str(tmp_path / "backups"), stack).read(set_id)
    assert local.databases["redis"].status == EntryStatus.FAILED and not local.complete
    # The healthy databases were still backed up and copied; off-site the set is visibly partial.
    remote = OFFSITE[stack].read(set_id)
    assert remote.usable_for(["mongo", "chroma"]) and not remote.complete


def test_take_set_keeps_a_complete_local_set_when_offsite_fails(tmp_path: Path, stack: str) -> None:
    pipeline = _pipeline(str(tmp_path / "backups"), stack)
    OFFSITE[stack].fail_next = StoreError("off-site memory store: down")
    outcome = pipeline.take_set(SetKind.MANUAL, ENGINE_NAMES)
    assert outcome.complete and not outcome.ok
    # One failure (the chains run side by side: whichever uploaded first), the others still attempted.
    assert len(outcome.offsite_failures) == 1
    failed = next(iter(outcome.offsite_failures))
    others = [db for db in ENGINE_NAMES if db != failed]
    assert outcome.backup_set.databases[failed].offsite_error
    assert OFFSITE[stack].read(outcome.set_id).usable_for(others)
    # The re-upload (rpger-ops offsite) completes it.
    pipeline.upload(outcome.set_id, failed)
    assert OFFSITE[stack].read(outcome.set_id).complete
    assert pipeline.read(outcome.set_id).databases[failed].offsite_error is None
