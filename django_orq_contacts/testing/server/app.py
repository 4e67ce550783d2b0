"""FakeOrqServer: the stand-in server's state, settings and lifecycle."""

from __future__ import annotations

import copy
import random
import threading
import time
from types import TracebackType
from typing import Any

from .faults import Fault, RateWindow
from .handler import HTTPServer
from .records import RecordedRequest
from .routes import ContactsApi, Mode
from .steering import Steering
from .wire import Answer, json_answer, phrase


class FakeOrqServer(Steering):
    """A real HTTP server on loopback that behaves like the Orq contacts API.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with FakeOrqServer(api_key="test-key") as orq:
            settings.ORQ_CONTACTS = {"API_KEY": "test-key", "BASE_URL": orq.url}
            ...
            assert orq.contact("42")["email"] == "ada@example.com"
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        jitter: float = 0.0,
        mode: Mode = "upsert",
        rate_limit: int | None = None,
        rate_window: float = 60.0,
    ) -> None:
        if mode not in ("upsert", "create_only"):
            raise ValueError("mode must be 'upsert' or 'create_only'")
        self.api_key = api_key
        # reset() returns to these, so a server started with e.g. --rate-limit keeps it.
        self._defaults: dict[str, Any] = {
            "latency": float(latency),
            "jitter": float(jitter),
            "mode": mode,
            "rate_limit": rate_limit,
            "rate_window": float(rate_window),
            "outage": None,
        }
        self._lock = threading.Lock()
        self._api = ContactsApi(self._lock)
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._window = RateWindow()
        self._rate_limited = 0
        self._in_flight = 0
        # Bumped by reset(): requests that arrived earlier and are still being answered
        # neither touch nor get recorded into the next test's state.
        self._generation = 0
        self._max_in_flight = 0
        # Current settings; the handler threads read them without the lock (single loads).
        self.latency = 0.0
        self.jitter = 0.0
        self.mode: Mode = "upsert"
        self.rate_limit: int | None = None
        self.rate_window = 60.0
        self.outage: int | None = None
        self._apply_config(self._defaults)
        # Bind now so ``url`` is known before start() (port=0 picks a free port).
        self._httpd = HTTPServer((host, port), self)
        bound_host, bound_port = self._httpd.server_address[:2]
        self.host = str(bound_host)
        self.port = int(bound_port)
        self.url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeOrqServer:
        """Serve in a daemon thread; returns self so ``FakeOrqServer().start()`` reads well."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-orq-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeOrqServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------------------------

    def contacts(self, resource: str = "contacts") -> list[dict[str, Any]]:
        """Copies of the stored contacts (or identities), oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._api.store(resource).by_id.values()))

    def contact(self, external_id: str, resource: str = "contacts") -> dict[str, Any] | None:
        with self._lock:
            store = self._api.store(resource)
            record_id = store.id_by_external.get(external_id)
            return None if record_id is None else copy.deepcopy(store.by_id[record_id])

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded API requests, in the order their answers finished."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._rate_limited = 0

    def stats(self) -> dict[str, Any]:
        """Counts over the recorded requests, plus rate-limit and concurrency figures."""
        with self._lock:
            by_status: dict[int, int] = {}
            for r in self._requests:
                by_status[r.status] = by_status.get(r.status, 0) + 1
            return {
                "requests": len(self._requests),
                "by_status": dict(sorted(by_status.items())),
                "rate_limited": self._rate_limited,
                "faults_applied": sum(1 for r in self._requests if r.fault is not None),
                "faults_pending": sum(f.times for f in self._faults),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
            }

    # -- steering (add_fault, set_outage, configure come from Steering) -----------------------

    def reset(self) -> None:
        """Forget contacts, requests and faults; return to the settings given at construction."""
        with self._lock:
            self._api.reset()
            self._generation += 1
            self._requests.clear()
            self._faults.clear()
            self._window.clear()
            self._rate_limited = 0
            self._max_in_flight = self._in_flight
            self._apply_config(self._defaults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def config(self) -> dict[str, Any]:
        with self._lock:
            return self._config_dict()

    def _queue_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def _pending_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def _change_config(self, changes: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._apply_config(changes)
            return self._config_dict()

    def _apply_config(self, changes: dict[str, Any]) -> None:
        # Validate everything before changing anything, so a bad value changes nothing.
        if "mode" in changes and changes["mode"] not in ("upsert", "create_only"):
            raise ValueError("mode must be 'upsert' or 'create_only'")
        for name in ("latency", "jitter", "rate_window"):
            if name in changes and (
                not isinstance(changes[name], (int, float)) or changes[name] < 0
            ):
                raise ValueError(f"{name} must be a non-negative number")
        if changes.get("rate_window") == 0:
            raise ValueError("rate_window must be positive")
        for name in ("rate_limit", "outage"):
            value = changes.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer or null")
        if changes.get("rate_limit") is not None and changes["rate_limit"] < 1:
            raise ValueError("rate_limit must be at least 1 (or null to switch it off)")
        outage = changes.get("outage")
        if outage is not None and not 100 <= outage <= 599:
            raise ValueError("outage must be an HTTP status code or null")
        if "latency" in changes:
            self.latency = float(changes["latency"])
        if "jitter" in changes:
            self.jitter = float(changes["jitter"])
        if "mode" in changes:
            self.mode = changes["mode"]
        if "rate_limit" in changes:
            self.rate_limit = changes["rate_limit"]
            self._window.clear()  # a new limit starts a fresh window
        if "rate_window" in changes:
            self.rate_window = float(changes["rate_window"])
            self._window.clear()
        if "outage" in changes:
            self.outage = changes["outage"]

    def _config_dict(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "jitter": self.jitter,
            "mode": self.mode,
            "rate_limit": self.rate_limit,
            "rate_window": self.rate_window,
            "outage": self.outage,
        }

    # -- used by the handler -----------------------------------------------------------------

    def _enter(self) -> int:
        """Count a request in; return the generation (reset count) it arrived in."""
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            return self._generation

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, generation: int, request: RecordedRequest) -> None:
        with self._lock:
            if generation == self._generation:
                self._requests.append(request)

    def _sleep_latency(self) -> None:
        delay = self.latency + (random.uniform(0, self.jitter) if self.jitter else 0.0)
        if delay > 0:
            time.sleep(delay)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        """Pop one use of the first queued fault matching this request."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times == 0:
                        del self._faults[index]
                    return fault
        return None

    def _check_rate_limit(self) -> tuple[bool, list[tuple[str, str]]]:
        """Rolling-window limit across all clients: (allowed, headers to send)."""
        with self._lock:
            limit = self.rate_limit
            if limit is None:
                return True, []
            allowed, headers = self._window.admit(limit, self.rate_window)
            if not allowed:
                self._rate_limited += 1
            return allowed, headers

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        return self.api_key is None or token == self.api_key

    def _answer(self, method: str, target: str, authorization: str | None, body: bytes) -> Answer:
        """The normal answer to an API request: outage, auth, rate limit, then the routes."""
        outage = self.outage
        if outage is not None:
            return json_answer(outage, {"error": phrase(outage)})
        if not self._authorized(authorization):
            return json_answer(401, {"error": "Unauthorized"}, [("WWW-Authenticate", "Bearer")])
        allowed, limit_headers = self._check_rate_limit()
        if not allowed:
            return json_answer(429, {"error": "Too many requests"}, limit_headers)
        answer = self._api.route(method, target, body, mode=self.mode)
        answer.headers.extend(limit_headers)
        return answer
