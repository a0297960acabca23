"""Dead letters: per worker, list (masked), show (reveal with a reason), replay or purge.

Every action goes through ``infra/dlq/admin.py``'s ``DeadLetterAdmin``, the same
cycle as ``privacyops dlq`` (nothing lost, order kept), with the admin as the
audit's actor (``admin:<name>``). An admin restricted to tenants sees and moves
only the dead letters of those tenants; one whose tenant cannot be read is for
unrestricted admins only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from infra.console.web import Section, console_of, current, operator, redirect, render
from infra.dlq.admin import DeadLetterAdmin, Verdict
from infra.dlq.cli import view
from infra.dlq.codec import DeadLetter
from infra.redaction import redact_text
from infra.runtime.audit import AUDIT
from messages.errors import RuleViolation, UnknownSubject


def routes(router: web.UrlDispatcher) -> None:
    router.add_get("/deadletters", listing)
    router.add_get("/deadletters/{worker}/{id}", show)
    router.add_post("/deadletters/{worker}/{id}/reveal", reveal)
    router.add_post("/deadletters/{worker}/replay", replay)
    router.add_post("/deadletters/{worker}/purge", purge)


SECTION = Section("Dead letters", "/deadletters", routes)


def workers(request: web.Request) -> list[str]:
    """The dead-letter queues an admin can look at: every worker's and the audit's."""
    console = console_of(request)
    return list(dict.fromkeys([*console.settings.workers, *console.worker_names, AUDIT]))


def _worker(request: web.Request) -> str:
    worker = request.match_info["worker"]
    if worker not in workers(request):
        raise UnknownSubject("no such queue")
    return worker


def _admin(request: web.Request) -> DeadLetterAdmin:
    console = console_of(request)
    actor = current(request).admin.actor
    return DeadLetterAdmin(console.settings, console.opened.store, actor=actor)


def _visible(request: web.Request) -> Callable[[DeadLetter], bool]:
    admin = current(request).admin
    return lambda letter: admin.sees(letter.tenant)


async def listing(request: web.Request) -> web.Response:
    wanted = request.query.get("queue")
    queues: list[dict[str, Any]] = []
    visible = _visible(request)
    now = datetime.now(UTC)
    async with _admin(request) as dlq:
        for worker in workers(request):
            depth = await dlq.depth(worker)
            if depth is None:
                continue
            letters: list[DeadLetter] = []
            if not wanted or wanted == worker:
                await dlq.cycle(worker, _keep(letters, visible))
            queues.append(
                {"worker": worker, "depth": depth, "letters": [x.summary(now) for x in letters]}
            )
    return render(request, "deadletters.html", queues=queues, wanted=wanted)


def _keep(into: list[DeadLetter], wanted: Callable[[DeadLetter], bool]) -> Any:
    async def decide(letter: DeadLetter) -> Verdict:
        if wanted(letter):
            into.append(letter)
        return Verdict.KEEP

    return decide


async def _find(request: web.Request, dlq: DeadLetterAdmin) -> DeadLetter:
    worker, letter_id = _worker(request), request.match_info["id"]
    visible = _visible(request)
    found: list[DeadLetter] = []
    await dlq.cycle(worker, _keep(found, lambda x: x.id == letter_id and visible(x)))
    if not found:
        raise UnknownSubject("no such dead letter")
    return found[0]


async def show(request: web.Request) -> web.Response:
    async with _admin(request) as dlq:
        letter = await _find(request, dlq)
    return _page(request, letter, revealed=False)


def _page(request: web.Request, letter: DeadLetter, *, revealed: bool) -> web.Response:
    shown = json.dumps(view(letter, revealed), indent=2, default=str)
    return render(request, "deadletter.html", letter=letter, shown=shown, revealed=revealed)


async def reveal(request: web.Request) -> web.Response:
    reason = str((await request.post()).get("reason", "")).strip()
    if not reason:
        raise RuleViolation("give a reason to reveal the message (it is audited)")
    async with _admin(request) as dlq:
        letter = await _find(request, dlq)
        await dlq.audit(
            "dlq_revealed",
            letter,
            queue=dlq.names.dlq(letter.worker),
            reason=redact_text(reason[:500]),
        )
    return _page(request, letter, revealed=True)


async def _selected(request: web.Request) -> set[str]:
    operator(request)
    form = await request.post()
    chosen = {str(v) for v in form.getall("id", [])}
    if not chosen:
        raise RuleViolation("select at least one dead letter")
    return chosen


async def replay(request: web.Request) -> web.StreamResponse:
    """Republish the selected dead letters to their worker, then acknowledge them."""
    return await _act(request, Verdict.REPLAY, "replayed")


async def purge(request: web.Request) -> web.StreamResponse:
    """Drop the selected dead letters (each audited)."""
    return await _act(request, Verdict.DROP, "purged")


async def _act(request: web.Request, verdict: Verdict, verb: str) -> web.StreamResponse:
    chosen = await _selected(request)
    worker = _worker(request)
    visible = _visible(request)
    done: list[str] = []

    async def decide(letter: DeadLetter) -> Verdict:
        if letter.id in chosen and visible(letter):
            done.append(letter.id)
            return verdict
        return Verdict.KEEP

    async with _admin(request) as dlq:
        await dlq.cycle(worker, decide)
    raise redirect(f"/deadletters?queue={worker}", f"{len(done)} dead letter(s) {verb}")
