"""``privacyops dlq``: inspect, replay, purge, export and import dead letters.

    privacyops dlq list    [filters] [--json]
    privacyops dlq show    ID [--queue W] [--reveal [--reason TEXT]] [--json]
    privacyops dlq replay  [ID ...] [filters] [--all] [--dry-run] [--rate N] [--to T] [--json]
    privacyops dlq purge   [ID ...] [filters] [--all] [--yes] [--export FILE]
    privacyops dlq export  FILE [ID ...] [filters]
    privacyops dlq import  FILE [--sign]

Filters: --queue WORKER (repeatable; default every known worker), --type T (glob),
--error E (error type, or words of the error text), --tenant T, --since 2h|ISO.
Exit codes: 0 done (``list`` also when nothing matched), 1 nothing matched (``show``,
``replay``, ``purge``, ``export``, ``import``), 2 bad usage.

Every command that moves a message or shows personal data writes one audit entry
per message, actor ``operator:<broker user>`` (the user of ``PRIVACYOPS_AMQP_URL``,
authenticated by the broker), in the message's tenant, and reports the same action
on the broker (``admin.action``) for the service's audit log. ``show --reveal``
needs ``--reason``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from config.settings import Settings
from infra import progress
from infra.cli import App, Handler, SubParsers
from infra.dlq.admin import DeadLetterAdmin, Decide, Target, Verdict, pace
from infra.dlq.codec import (
    DeadLetter,
    Selection,
    from_record,
    mask_body,
    mask_headers,
    parse,
    parse_since,
    reveal_body,
    to_jsonable,
    to_record,
)
from infra.redaction import redact_text
from infra.runtime.audit import AUDIT

EXIT_OK, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2
QUEUE_HELP = "a worker's dead-letter queue (repeatable; default: every worker's)"


def register(sub: SubParsers) -> None:
    dlq = sub.add_parser("dlq", help="dead-letter queues: list, show, replay, purge...")
    actions = dlq.add_subparsers(dest="dlq_action", required=True)
    listing = actions.add_parser("list", help="depths and messages, order kept")
    _filters(listing, ids=False)
    listing.set_defaults(handler=_run(_list))
    show = actions.add_parser("show", help="one message, personal data masked")
    show.add_argument("id", help="the dead letter's message id")
    show.add_argument("--queue", action="append", dest="queues", metavar="WORKER", help=QUEUE_HELP)
    show.add_argument("--reveal", action="store_true", help="unmasked; writes an audit entry")
    show.add_argument("--reason", help="why the body is revealed (required with --reveal; audited)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(handler=_run(_show))
    replay = actions.add_parser("replay", help="republish, then acknowledge the dead letter")
    _filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    replay.add_argument("--rate", type=_positive, metavar="N", help="at most N per second")
    replay.add_argument(
        "--to", metavar="TARGET", help="worker[:NAME] (default) or events[:ROUTING_KEY]"
    )
    replay.set_defaults(handler=_run(_replay))
    purge = actions.add_parser("purge", help="drop dead letters (asks first)")
    _filters(purge)
    purge.add_argument("--yes", action="store_true", help="do not ask")
    purge.add_argument("--export", type=Path, metavar="FILE", help="write them here first")
    purge.set_defaults(handler=_run(_purge))
    export = actions.add_parser("export", help="write dead letters to JSON Lines, keep them")
    export.add_argument("file", type=Path, help="a new JSON Lines file (created 0600)")
    _filters(export)
    export.set_defaults(handler=_run(_export))
    restore = actions.add_parser("import", help="put exported dead letters back in their DLQ")
    restore.add_argument("file", type=Path, help="a file written by dlq export")
    restore.add_argument(
        "--sign", action="store_true", help="re-sign bodies with the signing key (edited bodies)"
    )
    restore.add_argument("--json", action="store_true", help="print the summary as JSON")
    restore.set_defaults(handler=_run(_import))


def _filters(parser: argparse.ArgumentParser, ids: bool = True) -> None:
    if ids:
        parser.add_argument("ids", nargs="*", metavar="ID", help="message ids to act on")
        parser.add_argument("--all", action="store_true", help="every dead letter")
    parser.add_argument(
        "--queue", action="append", dest="queues", metavar="WORKER", help=QUEUE_HELP
    )
    parser.add_argument("--type", help="message type, a glob (consent.*)")
    parser.add_argument("--error", help="error type, or words of the (masked) error text")
    parser.add_argument("--tenant", help="the message's tenant")
    parser.add_argument("--since", help="dead since: a duration (30m, 2h, 7d) or an ISO time")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


Command = Callable[[argparse.Namespace, "Context"], Any]


def _run(command: Command) -> Handler:
    def handler(args: argparse.Namespace, app: App) -> int:
        return asyncio.run(_session(command, args, app))

    return handler


async def _session(command: Command, args: argparse.Namespace, app: App) -> int:
    async with app.session() as opened, DeadLetterAdmin(app.settings, opened.store) as admin:
        workers = _workers(args, app)
        ctx = Context(args, app.settings, admin, workers, _selection(args))
        code: int = await command(args, ctx)
        return code


@dataclass
class Context:
    args: argparse.Namespace
    settings: Settings
    admin: DeadLetterAdmin
    workers: list[str]
    selection: Selection
    out: IO[str] = field(default_factory=lambda: sys.stdout)

    def print(self, *parts: Any) -> None:
        print(*parts, file=self.out)


def _workers(args: argparse.Namespace, app: App) -> list[str]:
    """``--queue`` names (worker or full DLQ name); default: every known worker."""
    given = getattr(args, "queues", None)
    if given:
        prefix, suffix = f"{app.settings.namespace}.", ".dlq"
        names = [q.removeprefix(prefix).removesuffix(suffix) for q in given]
        return list(dict.fromkeys(names))
    # and the runtime's audit consumer (a forged admin.action is dead-lettered there)
    return list(dict.fromkeys([*app.settings.workers, *app.worker_names, AUDIT]))


def _selection(args: argparse.Namespace) -> Selection:
    since = getattr(args, "since", None)
    return Selection(
        ids=frozenset(getattr(args, "ids", None) or ()),
        type=getattr(args, "type", None),
        error=getattr(args, "error", None),
        tenant=getattr(args, "tenant", None),
        since=parse_since(since, datetime.now(UTC)) if since else None,
    )


def _require_selection(ctx: Context) -> None:
    if ctx.selection.everything and not ctx.args.all:
        raise ValueError("name message ids, give a filter, or say --all")


# -- list and show ------------------------------------------------------------------------


async def _list(args: argparse.Namespace, ctx: Context) -> int:
    matched: list[DeadLetter] = []
    depths: list[dict[str, Any]] = []
    for worker in ctx.workers:
        depth = await ctx.admin.depth(worker)
        if depth is None:
            continue
        depths.append({"queue": ctx.admin.names.dlq(worker), "worker": worker, "depth": depth})
        await ctx.admin.cycle(worker, collect(ctx.selection, matched))
    now = datetime.now(UTC)
    rows = [letter.summary(now) for letter in matched]
    if args.json:
        ctx.print(json.dumps({"queues": depths, "messages": rows, "matched": len(rows)}))
    else:
        _print_table(ctx, depths, rows)
    return EXIT_OK  # a query: an empty answer is an answer


def collect(selection: Selection, into: list[DeadLetter]) -> Callable[[DeadLetter], Any]:
    async def decide(letter: DeadLetter) -> Verdict:
        if selection.matches(letter):
            into.append(letter)
        return Verdict.KEEP

    return decide


def _print_table(ctx: Context, depths: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    ctx.print(f"{'QUEUE':<48} DEPTH")
    for q in depths:
        ctx.print(f"{q['queue']:<48} {q['depth']}")
    if not rows:
        ctx.print("\nno dead letter matched")
        return
    ctx.print(
        f"\n{'ID':<36} {'QUEUE':<12} {'TYPE':<22} {'TENANT':<12} {'ERROR':<20} ATT REP AGE"
        "   AMQP MESSAGE ID"
    )
    for r in rows:
        ctx.print(
            f"{r['id']:<36} {r['queue']:<12} {r['type'] or '-':<22} {r['tenant'] or '-':<12} "
            f"{r['error_type']:<20} {r['attempts']:>3} {r['replays']:>3} {_age(r['age_s']):>5} "
            f"{r['amqp_message_id'] or '-'}"
        )
    ctx.print(f"\n{len(rows)} message(s) matched")


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


async def _show(args: argparse.Namespace, ctx: Context) -> int:
    if args.reveal and not (args.reason or "").strip():
        raise ValueError("--reveal needs --reason (kept in the audit entry)")
    found: list[DeadLetter] = []
    wanted = Selection(ids=frozenset([args.id]))
    for worker in ctx.workers:
        await ctx.admin.cycle(worker, collect(wanted, found))
    if not found:
        print(f"privacyops: no dead letter with id {args.id}", file=sys.stderr)
        return EXIT_NOTHING
    if args.reveal:
        reason = redact_text(args.reason)
        for letter in found:  # audited before anything is shown
            await ctx.admin.audit(
                "dlq_revealed", letter, queue=ctx.admin.names.dlq(letter.worker), reason=reason
            )
    for shown in [view(letter, args.reveal) for letter in found]:
        ctx.print(json.dumps(shown, indent=None if args.json else 2, default=str))
    return EXIT_OK


def view(letter: DeadLetter, reveal: bool) -> dict[str, Any]:
    """A dead letter for an admin's eyes: masked unless ``reveal`` (the console shows the same)."""
    view = letter.summary(datetime.now(UTC))
    view.update(
        first_failure=letter.first_failure.isoformat() if letter.first_failure else None,
        routing_key=letter.routing_key,
        properties=to_jsonable(letter.properties),
        headers=to_jsonable(letter.raw_headers) if reveal else mask_headers(letter.raw_headers),
        body=reveal_body(letter.body) if reveal else mask_body(letter.body),
        masked=not reveal,
    )
    if reveal:
        view.update(type=letter.type, tenant=letter.tenant)
    return view


