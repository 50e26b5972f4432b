"""The off-site copy: backup sets in an S3-compatible bucket (MinIO SDK).

Object layout under the configured prefix:

    <prefix>/sets/<set_id>/<db>.tar.zst     one archive per database
    <prefix>/sets/<set_id>/manifest.json    written last; deleted first

A remote set exists only when its manifest does, so an interrupted upload or
delete never shows up as a usable set. Every object carries its sha256 as user
metadata (`x-amz-meta-sha256`), and every upload is proven by reading the
object back and hashing it (an ETag is not a content hash for multipart
uploads). Downloads are hashed against the manifest and land atomically.

Errors are `OffsiteError` whose message names the endpoint, bucket and object,
never the keys.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from rpger_ops.catalog import MANIFEST, VERIFIED, Catalog, CatalogError, archive_name, set_time

if TYPE_CHECKING:
    from rpger_ops.settings import Settings

SHA256_META = "sha256"
# Status of a verified entry in the remote manifest whose archive is not off-site.
LOCAL_ONLY = "local_only"
CHUNK = 1024 * 1024
# Fail in seconds when the store is down; retry only transient server errors.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
RETRIES = 2


class OffsiteError(Exception):
    """An off-site operation failed; the message is safe to show (no keys)."""


class ManifestError(OffsiteError):
    """A remote manifest exists but cannot be read as a manifest."""


@dataclass(frozen=True)
class UploadResult:
    key: str
    sha256: str
    bytes: int
    uploaded: bool  # False when the same content was already there (idempotent re-run)
    seconds: float
    verify_seconds: float  # time spent reading the object back to prove its checksum
    etag: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "sha256": self.sha256, "bytes": self.bytes, "uploaded": self.uploaded,
                "etag": self.etag,
                "seconds": round(self.seconds, 3), "verify_seconds": round(self.verify_seconds, 3)}


def _http_client() -> urllib3.PoolManager:
    import certifi

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=RETRIES, connect=1, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504]),
    )


def _reason(exc: BaseException) -> str:
    """A short, key-free description of a client error."""
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return f"unreachable ({type(exc.reason).__name__})" if exc.reason else "unreachable"
    return f"{type(exc).__name__}: {exc}"


def _hash_stream(chunks: Iterable[bytes]) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for chunk in chunks:
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


def sha256_of_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def remote_view(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as stored off-site: entries without a matching off-site copy
    become `local_only` (original status kept in `local_status`)."""
    remote = json.loads(json.dumps(manifest, default=str))
    for entry in remote.get("databases", {}).values():
        copy = entry.get("offsite") or {}
        if entry.get("status") == VERIFIED and not (copy.get("sha256") and copy.get("sha256") == entry.get("sha256")):
            entry["local_status"], entry["status"] = entry["status"], LOCAL_ONLY
    return dict(remote)


