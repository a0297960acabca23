"""The audit trail that proves itself (issue 16): a hash chain per tenant over ``audit_log``.

* ``chain``: the canonical encoding and the hashes (pure), and the store hook that
  links every audit row as it is written, in the effect's own transaction;
* ``tables``: the ``audit_chain`` component's migrations and statements;
* ``checkpoints``: signed chain heads (Ed25519, the ``audit`` key), published as
  ``audit.checkpoint`` events through the event outbox;
* ``verify``: walks a tenant's chain and names the first broken row;
* ``bundle``: the export bundle for a third party and its offline verification;
* ``cli``: ``privacyops audit verify|checkpoint|export|verify-bundle|prune|public-key``.

The rules, with their tests: docs/rules.md "Audit trail".

Why: POPIA s19(1) (integrity of personal information: reasonable technical measures
against unlawful alteration) and s17 (documentation of processing); GDPR art 5(2)
(accountability) and art 30. Audit rows hold opaque references and keyed digests only,
never personal data, so erasure (POPIA s24) never needs to touch the chain.

Kept light: the store imports ``chain`` while it is itself being imported.
"""
