"""The ``/__orq__/`` control API: its endpoints, and :class:`OrqServerControl`, its client.

A test steers a server that runs in another process (e.g. next to a Celery worker) through
these endpoints; they bypass auth, faults, the rate limit and recording.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlencode

from .faults import Fault
from .records import RecordedRequest
from .steering import Steering
from .wire import CONTROL_PREFIX, Answer, json_answer, json_bytes

if TYPE_CHECKING:
    from .app import FakeOrqServer


def answer_control(orq: FakeOrqServer, method: str, path: str, query: str, body: bytes) -> Answer:
    """The ``/__orq__/`` endpoints: no auth, faults, rate limit or recording."""
    name = path[len(CONTROL_PREFIX) :].strip("/")
    params = parse_qs(query)
    try:
        data = json.loads(body) if body.strip() else {}
        if method == "GET" and name == "contacts":
            resource = params.get("resource", ["contacts"])[0]
            return json_answer(200, orq.contacts(resource))
        if method == "GET" and name == "requests":
            return json_answer(200, [r.to_dict() for r in orq.requests])
        if method == "DELETE" and name == "requests":
            orq.clear_requests()
            return json_answer(200, {})
        if method == "POST" and name == "reset":
            orq.reset()
            return json_answer(200, {})
        if method == "GET" and name == "config":
            return json_answer(200, orq.config())
        if method == "POST" and name == "config":
            if not isinstance(data, dict):
                raise ValueError("config must be a JSON object")
            unknown = set(data) - set(orq._defaults)
            if unknown:
                raise ValueError(f"unknown config keys: {sorted(unknown)}")
            return json_answer(200, orq._change_config(data))
        if method == "GET" and name == "faults":
            return json_answer(200, orq._pending_faults())
        if method == "POST" and name == "faults":
            if not isinstance(data, dict):
                raise ValueError("a fault must be a JSON object")
            return json_answer(200, orq._queue_fault(Fault.from_dict(data)).to_dict())
        if method == "DELETE" and name == "faults":
            orq.clear_faults()
            return json_answer(200, {})
        if method == "GET" and name == "stats":
            stats = orq.stats()
            stats["by_status"] = {str(k): v for k, v in stats["by_status"].items()}
            return json_answer(200, stats)
    except (ValueError, TypeError, KeyError) as exc:
        return json_answer(400, {"error": str(exc)})
    return json_answer(404, {"error": f"No control endpoint {method} {path}"})


class OrqServerControl(Steering):
    """Drive a fake server (maybe in another process) through its ``/__orq__/`` API.

    Method names mirror :class:`FakeOrqServer`. Uses urllib so it needs nothing installed.
    """

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        # Ignore *_proxy environment variables: the server is on loopback and a corporate
        # proxy setting must not swallow control calls.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(
        self, method: str, name: str, payload: Any = None, query: dict[str, str] | None = None
    ) -> Any:
        url = f"{self.url}{CONTROL_PREFIX}{name}"
        if query:
            url += "?" + urlencode(query)
        data = None if payload is None else json_bytes(payload)
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with self._opener.open(request, timeout=self.timeout) as response:
            return json.loads(response.read() or b"null")

    def wait_until_ready(self, timeout: float = 10.0) -> OrqServerControl:
        """Poll until the server answers, e.g. right after starting it as a subprocess."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "stats")
                return self
            except (TimeoutError, urllib.error.URLError, ConnectionError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def contacts(self, resource: str = "contacts") -> list[dict[str, Any]]:
        return cast(
            list[dict[str, Any]], self._call("GET", "contacts", query={"resource": resource})
        )

    def contact(self, external_id: str, resource: str = "contacts") -> dict[str, Any] | None:
        for record in self.contacts(resource):
            if record["external_id"] == external_id:
                return record
        return None

    @property
    def requests(self) -> list[RecordedRequest]:
        return [RecordedRequest.from_dict(d) for d in self._call("GET", "requests")]

    def clear_requests(self) -> None:
        self._call("DELETE", "requests")

    def reset(self) -> None:
        self._call("POST", "reset")

    def _queue_fault(self, fault: Fault) -> Fault:
        return Fault.from_dict(self._call("POST", "faults", fault.to_dict()))

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def _change_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("POST", "config", changes))

    def config(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("GET", "config"))

    def stats(self) -> dict[str, Any]:
        stats = cast(dict[str, Any], self._call("GET", "stats"))
        stats["by_status"] = {int(k): v for k, v in stats["by_status"].items()}
        return stats