class OffsiteStore:
    def __init__(self, client: Minio, endpoint: str, bucket: str, prefix: str, region: str | None = None) -> None:
        self.client = client
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self._bucket_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> OffsiteStore:
        if not settings.s3_endpoint or settings.s3_access_key is None or settings.s3_secret_key is None:
            raise OffsiteError("off-site store is not configured (set RPGER_S3_ENDPOINT and keys)")
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=_http_client(),
        )
        return cls(client, settings.s3_endpoint, settings.s3_bucket, settings.s3_prefix, settings.s3_region)

    # --- naming ------------------------------------------------------------------
    def where(self) -> str:
        return f"s3://{self.endpoint}/{self.bucket}/{self.prefix}"

    def _sets_prefix(self) -> str:
        return f"{self.prefix}/sets/" if self.prefix else "sets/"

    def set_prefix(self, set_id: str) -> str:
        set_time(set_id)  # validates the id; keeps keys inside the prefix
        return f"{self._sets_prefix()}{set_id}/"

    def archive_key(self, set_id: str, db: str) -> str:
        return self.set_prefix(set_id) + archive_name(db)

    def manifest_key(self, set_id: str) -> str:
        return self.set_prefix(set_id) + MANIFEST

    def _fail(self, what: str, exc: BaseException) -> OffsiteError:
        return OffsiteError(f"off-site {self.endpoint} bucket {self.bucket}: {what} failed: {_reason(exc)}")

    # --- basics --------------------------------------------------------------------
    def ping(self) -> bool:
        """True when the store answers with our credentials (bucket may not exist yet)."""
        try:
            self.client.bucket_exists(self.bucket)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail("ping", exc) from None
        return True

    def ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket, location=self.region)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._fail("create bucket", exc) from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail("create bucket", exc) from None
        self._bucket_ready = True

    def _stat(self, key: str) -> Any | None:
        """Object stat, or None when absent."""
        try:
            return self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"):
                return None
            raise self._fail(f"stat {key}", exc) from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail(f"stat {key}", exc) from None

    @staticmethod
    def _meta_sha256(stat: Any) -> str | None:
        meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
        value = meta.get("x-amz-meta-" + SHA256_META)
        return str(value) if value else None

    def _iter_object(self, key: str) -> Iterator[bytes]:
        try:
            response = self.client.get_object(self.bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail(f"download {key}", exc) from None
        try:
            yield from response.stream(CHUNK)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail(f"download {key}", exc) from None
        finally:
            response.close()
            response.release_conn()

    def remote_sha256(self, key: str) -> tuple[str, int]:
        """Stream the object and hash it: the proof that what is stored is what we sent."""
        return _hash_stream(self._iter_object(key))

    # --- upload --------------------------------------------------------------------
    def _put_verified(self, key: str, path: Path | None, data: bytes | None, sha256: str,
                      content_type: str, known_etag: str | None = None) -> UploadResult:
        """Upload unless the same content is there; then read it back and compare.

        "Already there" needs the sha256 metadata and size to match, and either
        the ETag we recorded after our own verified upload (the object was not
        overwritten since: a stat, no download) or a read-back hash."""
        started = time.monotonic()
        size = path.stat().st_size if path is not None else len(data or b"")
        existing = self._stat(key)
        if existing is not None and self._meta_sha256(existing) == sha256 and existing.size == size:
            etag = str(existing.etag)
            if known_etag and etag == known_etag:
                return UploadResult(key, sha256, size, False, time.monotonic() - started, 0.0, etag)
            verify_started = time.monotonic()
            if self.remote_sha256(key) == (sha256, size):
                return UploadResult(key, sha256, size, False, time.monotonic() - started,
                                    time.monotonic() - verify_started, etag)
        self.ensure_bucket()
        try:
            if path is not None:
                self.client.fput_object(self.bucket, key, str(path), content_type=content_type,
                                        metadata={SHA256_META: sha256})
            else:
                self.client.put_object(self.bucket, key, io.BytesIO(data or b""), size,
                                       content_type=content_type, metadata={SHA256_META: sha256})
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise self._fail(f"upload {key}", exc) from None
        verify_started = time.monotonic()
        remote, remote_size = self.remote_sha256(key)
        verify_seconds = time.monotonic() - verify_started
        if remote != sha256 or remote_size != size:
            raise OffsiteError(f"off-site {self.endpoint} bucket {self.bucket}: {key} read back as "
                               f"sha256 {remote[:12]}… ({remote_size} bytes), expected {sha256[:12]}… "
                               f"({size} bytes)")
        stat = self._stat(key)
        etag = str(stat.etag) if stat is not None else ""
        return UploadResult(key, sha256, size, True, time.monotonic() - started, verify_seconds, etag)

    def upload_archive(self, catalog: Catalog, set_id: str, db: str) -> dict[str, Any]:
        """Copy one verified archive off-site and prove it; records `offsite` in the
        local manifest. Idempotent: skips when the same sha256 is already stored."""
        manifest = catalog.read(set_id)
        entry = manifest.get("databases", {}).get(db)
        if not entry:
            raise OffsiteError(f"backup set {set_id} has no {db} entry to upload")
        if entry.get("status") != VERIFIED:
            raise OffsiteError(f"backup set {set_id}: {db} is {entry.get('status')!r}, not verified; "
                               "only verified archives go off-site")
        path = catalog.archive_path(set_id, db)
        if not path.exists():
            raise OffsiteError(f"backup set {set_id}: archive {path} is missing")
        local = sha256_of_file(path)
        if local != entry.get("sha256"):
            raise OffsiteError(f"backup set {set_id}: local {db} archive does not match its manifest "
                               "sha256 (corrupt?); not uploading")
        recorded = entry.get("offsite") or {}
        known_etag = recorded.get("etag") if recorded.get("sha256") == local else None
        result = self._put_verified(self.archive_key(set_id, db), path, None, local, "application/zstd",
                                    known_etag)
        if not result.uploaded and recorded.get("sha256") == local and recorded.get("etag") == result.etag:
            return result.as_dict()  # nothing changed: leave the manifest (and its remote copy) alone
        catalog.update_database(set_id, db, offsite={
            "key": result.key, "sha256": result.sha256, "bytes": result.bytes, "etag": result.etag,
            "uploaded_at": datetime.now(UTC).isoformat(),
        })
        return result.as_dict()

    def upload_manifest(self, catalog: Catalog, set_id: str) -> dict[str, Any]:
        """Upload the manifest after the archives: from now on the remote set counts.

        Called again after each database's upload (chains run in parallel); an
        entry whose archive is not (yet) off-site is marked `local_only` in the
        remote copy, so nothing reading the bucket ever picks it."""
        manifest = remote_view(catalog.read(set_id))
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        sha = hashlib.sha256(body).hexdigest()
        return self._put_verified(self.manifest_key(set_id), None, body, sha, "application/json").as_dict()

    # --- listing and reading ---------------------------------------------------------
    def _list(self, prefix: str, recursive: bool) -> list[Any]:
        try:
            return list(self.client.list_objects(self.bucket, prefix=prefix, recursive=recursive))
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return []
            raise self._fail(f"list {prefix}", exc) from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail(f"list {prefix}", exc) from None

    def _scan(self) -> dict[str, bool]:
        """Every set id with objects under the prefix -> whether it has a manifest."""
        found: dict[str, bool] = {}
        base = self._sets_prefix()
        for obj in self._list(base, recursive=True):
            set_id, _, leaf = str(obj.object_name)[len(base):].partition("/")
            try:
                set_time(set_id)
            except CatalogError:
                continue  # not ours
            found[set_id] = found.get(set_id, False) or leaf == MANIFEST
        return found

    def list_set_ids(self) -> list[str]:
        """Ids of remote sets that have a manifest, newest first."""
        return sorted((sid for sid, complete in self._scan().items() if complete), reverse=True)

    def incomplete_set_ids(self) -> list[str]:
        """Ids with archives but no manifest (an upload still running, or one that
        died before its manifest), newest first. Never a usable set."""
        return sorted((sid for sid, complete in self._scan().items() if not complete), reverse=True)

    def read_manifest(self, set_id: str) -> dict[str, Any]:
        key = self.manifest_key(set_id)
        if self._stat(key) is None:
            raise OffsiteError(f"off-site {self.endpoint} bucket {self.bucket}: backup set {set_id} not found")
        body = b"".join(self._iter_object(key))
        try:
            manifest = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"off-site backup set {set_id}: manifest is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("set_id") != set_id:
            raise ManifestError(f"off-site backup set {set_id}: manifest does not describe this set")
        return manifest

    # --- download ------------------------------------------------------------------------
    def _download_checked(self, key: str, dest: Path, expected_sha256: str) -> int:
        """Stream `key` into a temp file next to `dest`, check sha256, then rename into place."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        h, n = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as fh:
                for chunk in self._iter_object(key):
                    h.update(chunk)
                    n += len(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if h.hexdigest() != expected_sha256:
                raise OffsiteError(f"off-site {self.endpoint} bucket {self.bucket}: {key} has sha256 "
                                   f"{h.hexdigest()[:12]}…, manifest says {expected_sha256[:12]}… "
                                   "(corrupt remote copy); not used")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return n

    def download_set(self, set_id: str, catalog: Catalog, dbs: Iterable[str]) -> None:
        """Bring a remote set's archives for `dbs` (and its manifest) into the local
        catalog, each checked against the manifest's sha256. The manifest lands
        last, so a failed download never leaves a listable set behind."""
        manifest = self.read_manifest(set_id)
        entries = manifest.get("databases", {})
        local_manifest: dict[str, Any] | None = None
        if catalog.manifest_path(set_id).exists():
            local_manifest = catalog.read(set_id)
        for db in dbs:
            entry = entries.get(db)
            if not entry or not entry.get("sha256") or not entry.get("offsite"):
                raise OffsiteError(f"off-site backup set {set_id} has no {db} archive")
            if local_manifest is not None:
                local_sha = local_manifest.get("databases", {}).get(db, {}).get("sha256")
                if local_sha and local_sha != entry["sha256"]:
                    raise OffsiteError(f"backup set {set_id}: local and off-site manifests disagree "
                                       f"on the {db} archive sha256")
            dest = catalog.archive_path(set_id, db)
            if dest.exists() and sha256_of_file(dest) == entry["sha256"]:
                continue
            self._download_checked(self.archive_key(set_id, db), dest, str(entry["sha256"]))
        if local_manifest is None:
            # Same locked, atomic write the pipeline uses; only fills an absent manifest.
            catalog.update(set_id, lambda m: None if m else m.update(manifest))

    # --- delete ------------------------------------------------------------------------------
    def delete_set(self, set_id: str) -> int:
        """Delete a remote set: manifest first (the set stops counting), then the rest.
        Returns the number of objects removed."""
        manifest_key = self.manifest_key(set_id)
        keys = [str(o.object_name) for o in self._list(self.set_prefix(set_id), recursive=True)]
        ordered = [k for k in keys if k == manifest_key] + [k for k in keys if k != manifest_key]
        try:
            for key in ordered[:1]:
                self.client.remove_object(self.bucket, key)
            errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in ordered[1:])))
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail(f"delete set {set_id}", exc) from None
        if errors:
            raise OffsiteError(f"off-site {self.endpoint} bucket {self.bucket}: delete set {set_id}: "
                               f"{len(errors)} object(s) not removed ({errors[0].code})")
        return len(ordered)
