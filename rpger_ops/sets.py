"""The backup set, typed: the one place that says what a set is and which set to use.

A *backup set* is one point in time of the stack: for every database it was
meant to hold (`planned`), an entry recording what the dump, archive and checks
did. The same model describes a set in every store (the local catalogue, the
off-site bucket, the in-memory test store); each store's manifest describes
that store's copy, so "verified" always means "this copy was checked".

Definitions used everywhere (and nowhere else):
- an entry is *usable* when its status is `verified`;
- a set is *complete* when every planned database's entry is verified;
- a set is *usable for* databases D when it holds every database of D and each
  of them is verified;
- `latest` for D is the newest set of kind `scheduled` or `manual` usable for
  D. For the whole stack that is the newest complete set. Safety sets (taken
  before a forced restore replaced data) are never chosen automatically, only
  by explicit id.

How a database's dump is stored (`DatabaseEntry.layout`):
- `archive` (sets before 0.3, and RPGER_SET_FORMAT=1): one `<db>.tar.zst` in
  the set's folder, `sha256` its hash;
- `blobs` (the default): every file of the dump is a content-addressed blob
  shared by all sets that hold the same bytes (`files`: path -> `BlobRef`);
  `sha256` is then the *tree hash* of the entry (`rpger_ops.blobs.tree_hash`),
  which an off-site copy records too. Encrypted entries keep their plaintext
  digests only in `sealed` (age ciphertext, base64).

Manifest format 2 (this module) reads format 1 manifests as written by
rpger-ops 0.1: `source_digest` becomes `digest`, the databases a v1 set was
meant to hold are the ones it has entries for, and the set-level
`schema_version` stands for every entry's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rpger_ops.engines.base import ENGINE_NAMES, EngineName

SET_ID_FORMAT = "%Y%m%dT%H%M%SZ"
MANIFEST_FORMAT = 2


class SetIdError(ValueError):
    """A string that is not a backup set id."""


def new_set_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(SET_ID_FORMAT)


def set_time(set_id: str) -> datetime:
    """The UTC time a set id names; raises SetIdError for a malformed id."""
    try:
        parsed = datetime.strptime(set_id, SET_ID_FORMAT).replace(tzinfo=UTC)
    except (ValueError, TypeError):
        raise SetIdError(f"not a backup set id: {set_id!r} (expected like 20261128T030000Z)") from None
    return parsed


def is_set_id(value: str) -> bool:
    try:
        set_time(value)
    except SetIdError:
        return False
    return True


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class EntryStatus(StrEnum):
    DUMPING = "dumping"  # the dump is running (or its process died)
    ARCHIVED = "archived"  # the archive is written; its checks have not passed yet
    VERIFIED = "verified"  # sha256, decompress+parse and counts passed: usable
    FAILED = "failed"  # a backup step failed
    CORRUPT = "corrupt"  # was verified; a later check or a restore found the archive damaged or missing
    RESTORE_FAILED = "restore_failed"  # a scratch restore did not give back the backed-up content
    LOCAL_ONLY = "local_only"  # in an off-site manifest: verified locally, not (yet) copied to this store


UNFINISHED = frozenset({EntryStatus.DUMPING, EntryStatus.ARCHIVED})


class SetKind(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    SAFETY = "safety"  # the contents a forced restore replaced


AUTOMATIC_KINDS = frozenset({SetKind.SCHEDULED, SetKind.MANUAL})


class CheckOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    description: str


class BlobRef(BaseModel):
    """One file of a dump, stored as a blob (zstd; with encryption, age(zstd))."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str  # the address: sha256 of the plaintext, or its keyed hash when encrypted
    bytes: int  # plaintext size (the file in the dump)
    stored_bytes: int  # bytes in the store
    stored_sha256: str  # sha256 of the stored bytes: checkable without any key


class OffsiteCopy(BaseModel):
    """The local manifest's record of an entry's off-site copy."""

    model_config = ConfigDict(extra="allow")

    key: str = ""
    sha256: str = ""
    bytes: int = 0
    new_bytes: int | None = None  # blobs: bytes this copy uploaded (the rest were there already)
    etag: str = ""
    uploaded_at: str = ""
    status: Literal["verified", "corrupt"] = "verified"
    error: str | None = None


