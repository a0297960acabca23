"""The worker extension point: handlers keyed by message class, declared once."""

from __future__ import annotations

from typing import ClassVar

import pytest

from infra.runtime.worker import Effects, Worker, handles
from messages.consent import ConsentChanged
from messages.dsr import DsrRequested, DsrVerified
from messages.errors import UnknownMessageType
from tests.support.helpers import consent_changed


class Two(Worker):
    name: ClassVar[str] = "two"

    def __init__(self) -> None:
        self.seen: list[str] = []

    @handles(DsrRequested)
    @handles(DsrVerified)
    async def request(self, message: DsrRequested | DsrVerified, effects: Effects) -> None:
        self.seen.append(message.type)

    @handles(ConsentChanged)
    async def consent(self, message: ConsentChanged, effects: Effects) -> None:
        self.seen.append("consent")


def test_types_come_from_the_handlers() -> None:
    assert Two.message_types() == ("consent.changed", "dsr.requested", "dsr.verified")
    assert Two.handlers == {
        DsrRequested: "request",
        DsrVerified: "request",
        ConsentChanged: "consent",
    }


async def test_dispatch_by_class_and_an_unknown_type_is_an_error() -> None:
    worker = Two()
    message = consent_changed()
    await worker.handle(message, Effects(worker="two", message=message, attempt=1))
    assert worker.seen == ["consent"]

    class OnlyRequests(Worker):
        name: ClassVar[str] = "only"

        @handles(DsrRequested)
        async def request(self, message: DsrRequested, effects: Effects) -> None:
            """Handles requests only."""

    with pytest.raises(UnknownMessageType):
        await OnlyRequests().handle(message, Effects(worker="only", message=message, attempt=1))


def test_a_subclass_overrides_by_method_and_two_handlers_for_one_class_fail() -> None:
    class Louder(Two):
        async def consent(self, message: ConsentChanged, effects: Effects) -> None:
            self.seen.append("CONSENT")

    assert Louder.handlers[ConsentChanged] == "consent"
    assert Louder().bound_handlers()[ConsentChanged].__func__ is Louder.consent  # type: ignore[attr-defined]

    with pytest.raises(TypeError, match="two handlers for ConsentChanged"):

        class Twice(Worker):
            name: ClassVar[str] = "twice"

            @handles(ConsentChanged)
            async def one(self, message: ConsentChanged, effects: Effects) -> None:
                """First."""

            @handles(ConsentChanged)
            async def other(self, message: ConsentChanged, effects: Effects) -> None:
                """Second."""
