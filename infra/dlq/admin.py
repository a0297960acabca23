"""Dead-letter queues: read, replay, drop and restore messages without losing one.

A queue cannot be read in place, so every operation is one **cycle** over
``ns.<worker>.dlq``: take the depth N at the start, then N times

1. get the head message with manual acknowledgement;
2. decide: *keep* it, *replay* it, or *drop* it (purge);
3. keep: publish a copy to the tail of the same queue; replay: publish it to its
   target; both with publisher confirms and ``mandatory``; drop: nothing to publish;
4. replay and drop: write the operator's audit entry;
5. only then acknowledge the original.

After N steps every kept message is back, in the order it had. Nothing is ever
requeued on purpose: a requeue counts as a redelivery, and on RabbitMQ 4.x the
default delivery limit (20) would drop a dead letter that was read often.

What reading does to order (README "Dead-letter queues"):

* the kept messages keep their order among themselves;
* a message dead-lettered while a cycle runs lands among the messages already
  cycled, not after all of them;
* a crash in the middle leaves the queue rotated (the messages already cycled now
  come after the others) and the message in hand either back at the head
  (not yet copied: the broker returns unacknowledged messages first) or present
  twice (copied, not yet acknowledged). Never lost; a copy has the same message id,
  and the worker's inbox absorbs a double replay.

One cycle per queue at a time: the reader holds an exclusive, auto-deleted queue
``ns.<worker>.dlq.lock`` on its connection; the broker drops it when the
connection ends, crash included.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from config.settings import Settings
from infra import rabbit
from infra.dlq.codec import (
    CARRIED_PROPERTIES,
    H_DEAD_LETTERED_BY,
    H_REPLAYED_AT,
    H_REPLAYED_BY,
    H_REPLAYS,
    DeadLetter,
    Record,
    parse,
)
from infra.headers import BROKER_HEADERS, H_ATTEMPTS
from infra.keys import publisher_secret
from infra.rabbit import BROKER_ERRORS
from infra.runtime.audit import report
from infra.runtime.worker import Effects, commit_effects
from infra.store import Store
from messages import signing
from messages.errors import BrokerUnavailable
from messages.names import Names

log = structlog.get_logger("privacyops.dlq")

ADMIN = "admin"


class Verdict(enum.Enum):
    KEEP = "keep"
    REPLAY = "replay"
    DROP = "drop"


@dataclass(frozen=True)
class Target:
    """Where replays go. Default: back to the worker that dead-lettered each message."""

    kind: str = "worker"  # "worker": ns.internal / <name>; "events": ns.events / <key>
    name: str | None = None  # worker name or routing key; None: the message's own

    @classmethod
    def parse(cls, text: str | None) -> Target:
        """``worker``, ``worker:NAME``, ``events`` (original routing key) or ``events:KEY``."""
        if not text:
            return cls()
        kind, _, name = text.partition(":")
        if kind not in ("worker", "events"):
            raise ValueError("--to: expected worker[:NAME] or events[:ROUTING_KEY]")
        return cls(kind, name or None)

    def route(self, names: Names, letter: DeadLetter) -> tuple[str, str]:
        if self.kind == "events":
            key = self.name or letter.routing_key
            if not key:
                raise ValueError(f"{letter.id}: no original routing key; use --to events:KEY")
            return names.events, key
        return names.internal, self.name or letter.worker


@dataclass
class CycleResult:
    worker: str
    depth: int
    seen: int = 0
    kept: int = 0
    replayed: int = 0
    dropped: int = 0


Decide = Callable[[DeadLetter], Awaitable[Verdict]]


def replay_headers(letter: DeadLetter, operator: str, now: datetime) -> dict[str, Any]:
    """Fresh attempts (the retry tiers apply again), history kept, replay counted."""
    headers = {
        k: v
        for k, v in letter.headers.items()
        if k not in BROKER_HEADERS and k not in (H_ATTEMPTS, H_DEAD_LETTERED_BY)
    }
    headers[H_REPLAYS] = letter.replays + 1
    headers[H_REPLAYED_BY] = operator
    headers[H_REPLAYED_AT] = now.isoformat()
    return headers


class DeadLetterAdmin:
    """An admin's session with the dead-letter queues; every change is audited."""

    def __init__(self, settings: Settings, store: Store, actor: str | None = None) -> None:
        """``actor``: who the audit names; default the operator (``operator:<broker user>``),
        the console passes its logged-in admin (``admin:<name>``)."""
        self.settings = settings
        self.names = Names(settings.namespace)
        self.store = store
        self.actor = actor or f"operator:{settings.operator}"
        self.replayed_by = actor or settings.operator
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._publisher: rabbit.ConfirmedPublisher | None = None

    async def __aenter__(self) -> DeadLetterAdmin:
        s = self.settings
        self._connection = await rabbit.connect_with(s)
        self._channel = await rabbit.open_channel(self._connection, confirms=True)
        self._publisher = rabbit.ConfirmedPublisher(
            self._channel,
            s.publish_timeout_s,
            user_id=rabbit.url_user(s.amqp_url.get_secret_value()),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(*BROKER_ERRORS):
                await connection.close()

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise BrokerUnavailable("dead-letter admin is not connected")
        return self._channel

    # -- depth and lock ------------------------------------------------------------------

    async def depth(self, worker: str) -> int | None:
        """Messages in the worker's DLQ, or None if it does not exist (passive declare)."""
        assert self._connection is not None
        try:
            async with self._connection.channel() as probe:
                queue = await probe.declare_queue(self.names.dlq(worker), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"cannot read queue depth: {type(exc).__name__}") from exc
        return int(queue.declaration_result.message_count or 0)

    @contextlib.asynccontextmanager
    async def _locked(self, worker: str) -> Any:
        assert self._connection is not None
        name = f"{self.names.dlq(worker)}.lock"
        try:
            lock_channel = await self._connection.channel()
            await lock_channel.declare_queue(name, exclusive=True, auto_delete=True)
        except aiormq.exceptions.ChannelLockedResource as exc:
            raise BrokerUnavailable(
                f"{self.names.dlq(worker)} is being read by another admin; try again later"
            ) from exc
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"cannot lock {name}: {type(exc).__name__}") from exc
        try:
            yield
        finally:
            with contextlib.suppress(*BROKER_ERRORS):
                await lock_channel.queue_delete(name)
                await lock_channel.close()

    # -- the cycle -----------------------------------------------------------------------

    async def cycle(self, worker: str, decide: Decide, target: Target | None = None) -> CycleResult:
        """Visit each message present at the start once; see the module docstring."""
        depth = await self.depth(worker)
        result = CycleResult(worker, depth or 0)
        if not depth:
            return result
        async with self._locked(worker):
            queue = await self._get_queue(worker)
            for _ in range(depth):
                raw = await self._get(queue)
                if raw is None:  # taken by someone who ignores the lock: nothing to keep
                    break
                result.seen += 1
                await self._step(worker, raw, decide, target or Target(), result)
        log.info(
            "dlq_cycled",
            queue=self.names.dlq(worker),
            depth=depth,
            kept=result.kept,
            replayed=result.replayed,
            dropped=result.dropped,
        )
        return result

    async def _get_queue(self, worker: str) -> Any:
        try:
            return await self.channel.get_queue(self.names.dlq(worker), ensure=False)
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"cannot open queue: {type(exc).__name__}") from exc

    async def _get(self, queue: Any) -> AbstractIncomingMessage | None:
        try:
            raw: AbstractIncomingMessage | None = await queue.get(
                no_ack=False, fail=False, timeout=self.settings.publish_timeout_s
            )
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"cannot get a dead letter: {type(exc).__name__}") from exc
        return raw

    async def _step(
        self,
        worker: str,
        raw: AbstractIncomingMessage,
        decide: Decide,
        target: Target,
        result: CycleResult,
    ) -> None:
        letter = parse(worker, raw.body, raw.headers or {}, _properties(raw))
        try:
            verdict = await decide(letter)
            if verdict is Verdict.KEEP:
                await self._publish("", self.names.dlq(worker), letter.body, letter.headers, letter)
                result.kept += 1
            elif verdict is Verdict.REPLAY:
                await self._replay(letter, target)
                result.replayed += 1
            else:
                await self.audit("dlq_purged", letter, queue=self.names.dlq(worker))
                result.dropped += 1
        except BaseException:
            # Give it back unacknowledged: nothing was lost, nothing is copied twice.
            with contextlib.suppress(*BROKER_ERRORS):
                await raw.nack(requeue=True)
            raise
        await self._ack(raw)

    async def _replay(self, letter: DeadLetter, target: Target) -> None:
        now = datetime.now(UTC)
        exchange, key = target.route(self.names, letter)
        headers = replay_headers(letter, self.replayed_by, now)
        await self._publish(exchange, key, letter.body, headers, letter)
        await self.audit(
            "dlq_replayed",
            letter,
            queue=self.names.dlq(letter.worker),
            exchange=exchange,
            routing_key=key,
            replays=headers[H_REPLAYS],
            error_type=letter.error_type,
        )

    async def _publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: Mapping[str, Any],
        letter: DeadLetter | Record,
    ) -> None:
        properties = letter.properties
        carried = {k: properties[k] for k in CARRIED_PROPERTIES if properties.get(k) is not None}
        if self._publisher is None:
            raise BrokerUnavailable("dead-letter admin is not connected")
        await self._publisher.publish(
            exchange,
            routing_key,
            body,
            headers={k: v for k, v in headers.items() if k not in BROKER_HEADERS},
            carried=carried,
        )

    @staticmethod
    async def _ack(raw: AbstractIncomingMessage) -> None:
        try:
            await raw.ack()
        except BROKER_ERRORS as exc:
            # The copy is confirmed; the original comes back as a duplicate, never lost.
            raise BrokerUnavailable(f"ack lost: {type(exc).__name__}") from exc

    # -- import and audit ----------------------------------------------------------------

    async def restore(self, record: Record, letter: DeadLetter, resign: bool) -> None:
        """Put an exported dead letter back into its worker's DLQ (this namespace)."""
        headers = dict(letter.headers)
        key = publisher_secret(self.settings)
        if resign and key is not None:
            routing_key = letter.routing_key or ""
            headers.update(
                signing.headers(record.body, routing_key, key.key_id, key.secret, int(time.time()))
            )
        await self._publish("", self.names.dlq(record.worker), record.body, headers, record)
        await self.audit(
            "dlq_imported", letter, queue=self.names.dlq(record.worker), resigned=resign
        )

    async def audit(self, action: str, letter: DeadLetter, **details: Any) -> None:
        """One audit row naming the operator, in the message's tenant (committed now), and
        the same action reported on the broker for the service's audit log
        (``infra/runtime/audit.py``), confirmed first: no report, no action."""
        if self._publisher is None:
            raise BrokerUnavailable("dead-letter admin is not connected")
        report_id = uuid4()
        effects = Effects.standalone(ADMIN, letter.audit_tenant, actor=self.actor)
        effects.message_id = letter.id
        effects.correlation_id = str(report_id)
        effects.audit(action, letter.subject_ref, **details)
        await commit_effects(self.store, None, effects)
        await report(
            self._publisher,
            self.names,
            letter.audit_tenant,
            action,
            letter.subject_ref,
            letter.id,
            report_id=report_id,
            **details,
        )


def _properties(raw: AbstractIncomingMessage) -> dict[str, Any]:
    return {name: getattr(raw, name, None) for name in CARRIED_PROPERTIES}


async def pace(rate: float | None, started: float, count: int) -> None:
    """Sleep so that ``count`` actions since ``started`` do not exceed ``rate`` per second."""
    if not rate:
        return
    due = started + count / rate
    delay = due - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
