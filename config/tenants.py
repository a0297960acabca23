"""Tenant identities for notices, loaded from TOML (data, not code).

Every notice names the tenant that sends it (POPIA s18(1)(b): the identity of
the responsible party; s69(4)(a): the sender's identity on direct marketing),
so each tenant that notifies subjects has a profile in ``config/tenants.toml``
(or the file named by the ``tenants_path`` setting). The ``[regulator]``
table holds the Information Regulator's contact details, named in every
refusal (POPIA s23-25 read with s74: the right to complain).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from config.settings import Settings, known_zone

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_PATH = CONFIG_DIR / "tenants.toml"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TenantProfile(_Model):
    """How a tenant appears in its notices."""

    display_name: str = Field(min_length=1)
    sender_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
    sms_sender_id: str = Field(
        pattern=r"^[A-Za-z0-9 ]{1,11}$", description="Alphanumeric sender id, at most 11."
    )
    website: str
    privacy_contact: str = Field(description="The information officer's contact (POPIA s55).")
    opt_out: str = Field(description="How to opt out of marketing (POPIA s69(4)(b)).")
    sms_opt_out: str = Field("Reply STOP to opt out", max_length=40)
    package_review: bool = Field(
        False,
        description="Access packages wait for an admin's approval in the console before the "
        "subject's code opens them.",
    )
    timezone: str | None = Field(
        None,
        description="Zone of the tenant's legal dates (receipt, due dates); default: the "
        "timezone setting (Africa/Johannesburg).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return known_zone(value) if value is not None else None

    @property
    def sender_domain(self) -> str:
        return self.sender_email.rsplit("@", 1)[1]


class Regulator(_Model):
    """Where a subject may complain (POPIA s74)."""

    name: str = "Information Regulator (South Africa)"
    email: str
    website: str
    address: str


class TenantDirectory(_Model):
    regulator: Regulator
    tenants: dict[str, TenantProfile]

    def profile(self, tenant_id: str) -> TenantProfile | None:
        return self.tenants.get(tenant_id)

    def zone(self, tenant_id: str, default: str) -> ZoneInfo:
        """The zone a tenant's legal dates are counted in (docs/rules.md "Deadlines")."""
        profile = self.tenants.get(tenant_id)
        return ZoneInfo(profile.timezone if profile and profile.timezone else default)


def load(path: Path) -> TenantDirectory:
    """Read and validate the tenants file; a bad file fails loudly with the field named."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read tenants file {path}: {type(exc).__name__}") from exc
    try:
        return TenantDirectory.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(map(str, first["loc"]))
        raise ValueError(f"tenants file {path}: {where}: {first['msg']}") from None


def from_settings(settings: Settings) -> TenantDirectory:
    return load(settings.tenants_path or DEFAULT_PATH)
