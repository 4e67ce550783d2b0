"""A backend that does nothing and reports success (switching sync off per environment)."""

from __future__ import annotations

from typing import Any

from .base import BaseBackend, UpsertResult


class DummyBackend(BaseBackend):
    def upsert(self, payload: dict[str, Any], *, known: bool = False) -> UpsertResult:
        return UpsertResult(orq_id="", calls=0)

    def delete(self, external_id: str) -> int:
        return 0
