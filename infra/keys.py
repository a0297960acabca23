"""The keys privacyops holds at rest, one per purpose, each rotatable.

| purpose | setting (else file in ``key_dir``) | used for |
|---|---|---|
| export | ``export_key`` / ``export.key`` | Fernet: access and portability packages |
| digest | ``digest_key`` / ``digest.key`` | HMAC-SHA256: suppression entries, audit value digests |
| notice | ``notice_key`` / ``notice.key`` | Fernet: sealed notice context in the outbox |
| audit  | ``audit_key`` / ``audit.key`` | Ed25519: audit checkpoints and export bundles |
| store  | ``db_key`` / ``store.key`` | SQLCipher: the whole store |

The keys are configured apart (not derived from one secret), so a leak of one
(an export key handed to a support engineer) says nothing of the others. A key
file holds one key per line, newest first; files missing at first use are
created (``config.secrets``: atomic, 0600, directory 0700) and refused later if
anyone but the owner may read them.

Rotation: put a new key on the first line. Fernet purposes use ``MultiFernet``:
the first key encrypts, every key decrypts, and ``rotate`` re-encrypts a token
under the first key (``privacyops keys rotate-exports``). Digests are lookup
keys: the first key makes new digests and every key is tried on lookup
(``Digester.all``), so old entries keep matching until they expire. The store
key is rotated with ``privacyops db rekey``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr

from config.keyring import Keyring, load_keyring
from config.secrets import create_secret, load_or_create, read_secret
from config.settings import Settings
from messages.errors import RuleViolation


def _lines(secret: SecretStr | None, path: Path, generate: bytes) -> list[bytes]:
    if secret is not None:
        raw = secret.get_secret_value().replace(",", "\n").encode()
    else:
        raw = load_or_create(path, lambda: generate)
    keys = [line.strip() for line in raw.splitlines() if line.strip()]
    if not keys:
        raise ValueError(f"no key in {path}")
    return keys


def _fernet(keys: list[bytes], what: str) -> MultiFernet:
    try:
        return MultiFernet([Fernet(k) for k in keys])
    except ValueError:
        raise ValueError(f"the {what} key is not a Fernet key (32 url-safe base64 bytes)") from None


_UNREADABLE = "sealed data cannot be decrypted with the configured keys"


class Sealer:
    """Encrypts small secrets (a download code, an address) with a rotatable Fernet key."""

    def __init__(self, fernet: MultiFernet) -> None:
        self._fernet = fernet

    def seal(self, data: bytes) -> str:
        return self._fernet.encrypt(data).decode("ascii")

    def open(self, token: str | bytes) -> bytes:
        raw = token.encode("ascii") if isinstance(token, str) else token
        try:
            return self._fernet.decrypt(raw)
        except InvalidToken:
            raise RuleViolation(
                "sealed data cannot be decrypted with the configured keys"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """The same plaintext under the newest key (MultiFernet.rotate)."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise RuleViolation(
                "sealed data cannot be decrypted with the configured keys"
            ) from None


class Digester:
    """Keyed digests (HMAC-SHA256): the first key writes, every key is tried on lookup."""

    def __init__(self, keys: list[bytes]) -> None:
        self._keys = keys

    @property
    def key(self) -> bytes:
        return self._keys[0]

    def digest(self, value: str) -> str:
        return hmac.new(self._keys[0], value.encode(), hashlib.sha256).hexdigest()

    def all(self, value: str) -> list[str]:
        return [hmac.new(k, value.encode(), hashlib.sha256).hexdigest() for k in self._keys]


class AuditSigner:
    """Ed25519 signatures on audit checkpoints and bundles (issue 16).

    The first key signs; every key's public half verifies (rotation: a new seed on the
    first line, the old ones kept while their checkpoints matter). Asymmetric so that
    a third party checks a bundle with the public key alone (``privacyops audit
    public-key``), and cannot make one.
    """

    def __init__(self, seeds: list[bytes]) -> None:
        self._keys = [Ed25519PrivateKey.from_private_bytes(seed) for seed in seeds]
        self.public_keys: dict[str, bytes] = {}
        for key in self._keys:
            public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            self.public_keys[hashlib.sha256(public).hexdigest()[:16]] = public
        self.key_id = next(iter(self.public_keys))

    @property
    def public_key(self) -> bytes:
        """The signing key's public half (raw, 32 bytes)."""
        return self.public_keys[self.key_id]

    def sign(self, payload: bytes) -> str:
        return self._keys[0].sign(payload).hex()


