"""RecordedRequest: one API request as the fake server saw it, and what it answered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as the server saw it, and what it answered.

    ``status`` is 0 when the connection was closed without an answer (a ``close`` fault).
    ``fault`` names the fault applied, if any; ``rejected`` is true when that fault replaced
    the normal answer (``status``, ``close``, ``redirect``), so the store was not touched.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    time: float
    fault: str | None = None
    rejected: bool = False

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (HTTP header names are not case-sensitive)."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None

    def json(self) -> Any:
        """The request body decoded as JSON."""
        return json.loads(self.body)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form, used by the control API."""
        return {
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "body": self.body.decode("utf-8", errors="replace"),
            "status": self.status,
            "time": self.time,
            "fault": self.fault,
            "rejected": self.rejected,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordedRequest:
        return cls(
            method=str(data["method"]),
            path=str(data["path"]),
            headers={str(k): str(v) for k, v in dict(data["headers"]).items()},
            body=str(data["body"]).encode("utf-8"),
            status=int(data["status"]),
            time=float(data["time"]),
            fault=None if data.get("fault") is None else str(data["fault"]),
            rejected=bool(data.get("rejected", False)),
        )
