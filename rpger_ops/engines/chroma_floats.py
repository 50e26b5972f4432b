"""Exact restore of float metadata through Chroma's JSON parser.

Chroma's server reads JSON numbers with serde_json's default parser (without its
`float_roundtrip` feature): the digits go into a u64, which is converted to f64 and
then multiplied or divided once by a power of ten. With 17 significant digits (any
float that isn't short) or an exponent past 22 that is two roundings, so a value can
move by an ulp. A record's metadata float goes through that parser twice on its way to
storage (the request, then the server's own JSON of it, shortest form, read again), a
collection's metadata and configuration once; so the stored value can sit a few ulps
from the one sent — and re-sending what `get`
returned would not store the same value again. Found by the property tests: a dumped
6.537137711885062e-60 came back as 6.537137711885063e-60; about one random() float in
ten moves. Measured against a 1.5.9 server: `chroma_stores` predicts what it keeps.

`send_form(x)` returns a float that Chroma stores as exactly `x` (`x` itself when that
works, else the nearest neighbour that does), for values Chroma stored in the first
place; `serde_parse` is the parser's arithmetic.
"""

from __future__ import annotations

import math
from typing import Any

# How many ulps away from the value to look for one that is stored as it.
MAX_STEPS = 16
# Passes through the parser between the request and storage.
RECORD_PASSES = 2
COLLECTION_PASSES = 1


def serde_parse(text: str) -> float:
    """What serde_json (default features) makes of a JSON number with a fraction or exponent."""
    negative = text.startswith("-")
    body = text[1:] if negative else text
    mantissa, _, exp = body.lower().partition("e")
    integer, _, fraction = mantissa.partition(".")
    significand = int(integer + fraction)
    if significand >= 1 << 64:  # never for the <= 17 digits orjson writes; serde drops the rest
        raise ValueError(f"too many digits for this emulation: {text!r}")
    exponent = int(exp or 0) - len(fraction)
    f = float(significand)  # u64 -> f64: round to nearest, as Rust's `as f64`
    while True:
        if abs(exponent) <= 308:
            power = float(f"1e{abs(exponent)}")  # serde's POW10 table: correctly rounded literals
            f = f * power if exponent >= 0 else f / power
            break
        if f == 0.0:
            break
        if exponent >= 0:
            raise OverflowError(text)
        f /= 1e308
        exponent += 308
    return -f if negative else f


def _json(x: float) -> str:
    import orjson

    return orjson.dumps(x).decode()


def _same(a: float, b: float) -> bool:
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def chroma_stores(x: float, passes: int = RECORD_PASSES) -> float:
    """The value Chroma keeps when a client sends `x` (`passes` through the parser)."""
    for _ in range(passes):
        if not math.isfinite(x):
            return x
        x = serde_parse(_json(x))
    return x


def send_form(x: float, passes: int = RECORD_PASSES) -> float:
    """A float that Chroma stores as exactly `x` (`x` when no neighbour within MAX_STEPS is)."""
    if not math.isfinite(x) or x == 0.0 or _same(chroma_stores(x, passes), x):
        return x
    below = above = x
    for _ in range(MAX_STEPS):
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        for y in (below, above):
            if math.isfinite(y) and _same(chroma_stores(y, passes), x):
                return y
    return x


def send_forms(value: Any, passes: int = RECORD_PASSES) -> Any:
    """`value` (JSON-shaped: dicts, lists, scalars) with every float replaced by its send form."""
    if isinstance(value, float):
        return send_form(value, passes)
    if isinstance(value, dict):
        return {k: send_forms(v, passes) for k, v in value.items()}
    if isinstance(value, list):
        return [send_forms(v, passes) for v in value]
    return value