# -- replay and purge ---------------------------------------------------------------------


async def _replay(args: argparse.Namespace, ctx: Context) -> int:
    _require_selection(ctx)
    target = Target.parse(args.to)
    chosen: list[DeadLetter] = []
    started = asyncio.get_running_loop().time()

    async def decide(letter: DeadLetter) -> Verdict:
        if not (args.all or ctx.selection.matches(letter)):
            return Verdict.KEEP
        chosen.append(letter)
        if args.dry_run:
            return Verdict.KEEP
        await pace(args.rate, started, len(chosen) - 1)
        return Verdict.REPLAY

    totals = []
    with progress.bar("replaying", await _depth(ctx)) as advance:
        for worker in ctx.workers:
            result = await ctx.admin.cycle(worker, _counting(decide, advance), target)
            totals.append({"queue": ctx.admin.names.dlq(worker), "replayed": result.replayed})
    _report(ctx, "would replay" if args.dry_run else "replayed", chosen, totals)
    return EXIT_OK if chosen else EXIT_NOTHING


def _counting(decide: Decide, advance: progress.Advance) -> Decide:
    """``decide``, moving the progress bar one step per dead letter seen."""

    async def counted(letter: DeadLetter) -> Verdict:
        advance(1)
        return await decide(letter)

    return counted


