"""One dynamic partition per backup set; the key is the set id (UTC timestamp)."""

import dagster as dg

BACKUP_SETS_PARTITION = "backup_sets"

backup_sets = dg.DynamicPartitionsDefinition(name=BACKUP_SETS_PARTITION)
