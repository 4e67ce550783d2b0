"""``paused()``: suspend auto-sync for the current thread or task only.

A context variable rather than disconnecting the receivers: a disconnect is process-wide and
would silently drop the saves of every other request served by the same process meanwhile.
"""

from __future__ import annotations

from contextlib import ContextDecorator
from contextvars import ContextVar
from typing import Any

_state: ContextVar[str | None] = ContextVar("orq_contacts_paused", default=None)

PAUSE = "pause"
DISCARD = "discard"


def is_paused() -> bool:
    return _state.get() is not None


def discarding() -> bool:
    return _state.get() == DISCARD


class paused(ContextDecorator):
    """Suspend auto-sync in this context.

    Saves made meanwhile are left pending for the sweeper (or ``orq_sync_contacts
    --pending``); with ``discard=True`` they are not recorded at all.
    """

    def __init__(self, discard: bool = False) -> None:
        self.mode = DISCARD if discard else PAUSE
        self._tokens: list[Any] = []

    def _recreate_cm(self) -> paused:
        # As a decorator, each call gets its own instance: calls may overlap across threads.
        return type(self)(discard=self.mode == DISCARD)

    def __enter__(self) -> paused:
        self._tokens.append(_state.set(self.mode))
        return self

    def __exit__(self, *exc: object) -> None:
        _state.reset(self._tokens.pop())
