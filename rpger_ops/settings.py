"""The one settings model of the ops layer.

Read from the environment and `.env`. Names the RPGer backend already uses
(`MONGODB_URI`, `MONGODB_DATABASE`, `REDIS_URL`, `CHROMA_HOST`, `CHROMA_PORT`)
keep their names so one `.env` serves the app and the ops layer; the rest are
prefixed `RPGER_`. Every secret is also accepted as `<NAME>_FILE`, a path to a
file holding the value (Docker-secrets style), which wins over the plain
variable.

Bad configuration raises `ConfigError` whose message names each variable and
what is wrong with it, one line each, and never contains a secret's value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that setup scripts and examples use as "fill me in"; a secret still
# holding one is refused so a half-configured stack never starts.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "password", "secret", "placeholder", "xxx"})


class ConfigError(Exception):
    """Configuration is missing or malformed. `str()` is safe to print."""


def _field(alias: str, default: Any = ..., **kw: Any) -> Any:
    return Field(default, validation_alias=AliasChoices(alias), **kw)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=False)

    # Secret fields: each is also read from `<ALIAS>_FILE`.
    SECRET_ALIASES: ClassVar[tuple[str, ...]] = (
        "MONGODB_URI",
        "MONGODB_PASSWORD",
        "REDIS_URL",
        "REDIS_PASSWORD",
        "CHROMA_AUTH_TOKEN",
        "RPGER_S3_ACCESS_KEY",
        "RPGER_S3_SECRET_KEY",
        "RPGER_ALERT_WEBHOOK_URL",
        "RPGER_HEARTBEAT_URL",
    )

    # --- MongoDB -----------------------------------------------------------
    mongodb_uri: SecretStr = _field("MONGODB_URI", SecretStr("mongodb://localhost:27017/rpger"))
    mongodb_database: str = _field("MONGODB_DATABASE", "rpger", min_length=1)
    mongodb_username: str | None = _field("MONGODB_USERNAME", None)
    mongodb_password: SecretStr | None = _field("MONGODB_PASSWORD", None)
    mongodb_auth_source: str = _field("MONGODB_AUTH_SOURCE", "admin")
    mongodb_max_pool_size: int = _field("MONGODB_MAX_POOL_SIZE", 50, ge=1, le=1000)
    mongodb_min_pool_size: int = _field("MONGODB_MIN_POOL_SIZE", 5, ge=0, le=1000)
    mongodb_max_idle_time_ms: int = _field("MONGODB_MAX_IDLE_TIME_MS", 60_000, ge=0)
    mongodb_connect_timeout_ms: int = _field("MONGODB_CONNECT_TIMEOUT_MS", 5_000, ge=1)
    mongodb_socket_timeout_ms: int = _field("MONGODB_SOCKET_TIMEOUT_MS", 60_000, ge=1)
    mongodb_server_selection_timeout_ms: int = _field("MONGODB_SERVER_SELECTION_TIMEOUT_MS", 5_000, ge=1)

    # --- Redis -------------------------------------------------------------
    redis_url: SecretStr = _field("REDIS_URL", SecretStr("redis://localhost:6379/0"))
    redis_password: SecretStr | None = _field("REDIS_PASSWORD", None)
    redis_username: str | None = _field("REDIS_USERNAME", None)
    redis_socket_timeout: float = _field("REDIS_SOCKET_TIMEOUT", 10.0, gt=0)
    redis_socket_connect_timeout: float = _field("REDIS_SOCKET_CONNECT_TIMEOUT", 5.0, gt=0)
    redis_retry_on_timeout: bool = _field("REDIS_RETRY_ON_TIMEOUT", True)
    redis_max_connections: int = _field("REDIS_MAX_CONNECTIONS", 50, ge=1)
    # The logical db of the stack's marker and locks: out of the app's db0 (its DBSIZE and KEYS).
    redis_stack_db: int = _field("RPGER_REDIS_STACK_DB", 15, ge=0, le=255)

    # --- Chroma ------------------------------------------------------------
    chroma_host: str = _field("CHROMA_HOST", "localhost", min_length=1)
    chroma_port: int = _field("CHROMA_PORT", 8000, ge=1, le=65535)
    chroma_ssl: bool = _field("CHROMA_SSL", False)
    chroma_tenant: str = _field("CHROMA_TENANT", "default_tenant", min_length=1)
    chroma_database: str = _field("CHROMA_DATABASE", "default_database", min_length=1)
    chroma_auth_token: SecretStr | None = _field("CHROMA_AUTH_TOKEN", None)

    # --- Local backups -----------------------------------------------------
    backup_dir: Path = _field("RPGER_BACKUP_DIR", Path("var/backups"))
    # How many databases a backup works on at once (1 = one after another, for small hosts).
    backup_concurrency: int = _field("RPGER_BACKUP_CONCURRENCY", 3, ge=1, le=3)
    zstd_level: int = _field("RPGER_ZSTD_LEVEL", 6, ge=1, le=22)
    # New sets: 2 = content-addressed blobs (dedup, optional encryption); 1 = one tar.zst per database.
    set_format: int = _field("RPGER_SET_FORMAT", 2, ge=1, le=2)
    # zstd worker threads per blob (0 = compress in the calling thread; see docs/storage.md).
    zstd_threads: int = _field("RPGER_ZSTD_THREADS", 0, ge=0, le=8)
    # Blobs younger than this are never swept (a writer that holds no lock, a clock step).
    blob_grace_hours: float = _field("RPGER_BLOB_GRACE_HOURS", 24.0, ge=0)

    # --- Encryption (age) -----------------------------------------------------
    # Public recipients (age1..., ssh-ed25519/ssh-rsa): set it and every new set is encrypted.
    age_recipients_file: Path | None = _field("RPGER_AGE_RECIPIENTS_FILE", None)
    # The private identity: only for restores and deep verification, never on a backup-only host.
    age_identity_file: Path | None = _field("RPGER_AGE_IDENTITY_FILE", None)
    # The key of the blob addresses (HMAC) of encrypted sets; made on first use. It cannot decrypt.
    blob_id_key_file: Path | None = _field("RPGER_BLOB_ID_KEY_FILE", None)
    stack_id: str = _field("RPGER_STACK_ID", "rpger", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")

    # --- Off-site (S3-compatible) -------------------------------------------
    s3_endpoint: str | None = _field("RPGER_S3_ENDPOINT", None)
    s3_bucket: str = _field("RPGER_S3_BUCKET", "rpger-backups", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_prefix: str = _field("RPGER_S3_PREFIX", "rpger")
    s3_access_key: SecretStr | None = _field("RPGER_S3_ACCESS_KEY", None)
    s3_secret_key: SecretStr | None = _field("RPGER_S3_SECRET_KEY", None)
    s3_secure: bool = _field("RPGER_S3_SECURE", True)
    s3_region: str | None = _field("RPGER_S3_REGION", None)
    # S3 Object Lock: every object uploaded is retained this many days (0 = off).
    s3_object_lock_days: int = _field("RPGER_S3_OBJECT_LOCK_DAYS", 0, ge=0, le=36500)
    s3_object_lock_mode: Literal["governance", "compliance"] = _field("RPGER_S3_OBJECT_LOCK_MODE", "governance")

    # --- Schedules and retention --------------------------------------------
    backup_cron: str = _field("RPGER_BACKUP_CRON", "0 3 * * *")
    retention_cron: str = _field("RPGER_RETENTION_CRON", "30 4 * * *")
    schedule_timezone: str = _field("RPGER_SCHEDULE_TIMEZONE", "UTC")
    keep_last: int = _field("RPGER_KEEP_LAST", 7, ge=0)
    keep_daily: int = _field("RPGER_KEEP_DAILY", 14, ge=0)
    keep_weekly: int = _field("RPGER_KEEP_WEEKLY", 8, ge=0)
    keep_monthly: int = _field("RPGER_KEEP_MONTHLY", 12, ge=0)
    offsite_keep_last: int = _field("RPGER_OFFSITE_KEEP_LAST", 7, ge=0)
    offsite_keep_daily: int = _field("RPGER_OFFSITE_KEEP_DAILY", 30, ge=0)
    offsite_keep_weekly: int = _field("RPGER_OFFSITE_KEEP_WEEKLY", 12, ge=0)
    offsite_keep_monthly: int = _field("RPGER_OFFSITE_KEEP_MONTHLY", 24, ge=0)
    # Safety sets (the contents a forced restore replaced): their own small policy.
    safety_keep_last: int = _field("RPGER_SAFETY_KEEP_LAST", 3, ge=0)
    safety_keep_daily: int = _field("RPGER_SAFETY_KEEP_DAILY", 7, ge=0)

    # --- Monitoring ---------------------------------------------------------
    alert_webhook_url: SecretStr | None = _field("RPGER_ALERT_WEBHOOK_URL", None)
    backup_max_age_hours: float = _field("RPGER_BACKUP_MAX_AGE_HOURS", 26.0, gt=0)
    offsite_max_age_hours: float = _field("RPGER_OFFSITE_MAX_AGE_HOURS", 26.0, gt=0)
    shrink_alert_ratio: float = _field("RPGER_SHRINK_ALERT_RATIO", 0.5, gt=0, lt=1)
    # Dead man's switch: GET after each complete verified set (healthchecks.io,
    # Uptime Kuma push, ...); the external service alerts when pings stop.
    heartbeat_url: SecretStr | None = _field("RPGER_HEARTBEAT_URL", None)
    # How often the "off-site copy not configured" warning is repeated.
    offsite_reminder_hours: float = _field("RPGER_OFFSITE_REMINDER_HOURS", 24.0, gt=0)
    # The Dagster daemon is unhealthy when a required daemon's heartbeat is
    # older than this (it beats every 30 s); alert after the startup grace.
    daemon_heartbeat_tolerance_s: float = _field("RPGER_DAEMON_HEARTBEAT_TOLERANCE_S", 150.0, gt=0)
    daemon_startup_grace_s: float = _field("RPGER_DAEMON_STARTUP_GRACE_S", 180.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """`<NAME>_FILE` wins over `<NAME>`: read the file, strip one trailing newline."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        env = {k.upper(): v for k, v in os.environ.items()}
        for alias in cls.SECRET_ALIASES:
            file_var = alias + "_FILE"
            path = data.pop(file_var, None) or data.pop(file_var.lower(), None) or env.get(file_var)
            if not path:
                continue
            try:
                value = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"{file_var}: cannot read secret file {path}: {exc.strerror}") from None
            data[alias] = value.rstrip("\r\n")
        return data

    @field_validator("mongodb_uri")
    @classmethod
    def _check_mongo_uri(cls, v: SecretStr) -> SecretStr:
        scheme = v.get_secret_value().split("://", 1)[0]
        if scheme not in ("mongodb", "mongodb+srv") or "://" not in v.get_secret_value():
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return v

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, v: SecretStr) -> SecretStr:
        parts = urlsplit(v.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("s3_endpoint")
    @classmethod
    def _check_s3_endpoint(cls, v: str | None) -> str | None:
        if not v:
            return None
        if "://" in v or "/" in v:
            raise ValueError("must be host[:port] without scheme or path (set RPGER_S3_SECURE for TLS)")
        return v

    @field_validator("heartbeat_url", "alert_webhook_url")
    @classmethod
    def _check_optional_url(cls, v: SecretStr | None) -> SecretStr | None:
        # An empty secret file means "not configured" (compose ships empty ones);
        # healthchecks run without the image entrypoint that would unset them.
        if v is None or not v.get_secret_value().strip():
            return None
        if urlsplit(v.get_secret_value().strip()).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return SecretStr(v.get_secret_value().strip())

    @field_validator("backup_cron", "retention_cron")
    @classmethod
    def _check_cron(cls, v: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(v):
            raise ValueError(f"is not a valid cron expression: {v!r}")
        return v

    @model_validator(mode="after")
    def _check_secrets(self) -> Settings:
        for name in ("mongodb_password", "redis_password", "s3_access_key", "s3_secret_key", "chroma_auth_token"):
            value: SecretStr | None = getattr(self, name)
            if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{_alias_of(name)}: is empty or a placeholder; set a real secret")
        if self.s3_endpoint and (self.s3_access_key is None or self.s3_secret_key is None):
            raise ValueError("RPGER_S3_ACCESS_KEY/RPGER_S3_SECRET_KEY: required when RPGER_S3_ENDPOINT is set")
        if self.age_recipients_file is not None and self.set_format < 2:
            # Format 1 archives are never encrypted: refuse rather than write plaintext silently.
            raise ValueError("RPGER_AGE_RECIPIENTS_FILE: encryption needs RPGER_SET_FORMAT=2 (content-addressed sets)")
        return self

    # --- Derived connection parameters -------------------------------------
    def mongo_client_uri(self) -> str:
        """MONGODB_URI with MONGODB_USERNAME/PASSWORD injected when given separately."""
        uri = self.mongodb_uri.get_secret_value()
        if not self.mongodb_username:
            return uri
        parts = urlsplit(uri)
        host = parts.netloc.rsplit("@", 1)[-1]
        password = self.mongodb_password.get_secret_value() if self.mongodb_password else ""
        cred = quote(self.mongodb_username, safe="") + (":" + quote(password, safe="") if password else "")
        query = parts.query
        if "authSource=" not in query:
            query = (query + "&" if query else "") + "authSource=" + quote(self.mongodb_auth_source)
        return urlunsplit((parts.scheme, f"{cred}@{host}", parts.path, query, parts.fragment))

    def redis_client_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "socket_timeout": self.redis_socket_timeout,
            "socket_connect_timeout": self.redis_socket_connect_timeout,
            "retry_on_timeout": self.redis_retry_on_timeout,
        }
        if self.redis_password is not None:
            kw["password"] = self.redis_password.get_secret_value()
        if self.redis_username:
            kw["username"] = self.redis_username
        return kw

    @property
    def offsite_enabled(self) -> bool:
        return bool(self.s3_endpoint)

    @property
    def encryption_enabled(self) -> bool:
        return self.age_recipients_file is not None

    @property
    def blob_key_path(self) -> Path:
        return self.blob_id_key_file or self.backup_dir / "keys" / "blob-id.key"

    def safe_summary(self) -> dict[str, Any]:
        """What may be shown in logs and the UI: no secret values, no credentials in URLs."""
        return {
            "mongodb": _redact_url(self.mongodb_uri.get_secret_value()),
            "mongodb_database": self.mongodb_database,
            "redis": _redact_url(self.redis_url.get_secret_value()),
            "chroma": f"{'https' if self.chroma_ssl else 'http'}://{self.chroma_host}:{self.chroma_port}"
            f" ({self.chroma_tenant}/{self.chroma_database})",
            "backup_dir": str(self.backup_dir),
            "offsite": f"s3://{self.s3_endpoint}/{self.s3_bucket}/{self.s3_prefix}" if self.s3_endpoint else "disabled",
            "heartbeat": "configured" if self.heartbeat_url else "disabled",
        }


def _alias_of(field_name: str) -> str:
    info = Settings.model_fields[field_name]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else field_name.upper()
    return field_name.upper()


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, "***@" + host, parts.path, "", ""))


def load_settings(**overrides: Any) -> Settings:
    """Load settings; raise ConfigError with one line per bad variable, never a value."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
            name = loc[0] if loc else ""
            msg = err.get("msg", "invalid")
            msg = msg.removeprefix("Value error, ")
            if name and name.lower() in Settings.model_fields:
                name = _alias_of(name.lower())
            lines.append(f"{name}: {msg}" if name else msg)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def settings_to_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` (secrets in plain text:
    for child processes and tests only, never for logs)."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[_alias_of(name)] = str(value)
    return env
