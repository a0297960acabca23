"""docker-compose.yml, the Dockerfile and README.md agree with the code.

Docker does not run on this machine, so these tests read the files instead:
the compose services, their wiring, every PRIVACYOPS_ variable they set (a
misspelt one would be ignored silently: Settings has ``extra="ignore"``), the
image's entry point and the stop grace period against the shutdown drain.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "PRIVACYOPS_"
_ENV_NAME = re.compile(r"\bPRIVACYOPS_[A-Z0-9_]+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}


def setting_names() -> set[str]:
    return set(Settings.model_fields)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment``, in either of the two forms compose accepts."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def duration_s(value: str | int | float) -> float:
    """A compose duration (``30s``, ``1m30s``, ``1500ms``) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        raise ValueError(f"not a compose duration: {value!r}")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form arguments of the last ``name`` instruction in the Dockerfile."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    found = [line.split(None, 1)[1] for line in lines if line.upper().startswith(name + " ")]
    assert found, f"Dockerfile has no {name}"
    value = json.loads(found[-1])
    assert isinstance(value, list), f"{name} must use the exec (JSON array) form"
    return [str(v) for v in value]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services"
    return found


def test_both_services_exist(services: dict[str, Any]) -> None:
    assert {"rabbitmq", "workers"} <= set(services)