async def _depth(ctx: Context) -> int:
    """Dead letters in the selected queues now: the length of a cycle over them all."""
    return sum([await ctx.admin.depth(worker) or 0 for worker in ctx.workers])


def _report(
    ctx: Context, verb: str, letters: list[DeadLetter], totals: list[dict[str, Any]]
) -> None:
    if ctx.args.json:
        now = datetime.now(UTC)
        ctx.print(json.dumps({verb.replace(" ", "_"): [x.summary(now) for x in letters]}))
        return
    for letter in letters:
        ctx.print(f"{verb} {letter.id} ({letter.worker}, {letter.error_type})")
    ctx.print(f"{len(letters)} message(s) {verb}")


async def _purge(args: argparse.Namespace, ctx: Context) -> int:
    _require_selection(ctx)
    if not args.yes and not _confirmed(ctx):
        return EXIT_USAGE if not sys.stdin.isatty() else EXIT_NOTHING
    export = _open_export(args.export) if args.export else None
    chosen: list[DeadLetter] = []

    async def decide(letter: DeadLetter) -> Verdict:
        if not (args.all or ctx.selection.matches(letter)):
            return Verdict.KEEP
        if export is not None:
            _write_durably(export, letter)
            await ctx.admin.audit("dlq_exported", letter, queue=ctx.admin.names.dlq(letter.worker))
        chosen.append(letter)
        return Verdict.DROP

    try:
        for worker in ctx.workers:
            await ctx.admin.cycle(worker, decide)
    finally:
        if export is not None:
            export.close()
    _report(ctx, "purged", chosen, [])
    return EXIT_OK if chosen else EXIT_NOTHING


