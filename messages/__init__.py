"""The wire contract of privacyops: one envelope, one module per message family.

Upstream systems publish these messages; workers decode them in one place
(``messages.registry.decode``). Every model is frozen and forbids extra fields.
"""

from messages.consent import ConsentChanged, ConsentUpdated
from messages.envelope import Envelope
from messages.registry import MESSAGE_TYPES, decode, encode

__all__ = ["MESSAGE_TYPES", "ConsentChanged", "ConsentUpdated", "Envelope", "decode", "encode"]
