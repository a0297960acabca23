"""Notice texts from Jinja2 templates, one pair of files per kind.

``templates/<kind>.txt`` holds three blocks: ``subject``, ``text`` (the plain
e-mail body, framed by ``_base.txt``) and ``sms``; ``templates/<kind>.html``
the HTML body (framed by ``_base.html``, autoescaped). Every notice names the
tenant (POPIA s18(1)(b)); marketing-related kinds add the opt-out line
(POPIA s69(4)(b)). Missing context is an error, never a blank: a breach notice
without its s22(5) parts must not go out (``StrictUndefined``).

SMS: GSM-7 only (other characters are transliterated or replaced by ``?``) and
at most three concatenated segments: 3 x 153 = 459 septets, where the
extension characters (``{}[]~|^\\€``) count two. Longer texts are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape

from config.tenants import Regulator, TenantProfile
from messages.errors import InvalidMessage
from messages.notices import NoticeKind

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

#: Kinds about direct marketing: they carry the opt-out line (POPIA s69(4)).
MARKETING = frozenset({NoticeKind.CONSENT_CONFIRMATION})

#: Context each kind's template needs (others are optional).
REQUIRED: dict[NoticeKind, tuple[str, ...]] = {
    NoticeKind.DSR_RECEIVED: ("request_id", "request_kind", "due_at"),
    NoticeKind.DSR_VERIFICATION_NEEDED: ("request_id", "request_kind"),
    NoticeKind.DSR_EXTENDED: ("request_id", "request_kind", "new_due_at", "reasons"),
    NoticeKind.DSR_COMPLETED: ("request_id", "request_kind", "done"),
    NoticeKind.DSR_REFUSED: ("request_id", "request_kind", "reasons"),
    NoticeKind.DSR_DEEMED_REFUSED: ("request_id", "request_kind", "due_at"),
    NoticeKind.DSR_PACKAGE_READY: ("request_id", "package_token", "expires_at"),
    NoticeKind.RESTRICTION_LIFTING: ("lift_at",),
    NoticeKind.CONSENT_CONFIRMATION: ("channel", "status", "effective_at"),
    NoticeKind.BREACH_NOTICE: ("incident_ref", "consequences", "measures", "subject_actions"),
    NoticeKind.BREACH_UPDATE: ("incident_ref", "update"),
    NoticeKind.CONTACT_CHANGED: ("contact_kind",),
}

#: Optional context: absent means None, so templates can test it under StrictUndefined.
OPTIONAL = (
    "categories",
    "kept",
    "regime",
    "consequences",
    "discovered_at",
    "download_url",
    "how",
    "measures",
    "original_due_at",
    "outcome",
    "purpose",
    "reason",
    "request_id",
    "subject_actions",
    "unauthorised_party",
    "verify_by",
    "may_request_correction",
)

#: Names other workers use for the same facts (workers/dsr): alias -> template name.
ALIASES = (
    ("kind", "request_kind"),
    ("due_on", "due_at"),
    ("due_on", "new_due_at"),
    ("reason", "reasons"),
    ("token", "package_token"),
    ("lift_after", "lift_at"),
)

REQUEST_NAMES = {
    "access": "access to your personal information",
    "rectification": "correction of your personal information",
    "erasure": "deletion of your personal information",
    "restriction": "restriction of the processing of your personal information",
    "objection": "objection to the processing of your personal information",
    "portability": "a portable copy of your personal information",
}

SMS_MAX_SEGMENTS = 3
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = "^{}\\[~]|€\f"
_TRANSLITERATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u00a0": " ",
    }
)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def gsm7(text: str) -> str:
    """Only GSM-7 characters: common typography transliterated, the rest ``?``."""
    text = text.translate(_TRANSLITERATE)
    return "".join(c if c in GSM7_BASIC or c in GSM7_EXTENSION else "?" for c in text)


def septets(text: str) -> int:
    return sum(2 if c in GSM7_EXTENSION else 1 for c in text)


def segments(text: str) -> int:
    """GSM-7 segments: one of 160 septets, or concatenated parts of 153."""
    length = septets(text)
    return 1 if length <= 160 else -(-length // 153)


def _date(value: Any) -> str:
    """An ISO date or time as '15 February 2026' (times in UTC, as stored)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return f"{moment.day} {moment:%B %Y}"


def _items(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


class Renderer:
    """Renders a notice kind for a tenant; raises ``InvalidMessage`` on missing context."""

    def __init__(self, directory: Path = TEMPLATE_DIR) -> None:
        self._env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(["html"], default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._env.filters["date"] = _date
        self._env.filters["items"] = _items
        self._env.globals["request_names"] = REQUEST_NAMES

    def email(
        self, kind: NoticeKind, tenant: TenantProfile, regulator: Regulator, context: dict[str, Any]
    ) -> RenderedEmail:
        values = self._values(kind, tenant, regulator, context)
        try:
            text = self._env.get_template(f"{kind.value}.txt")
            return RenderedEmail(
                subject=" ".join(_block(text, "subject", values).split()),
                text=text.render(values).strip() + "\n",
                html=self._env.get_template(f"{kind.value}.html").render(values),
            )
        except TemplateError as exc:
            raise InvalidMessage(f"context: the {kind.value} template failed: {exc}") from None

    def sms(
        self, kind: NoticeKind, tenant: TenantProfile, regulator: Regulator, context: dict[str, Any]
    ) -> str:
        values = self._values(kind, tenant, regulator, context)
        try:
            raw = _block(self._env.get_template(f"{kind.value}.txt"), "sms", values)
        except TemplateError as exc:
            raise InvalidMessage(f"context: the {kind.value} template failed: {exc}") from None
        text = gsm7(" ".join(raw.split()))
        if segments(text) > SMS_MAX_SEGMENTS:
            raise InvalidMessage(
                f"sms for {kind.value} is {septets(text)} septets, over {SMS_MAX_SEGMENTS} segments"
            )
        return text

    @staticmethod
    def _values(
        kind: NoticeKind, tenant: TenantProfile, regulator: Regulator, context: dict[str, Any]
    ) -> dict[str, Any]:
        context = _with_aliases(kind, context)
        missing = [key for key in REQUIRED[kind] if context.get(key) in (None, "", [])]
        if missing:
            raise InvalidMessage(f"context: {kind.value} needs {', '.join(missing)}")
        return {
            **dict.fromkeys(OPTIONAL),
            **context,
            "kind": kind.value,
            "tenant": tenant,
            "regulator": regulator,
            "marketing": kind in MARKETING,
        }


def _with_aliases(kind: NoticeKind, context: dict[str, Any]) -> dict[str, Any]:
    """Fill a template name from its alias where the template needs it and it is absent."""
    filled = dict(context)
    for alias, name in ALIASES:
        if name in REQUIRED[kind] and filled.get(name) in (None, "", []) and alias in context:
            filled[name] = context[alias]
    return filled


def _block(template: Any, name: str, values: dict[str, Any]) -> str:
    return "".join(template.blocks[name](template.new_context(values)))
