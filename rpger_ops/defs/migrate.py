"""The `migrate` job: status, plan, up or down, as one op over `rpger_ops.migrate`."""

from typing import Any, Literal, Optional

import dagster as dg

from rpger_ops import migrate
from rpger_ops.defs.resources import StackResource
from rpger_ops.engines.base import ENGINE_NAMES, EngineError


class MigrateConfig(dg.Config):  # type: ignore[misc]
    action: Literal["status", "plan", "up", "down"] = "status"
    target: Optional[int] = None  # noqa: UP045 -- Dagster's config schema reads Optional
    databases: list[str] = list(ENGINE_NAMES)  # each database has its own ledger


@dg.op(description="Schema migrations across MongoDB, Redis and Chroma (one migrator at a time).",
       tags={"dagster/concurrency_key": "migrate"})
def run_migrations(context: dg.OpExecutionContext, config: MigrateConfig, stack: StackResource) -> dict[str, Any]:
    settings = stack.settings()

    def progress(message: str, done: int, total: int | None) -> None:
        context.log.info(f"{message} [{done}/{total}]" if total else message)

    try:
        if config.action == "status":
            st = migrate.status(settings, dbs=config.databases)
            for line in st.lines():
                context.log.info(line)
            context.add_output_metadata({"current": st.current, "latest": st.latest,
                                         "pending": [m.version for m in st.pending], "problems": st.problems()})
            if not st.ok:
                raise dg.Failure(description="; ".join(st.problems()))
            return st.as_dict()
        if config.action == "plan":
            steps = migrate.plan(settings, config.target, dbs=config.databases)
            plan = [f"{s.direction} {s.version:04d} {s.name} {s.db}" for s in steps]
            for line in plan or ["nothing to do"]:
                context.log.info(line)
            context.add_output_metadata({"steps": plan})
            return {"steps": plan}
        report = migrate.migrate(settings, config.action, config.target, progress=progress, dbs=config.databases)
    except (migrate.MigrateError, EngineError) as exc:
        raise dg.Failure(description=str(exc)) from None
    for line in report.lines():
        context.log.info(line)
    context.add_output_metadata({"applied": report.applied, "from_version": report.from_version,
                                 "to_version": report.to_version, "notes": report.notes,
                                 "seconds": report.seconds})
    return {"applied": report.applied, "to_version": report.to_version, "notes": report.notes}


@dg.job(name="migrate", description="Schema migrations: config action status | plan | up | down, optional target version.")
def migrate_job() -> None:
    run_migrations()


def migrate_defs() -> dg.Definitions:
    return dg.Definitions(jobs=[migrate_job])
