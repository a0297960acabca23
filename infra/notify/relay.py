"""Notice relay: the transactional outbox of ``notification_outbox``, drained to the notifier.

Workers write a notice in the same transaction as the effect that causes it
(``Effects.notify``), in this process or another one sharing the store. This
relay polls committed rows in ``queued`` state (every ``notice_poll_s``, at most
``notice_relay_batch`` at once), publishes each as a ``notice.send`` message on
the internal exchange, routing key ``notifier``, with publisher confirms and
``mandatory``, then marks it ``relayed``.

It runs inside the process that runs the notifier worker (started by the
worker's ``open``), so notices wait in the table until a notifier runs, and the
demo (``privacyops run`` with the notifier configured) needs nothing else.

Crash windows:

* commit of the notice, crash before publish: the row stays ``queued``; the
  next relay publishes it. Nothing is lost.
* publish confirmed, crash before the row is marked: the next relay publishes
  it again with the same message_id (= notice_id). The notifier's inbox, and
  its ``sent`` state keyed by notice_id, absorb the copy: sent once.
* two notifier processes on one store: both relays may publish a row; same as
  above. The notifier's claim lease keeps the copies from sending in parallel.

Marking uses ``AND status = 'queued'``: a notifier fast enough to have moved the
row on already (sending, sent) is never set back to ``relayed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from config.settings import Settings
from infra.errors import PrivacyOpsError, PublishRejected
from infra.notify import ledger
from infra.rabbit import ConfirmedPublisher
from infra.redaction import describe_error
from infra.runtime import SIGNATURE_HEADER, sign
from infra.store import Row, SqliteStore
from infra.topology import Names
from messages.notices import NoticeSend
from messages.registry import encode

log = structlog.get_logger("privacyops.notify.relay")

#: The notifier worker's name: its queue and its routing key on the internal exchange.
NOTIFIER = "notifier"

QUEUED = (
    "SELECT notice_id, tenant_id, subject_ref, kind, channel, context, cause_message_id,"
    " created_at FROM notification_outbox WHERE status = 'queued' ORDER BY created_at LIMIT ?"
)
MARK = (
    "UPDATE notification_outbox SET status = ? WHERE tenant_id = ? AND notice_id = ?"
    " AND status = 'queued'"
)


class NoticeRelay:
    """Polls ``notification_outbox`` and publishes queued notices to the notifier."""

    def __init__(
        self, store: SqliteStore, publisher: ConfirmedPublisher, names: Names, settings: Settings
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._exchange = names.internal
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.relayed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notice-relay")

    def poke(self) -> None:
        """Poll now instead of at the next period (tests, admin commands)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = self._settings.notice_poll_s
        while True:
            try:
                count = await self.relay_once()
            except PrivacyOpsError as exc:
                log.warning(
                    "notice_relay_failed",
                    error_type=exc.code,
                    error=describe_error(exc),
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self._settings.notice_poll_s
            if count < self._settings.notice_relay_batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=backoff)

    async def relay_once(self) -> int:
        """Publish one batch of queued notices; return how many rows were handled."""
        async with self._store.transaction() as tx:
            rows = await tx.fetchall(QUEUED, (self._settings.notice_relay_batch,))
        if not rows:
            return 0
        built = [(row, _build(row)) for row in rows]
        results = await asyncio.gather(
            *(self._publish(message) for _, message in built if message is not None),
            return_exceptions=True,
        )
        outcomes = iter(results)
        marks: list[tuple[str, str, str]] = []
        first_error: BaseException | None = None
        for row, message in built:
            if message is None:
                marks.append(("failed", row[1], row[0]))
                continue
            result = next(outcomes)
            if result is None:
                marks.append(("relayed", row[1], row[0]))
            elif first_error is None:
                first_error = result
        if marks:
            now = datetime.now(UTC).isoformat()
            async with self._store.transaction() as tx:
                tx.stage_all((MARK, mark) for mark in marks)
                tx.stage_all(
                    (ledger.INVALID, (notice_id, tenant, now))
                    for status, tenant, notice_id in marks
                    if status == "failed"
                )
        relayed = sum(1 for status, _, _ in marks if status == "relayed")
        self.relayed += relayed
        if relayed:
            log.info("notices_relayed", count=relayed)
        if first_error is not None:
            raise first_error
        return len(rows)

    async def _publish(self, message: NoticeSend) -> None:
        body = encode(message)
        headers: dict[str, Any] = {}
        key = self._settings.signing_key
        if key is not None:
            headers[SIGNATURE_HEADER] = sign(body, key.get_secret_value())
        try:
            await self._publisher.publish(
                self._exchange,
                NOTIFIER,
                body,
                message_id=str(message.message_id),
                correlation_id=message.correlation_id,
                headers=headers,
            )
        except PublishRejected:
            raise PublishRejected(
                "no notifier queue is declared on the internal exchange"
            ) from None


def _build(row: Row) -> NoticeSend | None:
    """The message for one outbox row; None (and a log event) for a row no notice can fit."""
    notice_id, tenant_id, subject_ref, kind, channel, context, cause, created_at = row
    try:
        return NoticeSend.model_validate(
            {
                "message_id": notice_id,
                "tenant_id": tenant_id,
                "occurred_at": datetime.fromisoformat(created_at).astimezone(UTC),
                "correlation_id": cause,
                "payload": {
                    "notice_id": notice_id,
                    "subject_ref": subject_ref,
                    "kind": kind,
                    "channel": channel,
                    "context": json.loads(context),
                },
            }
        )
    except (ValidationError, ValueError) as exc:
        fields = sorted(
            {".".join(map(str, e["loc"])) for e in exc.errors()}
            if isinstance(exc, ValidationError)
            else {"context"}
        )
        log.error("notice_invalid", notice_id=notice_id, kind=kind, fields=fields)
        return None
