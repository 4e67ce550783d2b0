"""A backend that prints each call to stdout instead of sending it (development)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from .base import BaseBackend, UpsertResult


class ConsoleBackend(BaseBackend):
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def upsert(self, payload: dict[str, Any], *, known: bool = False) -> UpsertResult:
        self.stream.write(f"orq upsert {json.dumps(payload, ensure_ascii=False)}\n")
        self.stream.flush()
        return UpsertResult(orq_id=f"console-{payload['external_id']}")

    def delete(self, external_id: str) -> int:
        self.stream.write(f"orq delete {json.dumps(external_id)}\n")
        self.stream.flush()
        return 1
