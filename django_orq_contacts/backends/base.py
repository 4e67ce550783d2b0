"""The interface every backend implements: what the sync service asks of "Orq"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UpsertResult:
    orq_id: str
    calls: int = 1


class BaseBackend:
    """Create-or-update and delete contacts by external id.

    ``payload`` always has every field of ``payload.FIELDS``; ``known`` says the contact was
    synced before, which lets a backend choose the call that needs no fallback.
    """

    def upsert(self, payload: dict[str, Any], *, known: bool = False) -> UpsertResult:
        raise NotImplementedError

    def delete(self, external_id: str) -> int:
        """Delete the contact (already gone is fine); return the number of calls made."""
        raise NotImplementedError
