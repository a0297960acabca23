"""JSON Schemas and the AsyncAPI 3 document, generated from the models.

``privacyops schema`` writes them to ``docs/``; a test regenerates them and
fails when the committed copies are stale, so the published contract cannot
drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from messages.names import Names
from messages.registry import MESSAGE_TYPES

ASYNCAPI_VERSION = "3.0.0"
CONTRACT_VERSION = "1.0.0"


def json_schemas() -> dict[str, dict[str, Any]]:
    """One standalone JSON Schema per message type."""
    return {
        name: model.model_json_schema(mode="validation")
        for name, (model, _) in sorted(MESSAGE_TYPES.items())
    }


def _channel_id(message_type: str) -> str:
    return message_type.replace(".", "_")


def asyncapi(namespace: str = "privacyops") -> dict[str, Any]:
    """The AsyncAPI 3 document: one channel per message type, schemas in components."""
    names = Names(namespace)
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for _, (model, _) in sorted(MESSAGE_TYPES.items())
    ]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, (model, publisher) in sorted(MESSAGE_TYPES.items()):
        cid = _channel_id(name)
        inbound = publisher == "upstream"
        internal = publisher == "internal"
        exchange = names.events if inbound else names.outbound
        if internal:
            exchange = names.internal
        messages[model.__name__] = {
            "name": name,
            "title": model.__name__,
            "summary": (model.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        }
        channels[cid] = {
            "address": name,
            "description": (
                f"Routing key {name!r} on the direct exchange {exchange!r} "
                "(internal: privacyops publishes and consumes it)."
                if internal
                else f"Routing key {name!r} on the topic exchange {exchange!r}."
            ),
            "messages": {model.__name__: {"$ref": f"#/components/messages/{model.__name__}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "direct" if internal else "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[f"{'receive' if inbound else 'send'}_{cid}"] = {
            "action": "receive" if inbound else "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": (
                "Upstream systems publish; privacyops consumes."
                if inbound
                else "privacyops publishes to its own worker (internal)."
                if internal
                else "privacyops publishes for downstream systems."
            ),
            "messages": [{"$ref": f"#/channels/{cid}/messages/{model.__name__}"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "privacyops message contract",
            "version": CONTRACT_VERSION,
            "description": "Messages exchanged with privacyops over RabbitMQ. Every message is "
            "an envelope (message_id, type, version, tenant_id, occurred_at, correlation_id, "
            "payload) published with publisher confirms and mandatory routing.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {"host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0-9-1"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": defs.get("$defs", {})},
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write(out_dir: Path) -> list[Path]:
    """Write ``asyncapi.json`` and ``schemas/<type>.json`` under ``out_dir``."""
    written = []
    schema_dir = out_dir / "schemas"
    schema_dir.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        path = schema_dir / f"{name}.json"
        path.write_text(render(schema))
        written.append(path)
    path = out_dir / "asyncapi.json"
    path.write_text(render(asyncapi()))
    written.append(path)
    return written
