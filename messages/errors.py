"""The one error hierarchy of privacyops.

It lives beside the wire contract because its codes are part of it: the
``code`` of an error is what an admin reads in a dead-letter header
(``x-privacyops-error-type``) and what the metrics count, and the decoder
(``messages.registry.decode``) raises the first three permanent errors below.
Every layer above (infra, workers) raises and catches these; none defines its own.

The runtime decides what happens to a message from the branch alone: a
``RetryableError`` goes through the retry tiers, a ``PermanentError`` goes
straight to the dead-letter queue. Third-party exceptions (aio-pika, aiormq,
sqlite3) are translated into these at the edge, in ``infra/``, chained with
``from exc``. Messages of these errors never carry personal data: they name
fields, types and opaque references, never values.

    PrivacyOpsError
    ├── RetryableError              try again later
    │   ├── BrokerUnavailable       connection lost, publish not confirmed in time
    │   ├── StoreUnavailable        database locked, busy or unreachable
    │   ├── HandlerTimeout          a handler ran past its deadline
    │   ├── PublishNacked           the broker nacked a publish (e.g. queue full)
    │   ├── NotYetKnown             refers to something not yet recorded (out of order)
    │   └── ProviderUnavailable     a notification provider is down
    └── PermanentError              the same message will fail the same way
        ├── UndecodableMessage      not UTF-8 JSON
        ├── OversizedMessage        body larger than the configured limit
        ├── SignatureInvalid        missing, forged, unknown-key or stale signature
        ├── Unauthorized            signed, but the key (or broker user) may not send this
        ├── UnknownMessageType      no model for this type and version
        ├── InvalidMessage          the model rejects the fields
        ├── UnknownSubject          no such subject for this tenant
        ├── RuleViolation           the message asks for something a rule forbids
        ├── StoreRejected           the store refused a write (constraint violated)
        ├── StoreOutOfDate          the store's schema is behind (or ahead of) the code
        ├── HandlerCrashed          an unexpected exception: a bug, never retried blindly
        ├── PublishRejected         no queue is bound for a publish (unroutable)
        ├── ProviderRejected        a notification provider refused a notice for good
        └── NoContact               the subject has no contact point for the channel
"""

from __future__ import annotations


class PrivacyOpsError(Exception):
    """Base of every error privacyops raises on purpose."""

    #: Short stable name that goes into dead-letter headers and metrics.
    code = "error"


class RetryableError(PrivacyOpsError):
    """A failure that may pass if the same message is tried again later."""

    code = "retryable"


class PermanentError(PrivacyOpsError):
    """A failure that will repeat for the same message: dead-letter it."""

    code = "permanent"


class BrokerUnavailable(RetryableError):
    code = "broker_unavailable"


class StoreUnavailable(RetryableError):
    code = "store_unavailable"


class HandlerTimeout(RetryableError):
    code = "handler_timeout"


class ProviderUnavailable(RetryableError):
    code = "provider_unavailable"


class PublishNacked(RetryableError):
    code = "publish_nacked"


class NotYetKnown(RetryableError):
    """A follow-up arrived before what it refers to; it may be known on a later try."""

    code = "not_yet_known"


class UndecodableMessage(PermanentError):
    code = "undecodable"


class OversizedMessage(PermanentError):
    code = "oversized"


class SignatureInvalid(PermanentError):
    code = "signature_invalid"


class Unauthorized(PermanentError):
    """The signature is good but its key may not send this tenant, type or assertion,
    or the broker user that published it is not the key's."""

    code = "unauthorized"


class UnknownMessageType(PermanentError):
    code = "unknown_type"


class InvalidMessage(PermanentError):
    code = "invalid"


class UnknownSubject(PermanentError):
    code = "unknown_subject"


class RuleViolation(PermanentError):
    code = "rule_violated"


class StoreRejected(PermanentError):
    code = "store_rejected"


class StoreOutOfDate(PermanentError):
    """The store's schema version differs from the code's: migrate first (``privacyops db``)."""

    code = "store_out_of_date"


class HandlerCrashed(PermanentError):
    """Wraps an exception outside this hierarchy; its text is redacted by the runtime."""

    code = "handler_crashed"


class PublishRejected(PermanentError):
    """The broker returned a mandatory publish: no queue is bound for its routing key."""

    code = "unroutable"


class ProviderRejected(PermanentError):
    """An e-mail or SMS provider refused a notice (SMTP 5xx, HTTP 4xx, invalid address).

    The text names the provider's status code, never the address.
    """

    code = "provider_rejected"


class NoContact(PermanentError):
    """The subject has no contact point for the notice's channel."""

    code = "no_contact"