class RestoreCheck(BaseModel):
    """Deep verification: the archive restored into a scratch target."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    checked_at: str = ""
    seconds: float = 0.0
    digest: str | None = None
    expected: str | None = None
    # The server's own hash of the scratch restore (MongoDB: dbHash), proven by `digest`:
    # later restores of this set are checked against it without reading everything back.
    server_hash: str | None = None
    restored_counts: dict[str, int] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None


class DatabaseEntry(BaseModel):
    # Fields written by other versions of rpger-ops survive a rewrite.
    model_config = ConfigDict(extra="allow")

    status: EntryStatus
    error: str | None = None
    started_at: str | None = None
    dumped_at: str | None = None
    archived_at: str | None = None
    checked_at: str | None = None
    failed_at: str | None = None
    work_dir: str | None = None  # the dump folder while the archive step has not run
    counts: dict[str, int] = Field(default_factory=dict)
    source_items: int | None = None  # the server's own item count right before the dump
    digest: str | None = None  # content digest of exactly what the dump holds
    digest_version: int = 1  # the engine's digest algorithm that computed it (0.1's sets: 1)
    schema_version: int | None = None  # the data's schema version (its stack marker) at backup time
    migrations: list[dict[str, Any]] | None = None  # its migrations ledger then (None: sets before 0.2)
    server_version: str = ""
    server_kind: str = ""
    point_in_time: bool = False
    dump_seconds: float | None = None
    dump_bytes: int | None = None
    notes: list[str] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    archive: str | None = None
    archive_bytes: int | None = None
    sha256: str | None = None
    archive_seconds: float | None = None
    zstd_level: int | None = None
    layout: Literal["archive", "blobs"] = "archive"
    files: dict[str, BlobRef] = Field(default_factory=dict)  # blobs: dump file path -> blob
    new_bytes: int | None = None  # blobs: stored bytes this set wrote (the rest it shares)
    encrypted: bool = False  # blobs (and `sealed`) are age-encrypted
    blob_key_id: str | None = None  # which keyed-address key named the blobs (encrypted only)
    sealed: dict[str, str] = Field(default_factory=dict)  # name -> age ciphertext (base64) of plaintext facts
    checks: dict[str, CheckOutcome] = Field(default_factory=dict)
    restore_check: RestoreCheck | None = None
    offsite: OffsiteCopy | None = None
    offsite_error: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_format_1(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if "source_digest" in data and "digest" not in data:
                data["digest"] = data.pop("source_digest")
            if "dump_dir" in data and "work_dir" not in data:
                data["work_dir"] = data.pop("dump_dir")
            for key in ("checks", "counts", "extra"):
                if data.get(key) is None:
                    data.pop(key, None)
            if isinstance(data.get("checks"), dict):  # format 1 kept the name only as the key
                data["checks"] = {k: {"name": k, **v} if isinstance(v, dict) else v
                                  for k, v in data["checks"].items()}
            if data.get("notes") is None:
                data.pop("notes", None)
        return data

    @property
    def verified(self) -> bool:
        return self.status == EntryStatus.VERIFIED

    @property
    def items(self) -> int:
        return sum(self.counts.values())

    @property
    def blob_ids(self) -> set[str]:
        return {ref.id for ref in self.files.values()}

    @property
    def stored_bytes(self) -> int:
        """What a full copy of this entry weighs in a store (shared blobs included)."""
        if self.layout == "blobs":
            return sum(ref.stored_bytes for ref in self.files.values())
        return int(self.archive_bytes or 0)

    def problem(self) -> str:
        """Why this entry is not usable ("" when it is)."""
        if self.verified:
            return ""
        if self.status in UNFINISHED:
            return f"{self.status} (unfinished)"
        detail = self.error or (self.restore_check.error if self.restore_check else None)
        return f"{self.status}" + (f": {detail}" if detail else "")


class BackupSet(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: int = MANIFEST_FORMAT
    set_id: str
    kind: SetKind = SetKind.SCHEDULED
    created_at: str = Field(default_factory=now_iso)
    stack_id: str = ""
    tool_version: str = ""
    planned: list[EngineName] = Field(default_factory=list)
    databases: dict[EngineName, DatabaseEntry] = Field(default_factory=dict)
    code_schema_version: int | None = None  # the code's version when the set was taken (for information)

    @field_validator("set_id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        set_time(v)
        return v

    @model_validator(mode="before")
    @classmethod
    def _read_format_1(cls, data: Any) -> Any:
        if not isinstance(data, dict) or int(data.get("format", 1) or 1) >= 2:
            return data
        data = dict(data)
        entries = dict(data.get("databases") or {})
        data.setdefault("planned", [db for db in ENGINE_NAMES if db in entries])
        version = data.pop("schema_version", None)
        if version is not None:
            data["code_schema_version"] = version
            data["databases"] = {db: {**e, "schema_version": e.get("schema_version", version)}
                                 for db, e in entries.items()}
        data["format"] = MANIFEST_FORMAT
        return data

    # --- what the set is -------------------------------------------------------
    @property
    def time(self) -> datetime:
        return set_time(self.set_id)

    def entry(self, db: str) -> DatabaseEntry | None:
        return self.databases.get(db)  # type: ignore[call-overload, no-any-return]

    def verified_for(self, dbs: Iterable[str]) -> bool:
        dbs = list(dbs)
        return bool(dbs) and all((e := self.entry(db)) is not None and e.verified for db in dbs)

    @property
    def complete(self) -> bool:
        """Every database the set was meant to hold is verified."""
        return self.verified_for(self.planned)

    @property
    def unfinished(self) -> bool:
        """Some planned database has no finished entry yet (running, or its process died)."""
        return any((e := self.entry(db)) is None or e.status in UNFINISHED for db in self.planned)

    @property
    def blob_ids(self) -> set[str]:
        """Every blob any entry of this manifest references (what retention must keep)."""
        return {blob for e in self.databases.values() for blob in e.blob_ids}

    @property
    def verified_databases(self) -> list[EngineName]:
        return [db for db in ENGINE_NAMES if (e := self.databases.get(db)) is not None and e.verified]

    def schema_version_of(self, db: str) -> int:
        entry = self.entry(db)
        if entry is not None and entry.schema_version is not None:
            return entry.schema_version
        return int(self.code_schema_version or 0)

    def problems(self, dbs: Iterable[str], explicit: bool = False) -> list[str]:
        """Why the set cannot serve a restore of `dbs` (empty when it can).
        `explicit`: the operator named this set (safety sets allowed)."""
        out = []
        if self.kind == SetKind.SAFETY and not explicit:
            out.append("safety set (only restored by explicit id)")
        for db in dbs:
            entry = self.entry(db)
            if entry is None:
                out.append(f"does not hold {db}")
            elif not entry.verified:
                out.append(f"{db} {entry.problem()}")
        return out

    def usable_for(self, dbs: Iterable[str], explicit: bool = False) -> bool:
        return not self.problems(dbs, explicit)

    def summary(self) -> str:
        """`20261201T030000Z scheduled: mongo verified, redis failed, chroma verified`"""
        parts = [f"{db} {e.status}" for db, e in self.databases.items()]
        missing = [db for db in self.planned if db not in self.databases]
        parts += [f"{db} missing" for db in missing]
        return f"{self.set_id} {self.kind}: " + ", ".join(parts)


# --- choosing a set ---------------------------------------------------------------

@dataclass(frozen=True)
class PassedOver:
    set_id: str
    reasons: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.set_id} passed over: {'; '.join(self.reasons)}"


@dataclass
class Choice:
    """The set chosen for a restore and the newer sets passed over on the way."""

    set_id: str | None
    passed_over: list[PassedOver] = field(default_factory=list)

    def notes(self) -> list[str]:
        return [p.describe() for p in self.passed_over]


def choose_latest(sets: Iterable[BackupSet], dbs: Sequence[str]) -> Choice:
    """`latest` for `dbs`: the newest set usable for all of them (never a safety set).
    Every newer set is named with the reason it was passed over."""
    choice = Choice(None)
    for s in sorted(sets, key=lambda s: s.set_id, reverse=True):
        problems = s.problems(dbs)
        if not problems:
            choice.set_id = s.set_id
            return choice
        choice.passed_over.append(PassedOver(s.set_id, tuple(problems)))
    return choice


def newest_complete(sets: Iterable[BackupSet], kinds: frozenset[SetKind] = AUTOMATIC_KINDS,
                    dbs: Sequence[EngineName] = ENGINE_NAMES) -> BackupSet | None:
    """The newest complete set of `kinds` holding all of `dbs` (monitoring's 'newest backup')."""
    ordered = sorted(sets, key=lambda s: s.set_id, reverse=True)
    return next((s for s in ordered if s.kind in kinds and s.complete and set(dbs) <= set(s.planned)), None)
