"""Reading Chroma dump files in bounded batches (engines/chroma.record_batches)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rpger_ops.engines.chroma import _arrow_schema, _page_from_batch, read_batch_rows, record_batches

DIM = 8


def _table(start: int, n: int) -> pa.Table:
    flat = pa.array(np.arange(start * DIM, (start + n) * DIM, dtype="<f4"), type=pa.float32())
    return pa.Table.from_arrays([
        pa.array([f"id-{i}" for i in range(start, start + n)], type=pa.string()),
        pa.FixedSizeListArray.from_arrays(flat, DIM),
        pa.array([None if i % 3 else f"doc {i}" for i in range(start, start + n)], type=pa.string()),
        pa.array([None] * n, type=pa.string()),
        pa.array([None] * n, type=pa.string()),
    ], schema=_arrow_schema(DIM))


@pytest.mark.parametrize("row_group_rows", [7, 50, 1000])
def test_every_row_comes_back_in_order_and_no_batch_is_larger_than_asked(tmp_path: Path, row_group_rows: int) -> None:
    path = tmp_path / "c.parquet"
    with pq.ParquetWriter(path, _arrow_schema(DIM)) as writer:  # a row group per write, as our dump does
        for start in range(0, 1000, row_group_rows):
            writer.write_table(_table(start, min(row_group_rows, 1000 - start)), row_group_size=row_group_rows)
    batches = list(record_batches(pq.ParquetFile(path), max_rows=64))
    assert all(0 < b.num_rows <= 64 for b in batches)
    pages = [_page_from_batch(b) for b in batches]
    assert [i for p in pages for i in p.ids] == [f"id-{i}" for i in range(1000)]
    vectors = np.concatenate([p.embeddings for p in pages])
    assert vectors.shape == (1000, DIM)
    assert np.array_equal(vectors.reshape(-1), np.arange(1000 * DIM, dtype="<f4"))
    assert [d for p in pages for d in p.documents][:4] == ["doc 0", None, None, "doc 3"]


def test_batch_rows_follow_the_dimension() -> None:
    assert read_batch_rows(1536) == 325  # a `get` page's worth of floats
    assert read_batch_rows(None) == 4096 == read_batch_rows(3)
    assert read_batch_rows(10**7) == 1