def _confirmed(ctx: Context) -> bool:
    """Ask on a terminal; without one (scripts, pipes) refuse: they must say --yes."""
    if not sys.stdin.isatty():
        print("privacyops: refusing to purge without --yes (no terminal to ask)", file=sys.stderr)
        return False
    queues = ", ".join(ctx.admin.names.dlq(w) for w in ctx.workers)
    answer = input(f"purge the selected dead letters from {queues}? type 'purge' to confirm: ")
    if answer.strip() != "purge":
        print("nothing purged", file=sys.stderr)
        return False
    return True


# -- export and import --------------------------------------------------------------------


def _open_export(path: Path) -> IO[str]:
    """A new file only readable by its owner: it holds personal data."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ValueError(f"{path} exists; export to a new file") from None
    return os.fdopen(fd, "w", encoding="utf-8")


def _write_durably(out: IO[str], letter: DeadLetter) -> None:
    """Written and on disk before the message may be acknowledged away."""
    out.write(to_record(letter) + "\n")
    out.flush()
    os.fsync(out.fileno())


async def _export(args: argparse.Namespace, ctx: Context) -> int:
    out = _open_export(args.file)
    chosen: list[DeadLetter] = []

    async def decide(letter: DeadLetter) -> Verdict:
        if ctx.selection.matches(letter):
            out.write(to_record(letter) + "\n")
            await ctx.admin.audit("dlq_exported", letter, queue=ctx.admin.names.dlq(letter.worker))
            chosen.append(letter)
        return Verdict.KEEP

    try:
        with progress.bar("exporting", await _depth(ctx)) as advance:
            for worker in ctx.workers:
                await ctx.admin.cycle(worker, _counting(decide, advance))
    finally:
        out.close()
    if not chosen:
        args.file.unlink()
    _report(ctx, "exported", chosen, [])
    return EXIT_OK if chosen else EXIT_NOTHING


async def _import(args: argparse.Namespace, ctx: Context) -> int:
    lines = args.file.read_text(encoding="utf-8").splitlines()
    records = [from_record(line, n) for n, line in enumerate(lines, 1) if line.strip()]
    restored: list[DeadLetter] = []
    with progress.bar("importing", len(records)) as advance:
        for record in records:
            letter = parse(record.worker, record.body, record.headers, record.properties)
            await ctx.admin.restore(record, letter, resign=args.sign)
            restored.append(letter)
            advance(1)
    _report(ctx, "imported", restored, [])
    return EXIT_OK if restored else EXIT_NOTHING
