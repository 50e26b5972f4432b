"""The cosine preimage search, against the emulated Chroma round trip (the
integration suite checks the emulation against the real server)."""

from __future__ import annotations

import numpy as np
import pytest

from rpger_ops.engines.chroma_cosine import cosine_preimage, cosine_round_trip


@pytest.mark.parametrize(("dim", "scale"), [(1536, 1.0), (384, 0.05), (8, 1.0)])
def test_preimage_round_trips_to_exactly_the_stored_values(dim: int, scale: float) -> None:
    rng = np.random.default_rng(dim)
    stored = cosine_round_trip((rng.standard_normal((300, dim)) * scale).astype(np.float32))
    assert not np.array_equal(cosine_round_trip(stored), stored)  # the naive re-add drifts
    x, unresolved = cosine_preimage(stored)
    exact = np.all(cosine_round_trip(x).view(np.int32) == stored.view(np.int32), axis=1)
    assert int((~exact).sum()) == unresolved
    assert unresolved <= 3  # a handful at most; the caller reports them


def test_rows_that_already_round_trip_are_left_alone() -> None:
    rows = np.array([[3.0, 4.0], [0.5, 0.0]], dtype=np.float32)  # norms 5 and 0.5: exact
    x, unresolved = cosine_preimage(rows)
    assert unresolved == 0 and np.array_equal(x, rows)
    assert cosine_preimage(np.zeros((0, 4), np.float32))[1] == 0