def _seeds(lines: list[bytes]) -> list[bytes]:
    seeds = []
    for line in lines:
        try:
            seed = base64.urlsafe_b64decode(line)
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise ValueError("an audit key must be 32 bytes, url-safe base64")
        seeds.append(seed)
    return seeds


@dataclass(frozen=True)
class Keys:
    """Every key of one process, loaded once from the settings."""

    export: Sealer
    digest: Digester
    notice: Sealer
    audit: AuditSigner

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        s = settings
        export = _lines(s.export_key, s.key_path(s.export_key_file, "export.key"), _new_fernet())
        digest = _lines(s.digest_key, s.key_path(s.digest_key_file, "digest.key"), _new_raw())
        notice = _lines(s.notice_key, s.key_path(s.notice_key_file, "notice.key"), _new_fernet())
        audit = _lines(s.audit_key, s.key_path(s.audit_key_file, "audit.key"), _new_raw())
        return cls(
            export=Sealer(_fernet(export, "export")),
            digest=Digester(digest),
            notice=Sealer(_fernet(notice, "notice")),
            audit=AuditSigner(_seeds(audit)),
        )


def store_key(settings: Settings) -> bytes | None:
    """The SQLCipher key (32 bytes), or None for a plain store."""
    if settings.db_encryption == "none":
        return None
    s = settings
    (line, *_) = _lines(s.db_key, s.key_path(s.db_key_file, "store.key"), _new_raw())
    try:
        key = base64.urlsafe_b64decode(line)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError("the store key must be 32 bytes, url-safe base64")
    return key


def _new_fernet() -> bytes:
    return Fernet.generate_key() + b"\n"


def _new_raw() -> bytes:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)) + b"\n"


def signing_keyring(settings: Settings) -> Keyring | None:
    """The publishers' keyring the workers verify against, or None when there is none."""
    path = settings.key_path(settings.signing_keys_file, "signing-keys.json")
    if settings.signing_keys_file is None and not path.exists():
        return None
    return load_keyring(path)


@dataclass(frozen=True)
class PublisherSecret:
    """The key this process signs with (an upstream publisher, ``dlq import --sign``)."""

    key_id: str
    secret: str = field(repr=False)


def publisher_secret(settings: Settings) -> PublisherSecret | None:
    """``signing_key_id``/``signing_key``, else ``<key_dir>/publisher.json``, else None."""
    if settings.signing_key is not None:
        return PublisherSecret(
            settings.signing_key_id or "default", settings.signing_key.get_secret_value()
        )
    path = settings.key_path(settings.publisher_key_file, "publisher.json")
    if settings.publisher_key_file is None and not path.exists():
        return None
    try:
        data = json.loads(read_secret(path))
        return PublisherSecret(str(data["key_id"]), str(data["secret"]))
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"publisher key {path}: expected JSON {{key_id, secret}}") from None


def create_dev_keys(settings: Settings) -> list[Path]:
    """Development keys under ``key_dir`` (the quick start): a keyring with one key that may
    send anything, and the publisher file signing with it. Existing files are kept."""
    keyring = settings.key_path(settings.signing_keys_file, "signing-keys.json")
    publisher = settings.key_path(settings.publisher_key_file, "publisher.json")
    created = []
    if not keyring.exists():
        secret = secrets.token_urlsafe(32)
        entry = {
            "key_id": "dev",
            "secret": secret,
            "tenants": ["*"],
            "types": ["*"],
            "may_assert_verification": True,
        }
        if create_secret(keyring, json.dumps({"keys": [entry]}, indent=2).encode()):
            created.append(keyring)
        if create_secret(publisher, json.dumps({"key_id": "dev", "secret": secret}).encode()):
            created.append(publisher)
    Keys.from_settings(settings)
    store_key(settings)
    return created