def test_rabbitmq_has_management_ports_healthcheck_and_volume(services: dict[str, Any]) -> None:
    rabbit = services["rabbitmq"]
    assert rabbit["image"].startswith("rabbitmq:")
    assert "management" in rabbit["image"]
    published = {str(p).split(":")[-1].split("/")[0] for p in rabbit["ports"]}
    assert {"5672", "15672"} <= published
    assert rabbit["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    assert any(str(v).endswith(":/var/lib/rabbitmq") for v in rabbit["volumes"])


def test_workers_build_here_and_wait_for_a_healthy_broker(services: dict[str, Any]) -> None:
    workers = services["workers"]
    build = workers["build"]
    context = build if isinstance(build, str) else build.get("context")
    assert context in (".", "./")
    assert workers["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert workers["restart"] == "unless-stopped"


def test_workers_reach_the_broker_service_and_keep_the_store_on_a_volume(
    services: dict[str, Any],
) -> None:
    workers = services["workers"]
    env = env_of(workers)
    assert env[PREFIX + "AMQP_URL"] == "amqp://guest:guest@rabbitmq:5672/"
    db_path = Path(env[PREFIX + "DB_PATH"])
    assert db_path.parent == Path("/data")
    assert any(str(v).endswith(":/data") for v in workers["volumes"])


def test_every_compose_variable_is_a_setting(services: dict[str, Any]) -> None:
    fields = setting_names()
    for name, service in services.items():
        for key in env_of(service):
            if key.startswith(PREFIX):
                assert key[len(PREFIX) :].lower() in fields, f"{name}: {key} is not a setting"


def test_compose_values_are_valid_settings(services: dict[str, Any]) -> None:
    env = env_of(services["workers"])
    fields = {k[len(PREFIX) :].lower(): v for k, v in env.items() if k.startswith(PREFIX)}
    settings = Settings.model_validate(fields)
    assert str(settings.db_path) == env[PREFIX + "DB_PATH"]


def test_stop_grace_period_exceeds_the_shutdown_drain(services: dict[str, Any]) -> None:
    workers = services["workers"]
    env = env_of(workers)
    configured = env.get(PREFIX + "SHUTDOWN_DRAIN_S")
    drain = float(configured) if configured else Settings().shutdown_drain_s
    assert "stop_grace_period" in workers, "compose's default grace period is 10 s"
    assert duration_s(workers["stop_grace_period"]) > drain


def test_duration_parser() -> None:
    assert duration_s("30s") == 30
    assert duration_s("1m30s") == 90
    assert duration_s("1500ms") == 1.5
    with pytest.raises(ValueError, match="not a compose duration"):
        duration_s("30 seconds")


def test_dockerfile_runs_privacyops_as_installed() -> None:
    assert (ROOT / "Dockerfile").is_file()
    assert dockerfile_instruction("ENTRYPOINT") == ["privacyops"]
    assert dockerfile_instruction("CMD") == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "privacyops" in scripts


def test_dockerfile_runs_as_a_non_root_user_with_the_store_on_data() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "the image must switch to a non-root USER"
    assert users[-1] not in ("root", "0")
    assert re.search(r"^ENV\s+PRIVACYOPS_DB_PATH=/data/\S+", text, re.MULTILINE)
    assert "pip install -e" not in text
    assert "--editable" not in text


def test_every_dockerfile_variable_is_a_setting() -> None:
    fields = setting_names()
    for name in _ENV_NAME.findall((ROOT / "Dockerfile").read_text()):
        assert name[len(PREFIX) :].lower() in fields, f"Dockerfile: {name} is not a setting"


def test_every_readme_variable_is_a_setting() -> None:
    fields = setting_names()
    named = set(_ENV_NAME.findall((ROOT / "README.md").read_text()))
    assert named, "README.md names no PRIVACYOPS_ variable"
    unknown = sorted(n for n in named if n[len(PREFIX) :].lower() not in fields)
    assert not unknown, f"README.md names variables that are not settings: {unknown}"


def test_every_setting_is_documented_in_the_readme() -> None:
    named = set(_ENV_NAME.findall((ROOT / "README.md").read_text()))
    missing = sorted(f for f in setting_names() if PREFIX + f.upper() not in named)
    assert not missing, f"settings missing from README.md: {missing}"


def test_the_postgresql_override_runs_the_workers_on_postgresql() -> None:
    override = yaml.safe_load((ROOT / "docker-compose.postgres.yml").read_text())
    services = override["services"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    workers = services["workers"]
    assert workers["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = env_of(workers)
    unknown = sorted(n for n in env if n[len(PREFIX) :].lower() not in setting_names())
    assert not unknown, f"not settings: {unknown}"
    settings = Settings.model_validate(
        {n[len(PREFIX) :].lower(): v for n, v in env.items() if n.startswith(PREFIX)}
    )
    assert settings.store_url is not None
    assert "--processes" in workers["command"]


#: Settings naming where the service writes (issue 15): each must be under /data.
WRITTEN = ("DB_PATH", "KEY_DIR", "EXPORT_DIR", "NOTIFY_DIR")


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    pairs = re.findall(r"\b(PRIVACYOPS_[A-Z0-9_]+)=(\S+)", text)
    return dict(pairs)


def test_every_path_the_service_writes_is_under_data(services: dict[str, Any]) -> None:
    image = dockerfile_env()
    for name in WRITTEN:
        assert Path(image[PREFIX + name]).is_relative_to("/data"), name
    for service_name, service in services.items():
        env = env_of(service)
        for name in WRITTEN:
            if PREFIX + name in env:
                assert Path(env[PREFIX + name]).is_relative_to("/data"), (service_name, name)
        mounts = [str(v).split(":")[1] for v in service.get("volumes", []) if ":" in str(v)]
        if "build" in service:
            assert all(Path(m).is_relative_to("/data") for m in mounts), service_name


def test_the_image_has_a_healthcheck_and_exposes_ops_console_and_download_ports() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^HEALTHCHECK .*\\\n\s+CMD \[.*/healthz", text, re.MULTILINE)
    exposed = set(re.findall(r"^EXPOSE\s+(.+)$", text, re.MULTILINE)[-1].split())
    defaults = Settings()
    assert {
        str(defaults.metrics_port),
        str(defaults.console_port),
        str(defaults.download_port),
    } <= exposed


def test_compose_runs_the_console_and_an_smtp_sink_with_a_web_inbox(
    services: dict[str, Any],
) -> None:
    console = services["console"]
    assert console["command"] == ["console"]
    published = {str(p).rsplit(":", 1)[-1] for p in console["ports"]}
    assert {"8480", "8481"} <= published
    assert all(str(p).startswith("127.0.0.1:") for p in console["ports"])
    assert env_of(console)[PREFIX + "CONSOLE_HOST"] == "0.0.0.0"
    assert "healthcheck" in console
    mail = services["mailpit"]
    assert mail["image"].startswith("axllent/mailpit")
    assert any(str(p).endswith(":8025") for p in mail["ports"])
    workers = env_of(services["workers"])
    assert workers[PREFIX + "NOTIFY_EMAIL_TRANSPORT"] == "smtp"
    assert workers[PREFIX + "SMTP_HOST"] == "mailpit"
    assert workers[PREFIX + "DOWNLOAD_BASE_URL"] == env_of(console)[PREFIX + "DOWNLOAD_BASE_URL"]
    assert any(str(p).endswith(":9464") for p in services["workers"]["ports"])


def test_the_keys_are_a_mount_of_their_own_never_the_store_volume(
    services: dict[str, Any],
) -> None:
    """Issue 11, D8: in Docker the key directory is its own volume (or secrets mount)."""
    key_dir = dockerfile_env()[PREFIX + "KEY_DIR"]
    db_dir = str(Path(dockerfile_env()[PREFIX + "DB_PATH"]).parent)
    for name, service in services.items():
        if "build" not in service:
            continue
        volumes = [str(v).split(":") for v in service.get("volumes", []) if ":" in str(v)]
        mounts = {target: source for source, target, *_ in volumes}  # target -> volume
        if name == "keys":
            assert key_dir in mounts, name
            continue
        assert mounts.get(key_dir), f"{name}: no mount of its own at {key_dir}"
        assert mounts[key_dir] != mounts.get(db_dir), f"{name}: keys on the store's volume"
