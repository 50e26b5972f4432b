"""The off-site store: backup sets in an S3-compatible bucket (minio SDK).

    <prefix>/sets/<set_id>/<db>.tar.zst     one archive per database (layout "archive")
    <prefix>/sets/<set_id>/manifest.json    written after the archives/blobs; deleted first
    <prefix>/blobs/<ab>/<id>                content-addressed dump files (layout "blobs")

S3 Object Lock (RPGER_S3_OBJECT_LOCK_DAYS > 0): the bucket is created with
Object Lock (versioning) on, every object is uploaded with a retention of
that many days in RPGER_S3_OBJECT_LOCK_MODE (governance or compliance), and
a blob a new set reuses has its retention extended. Deletes remove every
version of an object, so a lock the credentials cannot bypass stops them:
`delete`/`delete_blob` raise `ObjectLocked` (checked before anything is
removed, for a set), never a delete marker that only hides data.

Every object carries its sha256 as user metadata (`x-amz-meta-sha256`), and
every upload is proven by reading the object back and hashing it (an ETag is
not a content hash for multipart uploads). Downloads are hashed against the
manifest and land atomically.

Time is bounded: connect and read timeouts on every request, and retries
(with backoff) only for refused connections and 5xx answers. A store that
accepts connections but stops answering (hung, frozen) fails each operation
after one read timeout instead of being retried into minutes.

Errors are `StoreError`s whose message names the endpoint, bucket and object,
never the keys.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.retention import COMPLIANCE, GOVERNANCE, Retention

from rpger_ops.sets import BackupSet, SetIdError, set_time
from rpger_ops.store.base import (
    BLOBS,
    MANIFEST,
    ArchiveMissing,
    BlobInfo,
    CorruptArchive,
    ObjectLocked,
    SetNotFound,
    StoredArchive,
    StoreError,
    archive_name,
    blob_path,
    check_blob_id,
    scanned_ids,
)
from rpger_ops.store.local import dump_manifest, parse_manifest

if TYPE_CHECKING:
    from rpger_ops.settings import Settings

SHA256_META = "sha256"
CHUNK = 1024 * 1024
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 20.0
NOT_FOUND = ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound")
RETAIN_UNTIL = "x-amz-object-lock-retain-until-date"
LEGAL_HOLD = "x-amz-object-lock-legal-hold"
# A reused blob's retention is extended when it would end sooner than this before a new object's.
RETENTION_SLACK = timedelta(days=1)
_NET_ERRORS = (MinioException, urllib3.exceptions.HTTPError, OSError)


def http_client(connect_timeout_s: float = CONNECT_TIMEOUT_S, read_timeout_s: float = READ_TIMEOUT_S
                ) -> urllib3.PoolManager:
    import certifi

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        # read=0: a read timeout is not retried (a hung server would only hang again).
        retries=urllib3.Retry(total=3, connect=2, read=0, status=2, backoff_factor=0.5,
                              status_forcelist=[500, 502, 503, 504], raise_on_status=False),
    )


def _reason(exc: BaseException) -> str:
    """A short, key-free description of a client error."""
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError | TimeoutError):
        return f"no answer within the {READ_TIMEOUT_S:g} s read timeout (store hung?)"
    if isinstance(exc, urllib3.exceptions.MaxRetryError | urllib3.exceptions.NewConnectionError
                  | urllib3.exceptions.ProtocolError | ConnectionError):
        return f"unreachable ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def _hash_stream(chunks: Iterable[bytes]) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


class S3Store:
    label = "offsite"

    def __init__(self, client: Minio, endpoint: str, bucket: str, prefix: str, region: str | None = None,
                 lock_days: int = 0, lock_mode: str = "governance") -> None:
        self.client = client
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.lock_days = lock_days
        self.lock_mode = COMPLIANCE if lock_mode == "compliance" else GOVERNANCE
        self._bucket_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        if not settings.s3_endpoint or settings.s3_access_key is None or settings.s3_secret_key is None:
            raise StoreError("off-site store not configured (set RPGER_S3_ENDPOINT and its keys)")
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http_client(),
        )
        return cls(client, settings.s3_endpoint, settings.s3_bucket, settings.s3_prefix, settings.s3_region,
                   settings.s3_object_lock_days, settings.s3_object_lock_mode)

    # --- naming ------------------------------------------------------------------
    def where(self) -> str:
        return f"s3://{self.endpoint}/{self.bucket}/{self.prefix}"

    def _sets_prefix(self) -> str:
        return f"{self.prefix}/sets/" if self.prefix else "sets/"

    def set_prefix(self, set_id: str) -> str:
        try:
            set_time(set_id)  # keeps keys inside the prefix
        except SetIdError as exc:
            raise StoreError(str(exc)) from None
        return f"{self._sets_prefix()}{set_id}/"

    def archive_key(self, set_id: str, db: str) -> str:
        return self.set_prefix(set_id) + archive_name(db)

    def manifest_key(self, set_id: str) -> str:
        return self.set_prefix(set_id) + MANIFEST

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"off-site {self.endpoint} bucket {self.bucket}: {what} failed: {_reason(exc)}")

    # --- basics --------------------------------------------------------------------
    def ping(self) -> bool:
        """True when the store answers with our credentials (the bucket may not exist yet)."""
        try:
            self.client.bucket_exists(self.bucket)
        except _NET_ERRORS as exc:
            raise self._fail("ping", exc) from None
        return True

    def ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket, location=self.region, object_lock=self.lock_days > 0)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._fail("create bucket", exc) from None
        except _NET_ERRORS as exc:
            raise self._fail("create bucket", exc) from None
        if self.lock_days > 0:
            try:
                self.client.get_object_lock_config(self.bucket)
            except S3Error as exc:
                raise StoreError(f"off-site {self.endpoint} bucket {self.bucket}: RPGER_S3_OBJECT_LOCK_DAYS is set "
                                 f"but the bucket has no Object Lock ({exc.code}); Object Lock can only be "
                                 "enabled when a bucket is created: use a new bucket") from None
            except _NET_ERRORS as exc:
                raise self._fail("read the bucket's Object Lock configuration", exc) from None
        self._bucket_ready = True

    # --- Object Lock -----------------------------------------------------------------
    def _retention(self) -> Retention | None:
        if self.lock_days <= 0:
            return None
        return Retention(self.lock_mode, datetime.now(UTC).replace(microsecond=0) + timedelta(days=self.lock_days))

    @staticmethod
    def _retain_until(stat: Any) -> datetime | None:
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        raw = meta.get(RETAIN_UNTIL)
        if not raw:
            return None
        try:
            return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            return None

    def _locked_until(self, stat: Any) -> datetime | None:
        """When the object may be deleted (None: not locked now)."""
        until = self._retain_until(stat)
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        if str(meta.get(LEGAL_HOLD, "")).upper() == "ON":
            return datetime.max.replace(tzinfo=UTC)
        return until if until is not None and until > datetime.now(UTC) else None

    def _extend_retention(self, key: str, stat: Any) -> None:
        """A new set references an existing object: it must be kept as long as a new one."""
        wanted = self._retention()
        if wanted is None:
            return
        until = self._retain_until(stat)
        if until is not None and until >= wanted.retain_until_date - RETENTION_SLACK:
            return
        try:
            self.client.set_object_retention(self.bucket, key, wanted)
        except _NET_ERRORS as exc:
            raise self._fail(f"extend the retention of {key}", exc) from None

    def _stat(self, key: str) -> Any | None:
        try:
            return self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in NOT_FOUND:
                return None
            raise self._fail(f"stat {key}", exc) from None
        except _NET_ERRORS as exc:
            raise self._fail(f"stat {key}", exc) from None

    @staticmethod
    def _meta_sha256(stat: Any) -> str | None:
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        value = meta.get("x-amz-meta-" + SHA256_META)
        return str(value) if value else None

    def _iter_object(self, key: str) -> Iterator[bytes]:
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in NOT_FOUND:
                raise ArchiveMissing(f"off-site {self.endpoint} bucket {self.bucket}: {key} not found") from None
            raise self._fail(f"download {key}", exc) from None
        except _NET_ERRORS as exc:
            raise self._fail(f"download {key}", exc) from None
        try:
            yield from response.stream(CHUNK)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail(f"download {key}", exc) from None
        finally:
            response.close()
            response.release_conn()

    def _remote_sha256(self, key: str) -> tuple[str, int]:
        """Stream the object and hash it: the proof that what is stored is what we sent."""
        return _hash_stream(self._iter_object(key))

    # --- writing -------------------------------------------------------------------
    def _put_verified(self, key: str, path: Path | None, data: bytes | None, sha256: str,
                      content_type: str) -> StoredArchive:
        """Upload unless the same content is there (sha256 metadata, size, and a
        read-back hash agree); then read it back and compare."""
        started = time.monotonic()
        size = path.stat().st_size if path is not None else len(data or b"")
        existing = self._stat(key)
        if (existing is not None and self._meta_sha256(existing) == sha256 and existing.size == size
                and self._remote_sha256(key) == (sha256, size)):
            self._extend_retention(key, existing)
            return StoredArchive(key, sha256, size, False, time.monotonic() - started, str(existing.etag))
        self.ensure_bucket()
        try:
            if path is not None:
                self.client.fput_object(self.bucket, key, str(path), content_type=content_type,
                                        metadata={SHA256_META: sha256}, retention=self._retention())
            else:
                self.client.put_object(self.bucket, key, io.BytesIO(data or b""), size,
                                       content_type=content_type, metadata={SHA256_META: sha256},
                                       retention=self._retention())
        except (*_NET_ERRORS, ValueError) as exc:
            raise self._fail(f"upload {key}", exc) from None
        remote, remote_size = self._remote_sha256(key)
        if remote != sha256 or remote_size != size:
            raise StoreError(f"off-site {self.endpoint} bucket {self.bucket}: {key} read back as "
                             f"sha256 {remote[:12]}… ({remote_size} bytes), expected {sha256[:12]}… ({size} bytes)")
        stat = self._stat(key)
        return StoredArchive(key, sha256, size, True, time.monotonic() - started,
                             str(stat.etag) if stat is not None else "")

    def put_archive(self, set_id: str, db: str, path: Path, sha256: str) -> StoredArchive:
        return self._put_verified(self.archive_key(set_id, db), path, None, sha256, "application/zstd")

    def write(self, backup_set: BackupSet) -> None:
        body = dump_manifest(backup_set).encode()
        self._put_verified(self.manifest_key(backup_set.set_id), None, body, hashlib.sha256(body).hexdigest(),
                           "application/json")

    # --- listing and reading ---------------------------------------------------------
    def _list(self, prefix: str, recursive: bool) -> list[Any]:
        try:
            return list(self.client.list_objects(self.bucket, prefix=prefix, recursive=recursive))
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return []
            raise self._fail(f"list {prefix}", exc) from None
        except _NET_ERRORS as exc:
            raise self._fail(f"list {prefix}", exc) from None

    def _scan(self) -> dict[str, bool]:
        """Every set id with objects under the prefix -> whether it has a manifest."""
        found: dict[str, bool] = {}
        base = self._sets_prefix()
        for obj in self._list(base, recursive=True):
            set_id, _, leaf = str(obj.object_name)[len(base):].partition("/")
            try:
                set_time(set_id)
            except SetIdError:
                continue  # not ours
            found[set_id] = found.get(set_id, False) or leaf == MANIFEST
        return found

    def set_ids(self) -> list[str]:
        return scanned_ids(self._scan(), complete=True)

    def incomplete_set_ids(self) -> list[str]:
        return scanned_ids(self._scan(), complete=False)

    def read(self, set_id: str) -> BackupSet:
        key = self.manifest_key(set_id)
        try:
            body = b"".join(self._iter_object(key))
        except ArchiveMissing:
            raise SetNotFound(f"off-site {self.endpoint} bucket {self.bucket}: backup set {set_id} not found") from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = "\x00"
        return parse_manifest(text, set_id, "off-site")

    # --- archives ---------------------------------------------------------------------
    def fetch_archive(self, set_id: str, db: str, sha256: str, work: Path) -> Path:
        """Stream the archive into `work`, checking its sha256; rename into place."""
        key = self.archive_key(set_id, db)
        return self._download_checked(key, work / f"{set_id}-{archive_name(db)}", sha256, f"off-site set {set_id}: {key}")

    def _download_checked(self, key: str, dest: Path, sha256: str, what: str) -> Path:
        """Stream `key` into `dest` (renamed into place only once its sha256 matched)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        h = hashlib.sha256()
        try:
            with open(tmp, "wb") as fh:
                for chunk in self._iter_object(key):
                    h.update(chunk)
                    fh.write(chunk)
            if h.hexdigest() != sha256:
                raise CorruptArchive(f"{what} has sha256 {h.hexdigest()[:12]}…, "
                                     f"manifest says {sha256[:12]}… (corrupt remote copy)")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def archive_sha256(self, set_id: str, db: str) -> str | None:
        try:
            return self._remote_sha256(self.archive_key(set_id, db))[0]
        except ArchiveMissing:
            return None

    def _versions(self, prefix: str) -> list[tuple[str, str | None]]:
        """(key, version id) of every version and delete marker under `prefix`."""
        try:
            objects = list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True,
                                                    include_version=True))
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return []
            raise self._fail(f"list versions of {prefix}", exc) from None
        except _NET_ERRORS as exc:
            raise self._fail(f"list versions of {prefix}", exc) from None
        return [(str(o.object_name), o.version_id if o.version_id not in (None, "null") else None)
                for o in objects]

    def _refuse_if_locked(self, what: str, versions: list[tuple[str, str | None]]) -> None:
        """Check every version's lock before removing anything: a set is deleted whole or not at all."""
        if self.lock_days <= 0 and not any(v for _, v in versions):
            return  # an unversioned bucket has no Object Lock
        latest: datetime | None = None
        for key, version in versions:
            try:
                stat = self.client.stat_object(self.bucket, key, version_id=version)
            except S3Error as exc:
                if exc.code in NOT_FOUND or exc.code == "MethodNotAllowed":  # a delete marker
                    continue
                raise self._fail(f"stat {key}", exc) from None
            except _NET_ERRORS as exc:
                raise self._fail(f"stat {key}", exc) from None
            until = self._locked_until(stat)
            if until is not None and (latest is None or until > latest):
                latest = until
        if latest is not None:
            raise ObjectLocked(f"off-site {self.endpoint} bucket {self.bucket}: {what} is kept by its Object Lock "
                               f"until {latest.isoformat()}", latest)

    def _remove_versions(self, what: str, versions: list[tuple[str, str | None]]) -> None:
        for key, version in versions:
            try:
                self.client.remove_object(self.bucket, key, version_id=version)
            except S3Error as exc:
                if exc.code in NOT_FOUND:
                    continue
                if exc.code in ("AccessDenied", "ObjectLocked", "InvalidRequest"):
                    raise ObjectLocked(f"off-site {self.endpoint} bucket {self.bucket}: {what}: {key} not removed "
                                       f"({exc.code}: {exc.message})") from None
                raise self._fail(f"delete {key}", exc) from None
            except _NET_ERRORS as exc:
                raise self._fail(f"delete {key}", exc) from None

    def delete(self, set_id: str) -> None:
        """Manifest first (the set stops counting), then the rest; every version of each,
        after checking that no Object Lock keeps any of them (ObjectLocked)."""
        manifest_key = self.manifest_key(set_id)
        versions = self._versions(self.set_prefix(set_id))
        self._refuse_if_locked(f"set {set_id}", versions)
        ordered = [v for v in versions if v[0] == manifest_key] + [v for v in versions if v[0] != manifest_key]
        if any(v for _, v in ordered):
            self._remove_versions(f"delete set {set_id}", ordered)
            return
        keys = [k for k, _ in ordered]
        try:
            for key in keys[:1]:
                self.client.remove_object(self.bucket, key)
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys[1:])))
        except _NET_ERRORS as exc:
            raise self._fail(f"delete set {set_id}", exc) from None
        if errors:
            raise StoreError(f"off-site {self.endpoint} bucket {self.bucket}: delete set {set_id}: "
                             f"{len(errors)} object(s) not removed ({errors[0].code})")

    # --- blobs -------------------------------------------------------------------------
    def blob_key(self, blob_id: str) -> str:
        return f"{self.prefix}/{blob_path(blob_id)}" if self.prefix else blob_path(blob_id)

    def _blobs_prefix(self) -> str:
        return f"{self.prefix}/{BLOBS}/" if self.prefix else f"{BLOBS}/"

    def blob_info(self, blob_id: str) -> BlobInfo | None:
        stat = self._stat(self.blob_key(blob_id))
        if stat is None:
            return None
        modified = stat.last_modified or datetime.now(UTC)
        return BlobInfo(blob_id, self._meta_sha256(stat), int(stat.size or 0), modified, self._retain_until(stat))

    def put_blob(self, blob_id: str, path: Path, stored_sha256: str) -> StoredArchive:
        return self._put_verified(self.blob_key(blob_id), path, None, stored_sha256, "application/octet-stream")

    def fetch_blob(self, blob_id: str, stored_sha256: str, work: Path) -> Path:
        key = self.blob_key(blob_id)
        return self._download_checked(key, work / f"{blob_id}.blob", stored_sha256, f"off-site blob {key}")

    def blob_sha256(self, blob_id: str) -> str | None:
        try:
            return self._remote_sha256(self.blob_key(blob_id))[0]
        except ArchiveMissing:
            return None

    def keep_blob(self, blob_id: str) -> None:
        key = self.blob_key(blob_id)
        stat = self._stat(key)
        if stat is not None:
            self._extend_retention(key, stat)

    def list_blobs(self) -> list[BlobInfo]:
        out = []
        base = self._blobs_prefix()
        for obj in self._list(base, recursive=True):
            name = str(obj.object_name).rsplit("/", 1)[-1]
            try:
                check_blob_id(name)
            except StoreError:
                continue
            out.append(BlobInfo(name, None, int(obj.size or 0), obj.last_modified or datetime.now(UTC)))
        return out

    def delete_blob(self, blob_id: str) -> None:
        key = self.blob_key(blob_id)
        versions = self._versions(key)
        versions = [v for v in versions if v[0] == key]
        self._refuse_if_locked(f"blob {blob_id[:12]}…", versions)
        if any(v for _, v in versions):
            self._remove_versions(f"delete blob {blob_id[:12]}…", versions)
            return
        try:
            self.client.remove_object(self.bucket, key)
        except S3Error as exc:
            if exc.code not in NOT_FOUND:
                raise self._fail(f"delete {key}", exc) from None
        except _NET_ERRORS as exc:
            raise self._fail(f"delete {key}", exc) from None
