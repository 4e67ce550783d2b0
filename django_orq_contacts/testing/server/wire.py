"""What goes on the wire: answers ready to write, JSON encoding and each resource's errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

CONTROL_PREFIX = "/__orq__/"
RESOURCES = ("contacts", "identities")


@dataclass
class Answer:
    """A response ready to be written: status, extra headers and the encoded body."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "application/json"


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def json_answer(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Answer:
    return Answer(status, json_bytes(obj), list(headers or []))


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def singular(resource: str) -> str:
    return "Contact" if resource == "contacts" else "Identity"


def error(resource: str, status: int, message: str, *, message_key: bool = False) -> Answer:
    """An error in the shape each resource uses on the wire.

    Contacts answer ``{"error": ...}`` except PATCH, which answers ``{"message": ...}``;
    identities always answer ``{"message", "code", "details"}``.
    """
    if resource == "identities":
        return json_answer(status, {"message": message, "code": status, "details": []})
    if message_key:
        return json_answer(status, {"message": message})
    return json_answer(status, {"error": message})
