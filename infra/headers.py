"""The AMQP headers privacyops sets and reads, named in one place.

Failure headers are set by the runtime when it republishes a failed message to a
retry tier or the dead-letter queue; replay headers by ``privacyops dlq replay``.
None of them ever holds personal data (texts are redacted, see infra/redaction.py).
"""

from __future__ import annotations

SIGNATURE = "x-privacyops-signature"

H_ATTEMPTS = "x-privacyops-attempts"
H_ERROR_TYPE = "x-privacyops-error-type"
H_ERROR = "x-privacyops-error"
H_FIRST_FAILURE = "x-privacyops-first-failure"
H_LAST_FAILURE = "x-privacyops-last-failure"
H_WORKER = "x-privacyops-worker"
H_ROUTING_KEY = "x-privacyops-routing-key"

#: Set by the broker on delivery or dead-lettering; never copied onto a message we publish
#: (since 4.0 the broker ignores a client's x-death anyway).
BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)
