"""Exact restore of embeddings in Chroma collections with cosine distance.

For `space: cosine` Chroma (1.x, local server) keeps each embedding as a unit
vector plus its norm and returns `(v * (1/n)) * n` in float32, where `n` is
the square root of the sequentially accumulated float32 sum of squares. That
round trip moves about a third of the values by one ulp, so re-adding what
`get` returned would not give back the same bytes, and a restored copy's
digest would never match its source.

`cosine_preimage(g)` finds, per row, an input `x` whose round trip is exactly
`g`: for a norm within a few ulps of `g`'s, every value gets the few
candidates around it that map onto it; the candidates nearest the values
usually work, and otherwise a binary search over "how many leading values
take their largest candidate" hits that norm (the float32 running sum is
monotone in every term). Rows where none is found are left as
they are and counted, so the caller can say so. l2 and ip collections store
embeddings unchanged and need none of this.
"""

from __future__ import annotations

import numpy as np

# How far (in ulps) from the observed norm, and from each value, to search.
NORM_STEPS = 8
VALUE_OFFSETS = np.arange(-4, 5, dtype=np.int32)
CHUNK_ROWS = 512


def chroma_norms(x: np.ndarray) -> np.ndarray:
    """Row norms as Chroma computes them: float32 squares summed left to right.

    `cumsum` (add.accumulate) is strictly sequential; `sum`/`add.reduce` may
    pair terms up and round differently."""
    return np.sqrt(np.cumsum(x * x, axis=1, dtype=np.float32)[:, -1])


def cosine_round_trip(x: np.ndarray) -> np.ndarray:
    """What Chroma returns for embeddings `x` added to a cosine collection."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = chroma_norms(x)
        r = np.float32(1) / n
        return np.asarray((x * r[:, None]) * n[:, None], dtype=np.float32)


def cosine_preimage(g: np.ndarray) -> tuple[np.ndarray, int]:
    """Embeddings to add so that Chroma returns exactly `g` (rows x dim, float32).

    Returns (embeddings, number of rows left unchanged for want of an exact preimage).
    Works in chunks of rows: the search holds about a dozen arrays the size of its input.
    """
    g = np.ascontiguousarray(g, dtype=np.float32)
    if g.size == 0:
        return g, 0
    parts = [_preimage_chunk(g[s:s + CHUNK_ROWS]) for s in range(0, len(g), CHUNK_ROWS)]
    return np.concatenate([x for x, _ in parts]), sum(n for _, n in parts)


def _preimage_chunk(g: np.ndarray) -> tuple[np.ndarray, int]:
    x = g.copy()
    todo = np.flatnonzero(~_rows_equal(cosine_round_trip(g), g))
    for step in [0, *(s * m for m in range(1, NORM_STEPS + 1) for s in (-1, 1))]:
        if len(todo) == 0:
            break
        found, ok = _solve_for_norm(g[todo], step)
        x[todo[ok]] = found[ok]
        todo = todo[~ok]
    return x, len(todo)


def _rows_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.all(a.view(np.int32) == b.view(np.int32), axis=1))


def _solve_for_norm(g: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Try the norm `step` ulps away from g's own: returns candidates and which rows round-trip."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        target = (chroma_norms(g).view(np.int32) + np.int32(step)).view(np.float32)
        recip = np.float32(1) / target
        gi = g.view(np.int32)
        smallest, largest, nearest = np.zeros_like(g), np.zeros_like(g), np.zeros_like(g)
        distance = np.full(g.shape, len(VALUE_OFFSETS), dtype=np.int32)
        seen = np.zeros(g.shape, dtype=bool)
        # Adding to the int32 view walks away from zero for either sign, so the
        # first hit is the smallest magnitude and the last the largest.
        for offset in VALUE_OFFSETS:
            cand = (gi + offset).view(np.float32)
            hit = ((cand * recip[:, None]) * target[:, None]) == g
            first = hit & ~seen
            smallest[first] = cand[first]
            largest[hit] = cand[hit]
            closer = hit & (abs(int(offset)) < distance)
            nearest[closer] = cand[closer]
            distance[closer] = abs(int(offset))
            seen |= hit
        feasible = np.all(seen, axis=1)
        # Most rows already round-trip with the candidates nearest to their own values.
        ok = feasible & _rows_equal(cosine_round_trip(nearest), g)
        x = nearest
        rest = np.flatnonzero(feasible & ~ok)
        if len(rest):
            found = _search_norm(smallest[rest], largest[rest], target[rest])
            solved = _rows_equal(cosine_round_trip(found), g[rest])
            x[rest[solved]] = found[solved]
            ok[rest[solved]] = True
    return x, ok


def _search_norm(smallest: np.ndarray, largest: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per row: the first t values from `largest`, the rest from `smallest`, with the
    smallest t whose norm reaches `target` (the float32 running sum is monotone in t)."""
    dim = smallest.shape[1]
    column = np.arange(dim)[None, :]
    lo = np.zeros(len(target), dtype=np.int64)
    hi = np.full(len(target), dim, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        reached = chroma_norms(np.where(column < mid[:, None], largest, smallest)) >= target
        hi = np.where(reached & (lo < hi), mid, hi)
        lo = np.where(~reached & (lo < hi), mid + 1, lo)
    return np.where(column < hi[:, None], largest, smallest).astype(np.float32)
