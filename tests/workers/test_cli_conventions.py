"""CLI conventions (issue 15, part 4): help and epilog, --version, --json on queries, empty
answers exit 0, library logs as redacted JSON, seed twice doubles nothing."""

from __future__ import annotations

import argparse
import io
import json
import logging

import pytest

from config.settings import Settings
from infra import logging as plog
from tests.support.db import sql
from tests.support.helpers import migrated_store, run_cli
from workers import main
from workers.platform.seed import seed

QUERIES = (
    ("dsr", "list"),
    ("incidents", "list"),
    ("dlq", "list"),
    ("notices",),
    ("consent", "check"),
    ("consent", "may-ask"),
    ("db",),
    ("topology",),
    ("seed",),
    ("admin", "list"),
    ("holds",),
)


def built() -> argparse.ArgumentParser:
    return main.build_parser()


def commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def test_every_option_has_help_and_every_parser_the_exit_codes_and_environment() -> None:
    missing = []
    for path, p in commands(built()):
        assert "exit codes: 0 done" in (p.epilog or ""), path
        assert "PRIVACYOPS_AMQP_URL" in (p.epilog or ""), path
        for action in p._actions:
            skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
            if not isinstance(action, skip) and not action.help:
                missing.append((" ".join(path), action.option_strings or action.dest))
    assert missing == []


def test_every_query_command_takes_json() -> None:
    found = dict(commands(built()))
    for query in QUERIES:
        options = {o for a in found[query]._actions for o in a.option_strings}
        assert "--json" in options, query


@pytest.mark.stores("sqlite")
def test_version(settings: Settings) -> None:
    answer = run_cli(settings, "--version")
    assert answer.returncode == 0
    assert answer.stdout.startswith("privacyops ")


@pytest.mark.stores("sqlite")  # the exit code, not the store
async def test_an_empty_register_is_an_answer(settings: Settings) -> None:
    async with migrated_store(settings):
        pass
    listed = run_cli(settings, "dsr", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_library_logs_are_redacted_json_lines() -> None:
    stream = io.StringIO()
    plog.configure("info", "json", stream)
    try:
        logging.getLogger("aio_pika.robust_connection").warning(
            "Connection attempt to amqp://guest:s3cret@broker/ failed for thandi@example.co.za"
        )
        logging.getLogger("aiormq.connection").debug("chatty frame dump")
    finally:
        plog.configure("info", "json")
    [line] = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "library_log"
    assert event["logger"] == "aio_pika.robust_connection"
    assert event["level"] == "warning"
    assert "s3cret" not in line
    assert "thandi@example.co.za" not in line


async def test_seed_twice_adds_nothing_the_second_time(settings: Settings) -> None:
    async with migrated_store(settings) as store:
        first = await seed(store, ["acme"], 40)
        again = await seed(store, ["acme"], 40)
        more = await seed(store, ["acme"], 45)
    assert first > 0
    assert again == 0
    assert more > 0
    db = settings.db_path
    assert sql(db, "SELECT count(*) FROM debtors") == [(45,)]
    [(contacts,)] = sql(db, "SELECT count(*) FROM contact_points")
    [(distinct,)] = sql(
        db, "SELECT count(*) FROM (SELECT DISTINCT subject_ref, kind FROM contact_points) d"
    )
    assert contacts == distinct
