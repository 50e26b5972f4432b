"""Property-based MongoDB round trips (issue 11, item 5): random collections of random
documents of every BSON type the server stores -> backup -> restore into scratch ->
digests equal and raw BSON, indexes and options read back identical through pymongo.

FerretDB v1.24 (the test server) stores every BSON type except the ones in
`FERRETDB_REJECTS`; those run against a real MongoDB (RPGER_TEST_MONGODB_URI) in
`test_types_ferretdb_rejects_round_trip_on_mongodb`, and are skipped with the reason otherwise.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.raw_bson import RawBSONDocument
from hypothesis import given
from hypothesis import strategies as st
from property_support import ROUND_TRIP, backed_up
from readback import mongo_state

from rpger_ops.connect import mongo_client
from rpger_ops.engines.mongo import MongoEngine
from rpger_ops.settings import Settings

# What FerretDB v1.24.2 (SQLite) does not store, found by inserting each and reading it back
# as raw BSON: an error, or the connection dropped (marked "drops").
FERRETDB_REJECTS = {
    "Decimal128": "drops the connection",
    "double NaN": "drops the connection",
    "double ±Infinity": "refused: infinity values are not allowed",
    "undefined (deprecated)": "drops the connection",
    "DBPointer (deprecated)": "drops the connection",
    "symbol (deprecated)": "drops the connection",
    "JavaScript code": "drops the connection",
    "JavaScript code with scope": "drops the connection",
    "MinKey": "drops the connection",
    "MaxKey": "drops the connection",
    "array directly inside an array": "refused: nested arrays are not supported",
    "field names starting with '$' (so DBRef) or containing '.'": "refused",
    "top-level field names with '\"' or '\\'": "refused: SQL logic error: malformed JSON",
    "top-level field names with a control character": "stored, then every find on the collection fails",
}
# And one it stores differently: a double -0.0 comes back as 0.0 (the round trip keeps what it stored).

FIELD = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00.$"), max_size=8)
# FerretDB stores those names in subdocuments, not at the top level (see FERRETDB_REJECTS).
TOP_FIELD = st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters='.$"\\'), max_size=8)
INT32 = st.integers(-(2**31), 2**31 - 1)
BINARY_SUBTYPES = (0, 1, 2, 5, 6, 7, 8, 9, 0x80)


def _binary() -> st.SearchStrategy[Binary]:
    uuids = st.builds(lambda u, sub: Binary(u.bytes, sub), st.uuids(), st.sampled_from([3, 4]))
    return st.one_of(uuids, st.builds(Binary, st.binary(max_size=24), st.sampled_from(BINARY_SUBTYPES)))


# Every BSON type FerretDB stores.
STORED_SCALARS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),                      # double
    st.text(st.characters(exclude_categories=("Cs",)), max_size=24),      # string (NUL included)
    _binary(),                                                              # binary, every subtype
    st.binary(min_size=12, max_size=12).map(ObjectId),                     # objectId
    st.booleans(),                                                          # bool
    st.integers(-(2**63), 2**63 - 1).map(DatetimeMS),                       # date, the full int64 range
    st.none(),                                                              # null
    st.builds(Regex, st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=10),
              st.sampled_from(["", "i", "ims", "imsux"])),                # regex
    INT32,                                                                  # int32
    st.builds(Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),  # timestamp
    st.integers(-(2**63), 2**63 - 1).map(Int64),                           # int64
)


def values(scalars: st.SearchStrategy[Any], nested_arrays: bool) -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        items = children if nested_arrays else children.filter(lambda v: not isinstance(v, list))
        return st.one_of(st.lists(items, max_size=4), st.dictionaries(FIELD, children, max_size=4))
    return st.recursive(scalars, extend, max_leaves=12)


ID = st.one_of(st.binary(min_size=12, max_size=12).map(ObjectId), INT32, st.text(max_size=8),
               st.dictionaries(FIELD, INT32, max_size=2))


def documents(scalars: st.SearchStrategy[Any], nested_arrays: bool = False) -> st.SearchStrategy[list[dict[str, Any]]]:
    from bson import encode

    top = FIELD if nested_arrays else TOP_FIELD  # nested_arrays: the real-MongoDB strategy
    doc = st.builds(lambda _id, body: {"_id": _id, **body}, ID,
                    st.dictionaries(top.filter(lambda k: k != "_id"), values(scalars, nested_arrays), max_size=5))
    return st.lists(doc, max_size=6, unique_by=lambda d: encode({"k": d["_id"]}))


COLLECTION = st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True).filter(lambda n: not n.startswith("system"))
INDEX = st.tuples(st.lists(st.from_regex(r"[a-z]{1,4}", fullmatch=True), min_size=1, max_size=2, unique=True),
                  st.sampled_from([1, -1]))


def keyspaces(scalars: st.SearchStrategy[Any], nested_arrays: bool = False) -> st.SearchStrategy[Any]:
    return st.dictionaries(COLLECTION, st.tuples(documents(scalars, nested_arrays), st.lists(INDEX, max_size=2)),
                           min_size=1, max_size=3)


def round_trip(settings: Settings, content: dict[str, Any]) -> None:
    client = mongo_client(settings)
    name = f"prop_{uuid.uuid4().hex[:12]}"
    try:
        db = client[name]
        for coll, (docs, indexes) in content.items():
            db.create_collection(coll)
            if docs:
                db[coll].insert_many(docs, ordered=True)
            for fields, direction in indexes:
                db[coll].create_index([(f, direction) for f in fields])
        source_settings = settings.model_copy(update={"mongodb_database": name})
        engine = MongoEngine(source_settings)
        try:
            source = mongo_state(source_settings)
            source_digest = engine.digest()
            with backed_up(engine) as dump, engine.scratch() as scratch:
                scratch.restore(dump)
                assert scratch.digest() == source_digest
                assert mongo_state(scratch.settings) == source
            assert sum(len(c["documents"]) for c in source.values()) == sum(len(d) for d, _ in content.values())
        finally:
            engine.close()
    finally:
        client.drop_database(name)
        client.close()


def is_ferretdb(settings: Settings) -> bool:
    client = mongo_client(settings)
    try:
        return "ferretdbVersion" in client.admin.command("buildInfo")
    finally:
        client.close()


@ROUND_TRIP
@given(content=keyspaces(STORED_SCALARS))
def test_every_stored_bson_type_round_trips(settings: Settings, content: dict[str, Any]) -> None:
    round_trip(settings, content)


def _legacy_types() -> RawBSONDocument:
    """A subdocument of the deprecated types pymongo won't encode itself: undefined,
    DBPointer, symbol (built as raw BSON)."""
    body = (b"\x06u\x00"
            + b"\x0cp\x00" + struct.pack("<i", 5) + b"coll\x00" + ObjectId(b"012345678901").binary
            + b"\x0es\x00" + struct.pack("<i", 4) + b"sym\x00")
    return RawBSONDocument(struct.pack("<i", len(body) + 5) + body + b"\x00")


REJECTED_SCALARS = st.one_of(
    STORED_SCALARS,
    st.decimals(allow_nan=True, allow_infinity=True).map(lambda d: Decimal128(str(d))),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), MinKey(), MaxKey()]),
    st.builds(Code, st.text(max_size=12)),
    st.builds(Code, st.text(max_size=12), st.dictionaries(FIELD, INT32, max_size=2)),
    st.builds(DBRef, COLLECTION, st.binary(min_size=12, max_size=12).map(ObjectId)),
    st.just(_legacy_types()),
)


@ROUND_TRIP
@given(content=keyspaces(REJECTED_SCALARS, nested_arrays=True))
def test_types_ferretdb_rejects_round_trip_on_mongodb(settings: Settings, content: dict[str, Any]) -> None:
    if is_ferretdb(settings):
        pytest.skip("needs a real MongoDB (RPGER_TEST_MONGODB_URI): FerretDB v1 does not store "
                    + "; ".join(f"{t} ({why})" for t, why in FERRETDB_REJECTS.items()))
    round_trip(settings, content)
