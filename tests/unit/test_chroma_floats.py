"""chroma_floats: float metadata that Chroma's JSON parser stores exactly as dumped."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from rpger_ops.engines.chroma_floats import chroma_stores, send_form, send_forms, serde_parse


def test_the_emulation_matches_what_the_server_did() -> None:
    # Observed on Chroma 1.5.9 (sent -> stored; re-sending the stored value moves it again).
    assert chroma_stores(6.537137711885062e-60) == 6.537137711885063e-60
    assert chroma_stores(3.532741625542322e-13) == 3.532741625542323e-13
    assert chroma_stores(3.532741625542323e-13) == 3.5327416255423233e-13
    assert chroma_stores(6.592148136198244e+74) == 6.592148136198242e+74
    assert chroma_stores(6.592148136198242e+74) == 6.59214813619824e+74
    assert chroma_stores(3.532741625542322e-13, passes=1) == 3.5327416255423223e-13  # collection metadata
    assert serde_parse("0.1") == 0.1 and serde_parse("-2.5e3") == -2500.0 and serde_parse("1e-320") == 1e-320
    assert math.copysign(1.0, serde_parse("-0.0")) == -1.0


@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1, 2]))
def test_every_stored_value_has_a_send_form_that_stores_it_again(x: float, passes: int) -> None:
    stored = chroma_stores(x, passes)  # what the server keeps from a client's x
    again = chroma_stores(send_form(stored, passes), passes)
    assert again == stored and math.copysign(1.0, again) == math.copysign(1.0, stored)


def test_send_forms_walks_json_shapes_and_keeps_other_values() -> None:
    stored = 3.532741625542323e-13
    out = send_forms({"a": [stored, 1, "x", True], "b": {"c": stored}, "d": None})
    assert out["a"][0] != stored and chroma_stores(out["a"][0]) == stored and chroma_stores(out["b"]["c"]) == stored
    assert out["a"][1:] == [1, "x", True] and out["d"] is None
    assert isinstance(out["a"][1], int) and out["a"][3] is True
