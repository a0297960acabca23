"""One settings object, read from the environment once at start-up.

Every setting has the prefix ``PRIVACYOPS_`` (``PRIVACYOPS_AMQP_URL``, ...);
lists are JSON (``PRIVACYOPS_RETRY_DELAYS_MS='[1000, 10000, 60000]'``).
Nothing else in privacyops reads ``os.environ``: callers build a ``Settings``
and pass it down. Every wait has a finite default here (STYLE 6).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,40}(\.[a-z0-9_-]{1,40})*$")
_OPERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
FingerprintField = Literal["source", "category", "target_system", "target_accounts"]
DEFAULT_FINGERPRINT: tuple[FingerprintField, ...] = ("source", "category", "target_system")


def known_zone(name: str) -> str:
    """An IANA zone name the zone database knows (``Africa/Johannesburg``)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None
    return name


class Settings(BaseSettings):
    """Runtime configuration. Secrets are ``SecretStr`` and never printed."""

    model_config = SettingsConfigDict(env_prefix="PRIVACYOPS_", frozen=True, extra="ignore")

    # Broker
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    amqp_urls: list[SecretStr] = Field(
        default_factory=list,
        description="Every node of a RabbitMQ cluster (JSON list, one broker user): a lost "
        "connection is taken up again on the next address. Unset: amqp_url alone; set "
        "without amqp_url, amqp_url is the first.",
    )
    reconnect_interval_s: float = Field(
        2.0, gt=0, le=60, description="Between attempts to reconnect to the broker."
    )
    namespace: str = Field(
        "privacyops",
        description="Prefix of every exchange and queue name; lets several deployments or "
        "test runs share one broker.",
    )
    prefetch: int = Field(300, ge=1, le=10_000)
    batch_max: int = Field(100, ge=1, le=1_000, description="Messages per transaction.")
    batch_window_ms: int = Field(10, ge=0, le=5_000, description="Wait to fill a batch.")
    retry_delays_ms: list[int] = Field(
        default_factory=lambda: [1_000, 10_000, 60_000],
        description="One TTL retry queue per entry; attempts = len + 1.",
    )
    delivery_limit: int = Field(
        20,
        ge=1,
        description="Quorum-queue redeliveries (crashes) before the broker dead-letters a message.",
    )
    max_body_bytes: int = Field(65_536, ge=256)
    amqp_ca_file: Path | None = Field(
        None, description="CA bundle for amqps:// (TLS to the broker); unset: the system's."
    )
    amqp_cert_file: Path | None = Field(None, description="Client certificate for amqps://.")
    amqp_key_file: Path | None = Field(None, description="Client certificate's key (0600).")

    # Keys and signatures (README "Security model")
    key_dir: Path = Field(
        Path("var/keys"),
        description="Where key files live by default (0700; a secrets mount in Docker).",
    )
    allow_unsigned: bool = Field(
        False,
        description="Development only: `privacyops run` accepts unsigned messages when no "
        "keyring exists. Never set it in production.",
    )
    signing_keys_file: Path | None = Field(
        None, description="Publishers' keyring (JSON, 0600); default <key_dir>/signing-keys.json."
    )
    signing_key_id: str | None = Field(None, description="The key id this process signs with.")
    signing_key: SecretStr | None = Field(None, description="The secret of signing_key_id.")
    publisher_key_file: Path | None = Field(
        None,
        description="JSON {key_id, secret} this process signs with when signing_key is unset; "
        "default <key_dir>/publisher.json.",
    )
    replay_window_s: float = Field(
        300.0,
        gt=0,
        le=7 * 86_400,
        description="A message signed longer ago than this is refused on the events exchange "
        "(an admin replays it through the internal exchange).",
    )
    publisher_users: list[str] = Field(
        default_factory=list,
        description="Broker users allowed to publish on the events exchange (AMQP user_id); "
        "empty: not checked beyond what each key's broker_users says.",
    )
    tenants: list[str] = Field(
        default_factory=list, description="Known tenants; empty admits any well-formed id."
    )

    # Bounded waits (seconds)
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    publish_timeout_s: float = Field(10.0, gt=0, le=300)
    handler_timeout_s: float = Field(30.0, gt=0, le=3_600)
    shutdown_drain_s: float = Field(10.0, gt=0, le=600)

    # Store
    store_url: SecretStr | None = Field(
        None,
        description="postgresql://user@host:5432/db[?search_path=schema] for PostgreSQL; "
        "unset: the embedded SQLite file at db_path.",
    )
    db_pool_size: int = Field(
        4, ge=1, le=100, description="PostgreSQL connections per process (one per transaction)."
    )
    db_path: Path = Path("var/privacyops.db")
    db_busy_timeout_ms: int = Field(5_000, ge=0, le=600_000)
    db_synchronous: Literal["full", "normal"] = Field(
        "full",
        description="full: every commit is fsynced before its messages are acked (survives "
        "power loss); normal: survives a process crash only, faster.",
    )
    db_encryption: Literal["sqlcipher", "none"] = Field(
        "sqlcipher",
        description="sqlcipher: the whole store (tables, indexes, WAL) is encrypted at rest "
        "(AES-256); none: a plain SQLite file.",
    )
    db_key: SecretStr | None = Field(None, description="Store key; else db_key_file.")

    # Data sources: where the platform's personal data lives (config/datamap.toml names one
    # per table). The embedded store (the one above) is always the source "embedded".
    sources: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Named data sources besides the embedded store, as JSON: "
        '{"platform": "postgresql://user:pass@host:5432/db"} or "sqlite:///path/file.db". '
        "Secrets (the URLs carry credentials): only from the environment, never the map.",
    )
    source_pool_size: int = Field(
        2, ge=1, le=50, description="PostgreSQL connections per data source and process."
    )
    source_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Longest wait for one statement on a data source."
    )
    db_key_file: Path | None = Field(None, description="Default <key_dir>/store.key.")

    # Data-subject requests
    datamap_path: Path | None = Field(
        None, description="Data map TOML; default config/datamap.toml."
    )
    retention_path: Path | None = Field(
        None, description="Retention holds TOML; default config/retention.toml."
    )
    export_dir: Path = Path("var/exports")
    export_key: SecretStr | None = Field(
        None,
        description="Fernet keys for export packages, newest first, comma-separated "
        "(MultiFernet rotation); else export_key_file.",
    )
    export_key_file: Path | None = Field(None, description="Default <key_dir>/export.key.")
    digest_key: SecretStr | None = Field(
        None, description="Keys of keyed digests (suppression, audit), newest first; else file."
    )
    digest_key_file: Path | None = Field(None, description="Default <key_dir>/digest.key.")
    notice_key: SecretStr | None = Field(
        None, description="Fernet keys sealing notice secrets in the outbox; else file."
    )
    notice_key_file: Path | None = Field(None, description="Default <key_dir>/notice.key.")
    audit_key: SecretStr | None = Field(
        None,
        description="Ed25519 seeds (32 bytes, url-safe base64) signing audit checkpoints and "
        "bundles, newest first, comma-separated; else audit_key_file.",
    )
    audit_key_file: Path | None = Field(None, description="Default <key_dir>/audit.key.")
    audit_checkpoint_interval_s: float = Field(
        3_600.0,
        gt=0,
        le=7 * 86_400,
        description="Seconds between signed checkpoints of every tenant's audit chain "
        "(made by each service's audit worker, checked every sweep_interval_s).",
    )
    package_ttl_hours: float = Field(168.0, gt=0, le=24 * 90)
    restriction_lift_notice_hours: float = Field(
        72.0, ge=0, le=24 * 60, description="Notice given before a restriction is lifted (s14(8))."
    )
    timezone: str = Field(
        "Africa/Johannesburg",
        description="Zone of the dates the law counts in (receipt, due dates, 'today') for "
        "tenants that name none in the tenants file. South African dates by default.",
    )
    mandatory_purposes: list[str] = Field(
        default_factory=lambda: ["fica_screening", "regulatory_reporting"],
        description="Processing purposes required by legislation: an objection is recorded "
        "but does not stop them (POPIA s11(3)).",
    )

    outbox_poll_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often the outbox relays read their tables for rows committed by "
        "another process (admin commands, cron sweeps) or left by a crash.",
    )
    outbox_batch: int = Field(256, ge=1, le=5_000, description="Publishes in flight per relay.")

    sweep_interval_s: float = Field(
        60.0, gt=0, le=86_400, description="Seconds between periodic sweeps (deadlines, holds)."
    )
    inbox_retention_days: float = Field(
        30.0,
        gt=0,
        le=3_650,
        description="Inbox rows (the dedupe record) and published event rows are deleted this "
        "long after they were written: far longer than any redelivery (retry tiers, replays "
        "of dead letters) may take, or a late copy would be applied again.",
    )
    prune_interval_s: float = Field(
        3_600.0, gt=0, le=86_400, description="Seconds between two prunes of the inbox."
    )

    # Operations
    metrics_port: int = Field(
        9464, ge=0, le=65_535, description="HTTP port of /metrics, /healthz, /readyz; 0 disables."
    )
    #: Loopback by default: the endpoint has no authentication. A container that publishes
    #: the port sets PRIVACYOPS_METRICS_HOST=0.0.0.0 (docker-compose.yml does).
    metrics_host: str = "127.0.0.1"
    dlq_depth_interval_s: float = Field(
        15.0, gt=0, le=3_600, description="Seconds between dead-letter depth refreshes."
    )
    health_timeout_s: float = Field(2.0, gt=0, le=60, description="Bound on a health probe.")

    # The web console and the subject download page (infra/console, workers/console)
    console_host: str = Field(
        "127.0.0.1", description="Console binding; loopback by default (reach it by SSH or VPN)."
    )
    console_port: int = Field(8480, ge=0, le=65_535, description="Console port; 0 picks one.")
    console_session_hours: float = Field(8.0, gt=0, le=24 * 7, description="Login lifetime.")
    console_tls: bool = Field(
        False,
        description="The console is reached over TLS (a proxy in front): cookies are Secure.",
    )
    console_login_attempts: int = Field(
        5, ge=1, le=1_000, description="Failed logins per name and address per 15 minutes."
    )
    download_host: str = Field("127.0.0.1", description="Subject download page binding.")
    download_port: int = Field(8481, ge=0, le=65_535, description="Download page port.")
    download_attempts: int = Field(
        5, ge=1, le=1_000, description="Wrong codes per address per 15 minutes."
    )
    download_base_url: str | None = Field(
        None,
        description="Public URL of the download page (https://privacy.example.co.za); the "
        "package notice links to <url>/download/<tenant>. Unset: the tenant's website.",
    )

    # Notifications (workers/notifier, infra/transports)
    tenants_path: Path | None = Field(
        None,
        description="Tenant identities TOML (sender, SMS id, website); default "
        "config/tenants.toml.",
    )
    notify_email_transport: Literal["file", "smtp"] = "file"
    notify_sms_transport: Literal["file", "http"] = "file"
    notify_dir: Path = Field(Path("var/notices"), description="Where the file channel writes.")
    notify_timeout_s: float = Field(10.0, gt=0, le=120, description="One provider call.")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(587, ge=1, le=65_535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: Path | None = Field(None, description="Extra CA bundle to trust for SMTP TLS.")
    smtp_rate_per_s: float = Field(10.0, gt=0, le=10_000)
    sms_gateway_url: str | None = None
    sms_gateway_token: SecretStr | None = None
    sms_rate_per_s: float = Field(5.0, gt=0, le=10_000)

    # Security incidents (workers/security)
    security_fingerprint: list[FingerprintField] = Field(
        default_factory=lambda: list(DEFAULT_FINGERPRINT),
        min_length=1,
        description="Alert fields that, with the tenant, make an incident's fingerprint.",
    )
    security_window_s: float = Field(
        3_600.0,
        gt=0,
        le=30 * 86_400,
        description="Alerts of one fingerprint this close to an open incident join it.",
    )
    security_oncall_contact: str = Field(
        "security-oncall",
        min_length=1,
        max_length=200,
        description="On-call security contact (pager route or mailbox) told of high and very "
        "high severity incidents.",
    )
    security_report_warn_h: float = Field(
        12.0, ge=0, le=72, description="Flag an unsent regulator report this long before due."
    )

    # Workers and logging
    workers: list[str] = Field(
        default_factory=list,
        description="Workers `privacyops run` starts; empty (the default): every registered "
        "worker. An unknown name is an error.",
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="before")
    @classmethod
    def _first_of_the_cluster(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("amqp_urls") and not data.get("amqp_url"):
            return {**data, "amqp_url": data["amqp_urls"][0]}
        return data

    @model_validator(mode="after")
    def _one_broker_user(self) -> Settings:
        users = {urlsplit(url).username for url in self.broker_urls}
        if len(users) > 1:
            raise ValueError("amqp_url and amqp_urls must name one broker user")
        return self

    @property
    def broker_urls(self) -> list[str]:
        """The broker's addresses, in the order they are tried (amqp_urls, else amqp_url)."""
        return [u.get_secret_value() for u in self.amqp_urls] or [self.amqp_url.get_secret_value()]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("namespace must be lower-case letters, digits, '.', '-', '_'")
        return value

    @field_validator("store_url")
    @classmethod
    def _store_url_is_postgresql(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("store_url must be a postgresql:// URL (SQLite uses db_path)")
        return value

    @field_validator("sources")
    @classmethod
    def _sources_are_named_urls(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """A source's name is an identifier; its URL's scheme says its kind."""
        for name, url in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name) or name == "embedded":
                raise ValueError(f"source name {name!r}: lower-case identifier, not 'embedded'")
            if not url.get_secret_value().startswith(
                ("postgresql://", "postgres://", "sqlite:///")
            ):
                raise ValueError(f"source {name!r}: a postgresql:// or sqlite:/// URL")
        return value

    @field_validator("retry_delays_ms")
    @classmethod
    def _delays_positive(cls, value: list[int]) -> list[int]:
        if any(delay <= 0 for delay in value):
            raise ValueError("retry delays must be positive milliseconds")
        return value

    def with_changes(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed (``model_copy`` would skip validation)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    @property
    def operator(self) -> str:
        """Who an admin command acts as: the broker user of ``amqp_url``.

        Not a free setting: the broker checks that user's password when the command
        connects, and refuses an AMQP ``user_id`` that is not the connection's user, so
        the audit events an admin command publishes name a user the broker authenticated.
        """
        name = unquote(urlsplit(self.amqp_url.get_secret_value()).username or "")
        return name if _OPERATOR.match(name) else "unknown"

    def key_path(self, configured: Path | None, name: str) -> Path:
        """A key file's path: the configured one, else ``key_dir / name``."""
        return configured if configured is not None else self.key_dir / name

    @property
    def max_attempts(self) -> int:
        """Deliveries a message gets before it is dead-lettered."""
        return len(self.retry_delays_ms) + 1
