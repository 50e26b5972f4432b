"""Shared pieces of the property-based round trips (test_property_*.py).

Each example: make random content on the real server, back it up the way a backup set
does (engine dump -> tar+zstd archive -> extract), restore into a scratch target, then
require (1) the digests to agree and (2) the content read back through the plain client
library to be identical. Reproducing a failure: the failure report names the seed
(`--hypothesis-seed=N`, see tests/conftest.py) and a `@reproduce_failure` blob.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from rpger_ops.archive import create_archive, extract_archive

# At least 200 per engine in CI (issue 11); RPGER_PROPERTY_EXAMPLES=N for more or fewer.
EXAMPLES = int(os.environ.get("RPGER_PROPERTY_EXAMPLES", "200"))

ROUND_TRIP = settings(
    max_examples=EXAMPLES,
    deadline=None,  # real servers: an example takes what it takes
    database=None,  # a run is reproduced by its seed alone
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@contextmanager
def backed_up(engine: Any) -> Iterator[Path]:
    """The engine's dump, archived and extracted again as a restore would see it."""
    work = Path(tempfile.mkdtemp(prefix="rpger-prop-"))
    try:
        dump, extracted = work / "dump", work / "extracted"
        dump.mkdir()
        engine.dump(dump)
        create_archive(dump, work / "db.tar.zst", level=1)
        extracted.mkdir()
        extract_archive(work / "db.tar.zst", extracted)
        yield extracted
    finally:
        shutil.rmtree(work, ignore_errors=True)
