"""A backend that keeps contacts in memory, for testing a project without the network.

Like Django's ``mail.outbox``: every call is appended to ``django_orq_contacts.outbox``.
``fail_next(error)`` makes the next call(s) raise, to test how a project copes with failures.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import django_orq_contacts

from .base import BaseBackend, UpsertResult

_lock = threading.Lock()
_failures: list[BaseException] = []


@dataclass
class OutboxEntry:
    action: str  # "upsert" or "delete"
    external_id: str
    payload: dict[str, Any] = field(default_factory=dict)


def get_outbox() -> list[OutboxEntry]:
    outbox: list[OutboxEntry] | None = getattr(django_orq_contacts, "outbox", None)
    if outbox is None:
        outbox = []
        django_orq_contacts.outbox = outbox  # type: ignore[attr-defined]
    return outbox


def fail_next(error: BaseException, times: int = 1) -> None:
    """Make the next ``times`` calls of any locmem backend raise ``error``."""
    with _lock:
        _failures.extend([error] * times)


def reset() -> None:
    """Empty the outbox and forget pending failures."""
    with _lock:
        _failures.clear()
    get_outbox().clear()


def _maybe_fail() -> None:
    with _lock:
        error = _failures.pop(0) if _failures else None
    if error is not None:
        raise error


class LocmemBackend(BaseBackend):
    def upsert(self, payload: dict[str, Any], *, known: bool = False) -> UpsertResult:
        _maybe_fail()
        get_outbox().append(OutboxEntry("upsert", payload["external_id"], dict(payload)))
        return UpsertResult(orq_id=f"locmem-{payload['external_id']}")

    def delete(self, external_id: str) -> int:
        _maybe_fail()
        get_outbox().append(OutboxEntry("delete", external_id))
        return 1
