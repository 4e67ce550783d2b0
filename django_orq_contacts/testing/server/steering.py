"""The steering calls a test makes, shared by the in-process server and the HTTP client.

:class:`FakeOrqServer` and :class:`OrqServerControl` offer the same methods; each only says
how a fault is queued, how settings change and how the requests are read.
"""

from __future__ import annotations

import enum
from typing import Any

from .faults import Fault, FaultKind
from .records import RecordedRequest
from .routes import Mode


class _Unset(enum.Enum):
    """Sentinel type so ``configure()`` can tell "not given" apart from ``None`` (= off)."""

    UNSET = 0


UNSET = _Unset.UNSET


class Steering:
    @property
    def requests(self) -> list[RecordedRequest]:
        raise NotImplementedError

    def _queue_fault(self, fault: Fault) -> Fault:
        raise NotImplementedError

    def _change_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def api_requests(
        self, method: str | None = None, path_contains: str | None = None
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
        ]

    def add_fault(
        self,
        kind: FaultKind,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: str | bytes | None = None,
        seconds: float | None = None,
        times: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        location: str | None = None,
    ) -> Fault:
        """Queue a one-shot fault (repeated ``times`` times) for the next matching requests."""
        fault = Fault(
            kind=kind,
            status=status,
            headers=dict(headers or {}),
            body=body.encode("utf-8") if isinstance(body, str) else body,
            seconds=seconds,
            times=times,
            method=method,
            path_contains=path_contains,
            location=location,
        )
        return self._queue_fault(fault)

    def set_outage(self, status: int | None) -> None:
        """Answer every API request with ``status`` (e.g. 503) until called with None."""
        self.configure(outage=status)

    def configure(
        self,
        *,
        latency: float | _Unset = UNSET,
        jitter: float | _Unset = UNSET,
        mode: Mode | _Unset = UNSET,
        rate_limit: int | _Unset | None = UNSET,
        rate_window: float | _Unset = UNSET,
        outage: int | _Unset | None = UNSET,
    ) -> dict[str, Any]:
        """Change only the settings given; ``rate_limit=None`` / ``outage=None`` switch off."""
        given = {
            "latency": latency,
            "jitter": jitter,
            "mode": mode,
            "rate_limit": rate_limit,
            "rate_window": rate_window,
            "outage": outage,
        }
        return self._change_config({k: v for k, v in given.items() if v is not UNSET})
