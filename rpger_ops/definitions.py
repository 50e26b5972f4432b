"""The code location: `defs` is the one `dagster.Definitions` (workspace.yaml loads it)."""

from __future__ import annotations

import dagster as dg

from rpger_ops.defs.backup import backup_defs
from rpger_ops.defs.health import health_defs
from rpger_ops.defs.heartbeat import heartbeat_defs
from rpger_ops.defs.live import live_defs
from rpger_ops.defs.migrate import migrate_defs
from rpger_ops.defs.monitoring import monitoring_defs
from rpger_ops.defs.resources import resource_defs
from rpger_ops.defs.retention import retention_defs

defs = dg.Definitions.merge(
    backup_defs(),
    health_defs(),
    live_defs(),
    heartbeat_defs(),
    migrate_defs(),
    monitoring_defs(),
    retention_defs(),
    dg.Definitions(resources=resource_defs()),
)
