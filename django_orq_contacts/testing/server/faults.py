"""Misbehaviour on demand: one-shot fault specs, their answers, and the rate-limit window."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from .wire import Answer, json_answer, phrase

FaultKind = Literal["status", "delay", "trickle", "close", "redirect"]
FAULT_KINDS: tuple[str, ...] = ("status", "delay", "trickle", "close", "redirect")
# Where a redirect fault points by default: a loopback address nothing listens on, so a client
# that wrongly follows it fails fast instead of reaching a real host.
DEFAULT_REDIRECT_HOST = "http://127.0.0.2:9"


@dataclass
class Fault:
    """A misbehaviour applied to the next ``times`` requests that match the filters."""

    kind: FaultKind
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    seconds: float | None = None
    times: int = 1
    method: str | None = None
    path_contains: str | None = None
    location: str | None = None

    def __post_init__(self) -> None:
        # Fail when the fault is queued, not later inside a handler thread where the error
        # would only show up as a puzzling answer.
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.kind == "status" and self.status is None:
            raise ValueError("a 'status' fault needs status=<code>")
        if self.times < 1:
            raise ValueError("times must be at least 1")
        if self.seconds is not None and self.seconds < 0:
            raise ValueError("seconds must not be negative")

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "headers": dict(self.headers),
            "body": None if self.body is None else self.body.decode("utf-8", errors="replace"),
            "seconds": self.seconds,
            "times": self.times,
            "method": self.method,
            "path_contains": self.path_contains,
            "location": self.location,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        kind = data.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        body = data.get("body")
        seconds = data.get("seconds")
        status = data.get("status")
        return cls(
            kind=cast(FaultKind, kind),
            status=None if status is None else int(status),
            headers={str(k): str(v) for k, v in dict(data.get("headers") or {}).items()},
            body=None if body is None else str(body).encode("utf-8"),
            seconds=None if seconds is None else float(seconds),
            times=int(data.get("times", 1)),
            method=data.get("method"),
            path_contains=data.get("path_contains"),
            location=data.get("location"),
        )


def fault_answer(fault: Fault, path: str) -> Answer:
    """What a ``status`` or ``redirect`` fault sends instead of the normal answer."""
    if fault.kind == "redirect":
        location = fault.location or DEFAULT_REDIRECT_HOST + path
        answer = json_answer(fault.status or 302, {"error": "Found"}, [("Location", location)])
    else:
        status = cast(int, fault.status)
        answer = json_answer(status, {"error": phrase(status)})
    if fault.body is not None:
        answer.body = fault.body
        # Raw bodies are usually an HTML error page from a proxy or cut-off JSON.
        answer.content_type = (
            "text/html; charset=utf-8"
            if fault.body.lstrip().startswith(b"<")
            else "application/json"
        )
    for name, value in fault.headers.items():
        if name.lower() == "content-type":
            answer.content_type = value
        else:
            answer.headers.append((name, value))
    return answer


class RateWindow:
    """The server-side rate limit: a rolling window of admitted calls across all clients.

    Not thread-safe on its own; the server calls it under its lock.
    """

    def __init__(self) -> None:
        self.calls: deque[float] = deque()

    def clear(self) -> None:
        self.calls.clear()

    def admit(self, limit: int, window: float) -> tuple[bool, list[tuple[str, str]]]:
        """(allowed, headers to send) for one more call under ``limit`` per ``window`` s."""
        now = time.monotonic()
        while self.calls and self.calls[0] <= now - window:
            self.calls.popleft()
        if len(self.calls) >= limit:
            wait = self.calls[0] + window - now
            retry_after = max(1, math.ceil(wait))
            return False, [
                ("Retry-After", str(retry_after)),
                ("X-RateLimit-Limit", str(limit)),
                ("X-RateLimit-Remaining", "0"),
                # Unix time at which a call is allowed again.
                ("X-RateLimit-Reset", str(math.ceil(time.time() + wait))),
            ]
        self.calls.append(now)
        return True, [
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", str(limit - len(self.calls))),
        ]
