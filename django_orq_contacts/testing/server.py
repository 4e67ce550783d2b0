"""A stand-in Orq server on 127.0.0.1 for tests, the demo and benchmarks.

It speaks the contacts API (``/v2/contacts``) and its successor (``/v2/identities``) as
described in the project's notes on the wire format, and it can misbehave on demand:
latency, one-shot faults (error statuses, hangs, trickled bodies, dropped connections,
redirects), a sustained outage and a server-side rate limit. Everything can be driven from
Python (:class:`FakeOrqServer`) or over HTTP under ``/__orq__/`` (:class:`OrqServerControl`),
so a test can steer a server that runs in another process, e.g. next to a Celery worker.

Only the standard library is used, so the helper works wherever the package is installed.
Run it stand-alone with ``python -m django_orq_contacts.testing.server --port 8765``.
"""

from __future__ import annotations

import argparse
import copy
import enum
import json
import math
import os
import random
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

__all__ = [
    "CONTROL_PREFIX",
    "FakeOrqServer",
    "Fault",
    "FaultKind",
    "OrqServerControl",
    "RecordedRequest",
    "main",
]

CONTROL_PREFIX = "/__orq__/"
RESOURCES = ("contacts", "identities")
FaultKind = Literal["status", "delay", "trickle", "close", "redirect"]
FAULT_KINDS: tuple[str, ...] = ("status", "delay", "trickle", "close", "redirect")
Mode = Literal["upsert", "create_only"]

MAX_EXTERNAL_ID = 120
MAX_PAGE = 50
DEFAULT_PAGE = 10
# Where a redirect fault points by default: a loopback address nothing listens on, so a client
# that wrongly follows it fails fast instead of reaching a real host.
DEFAULT_REDIRECT_HOST = "http://127.0.0.2:9"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
_PROFILE_STRINGS = ("display_name", "email", "avatar_url")


class _Unset(enum.Enum):
    """Sentinel type so ``configure()`` can tell "not given" apart from ``None`` (= off)."""

    UNSET = 0


UNSET = _Unset.UNSET


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


@dataclass
class _Answer:
    """A response ready to be written: status, extra headers and the encoded body."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "application/json"


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _json_answer(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> _Answer:
    return _Answer(status, _json_bytes(obj), list(headers or []))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _new_id() -> str:
    """A ULID-shaped id: 48 bits of milliseconds then 80 random bits, Crockford base32."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _singular(resource: str) -> str:
    return "Contact" if resource == "contacts" else "Identity"


def _error(resource: str, status: int, message: str, *, message_key: bool = False) -> _Answer:
    """An error in the shape each resource uses on the wire.

    Contacts answer ``{"error": ...}`` except PATCH, which answers ``{"message": ...}``;
    identities always answer ``{"message", "code", "details"}``.
    """
    if resource == "identities":
        return _json_answer(status, {"message": message, "code": status, "details": []})
    if message_key:
        return _json_answer(status, {"message": message})
    return _json_answer(status, {"error": message})


def _clean_fields(
    data: dict[str, Any], *, resource: str, partial: bool
) -> tuple[dict[str, Any], str | None]:
    """Validate profile fields; return the ones sent, or an error message.

    Contacts accept ``null`` for the string fields; identities do not (omit to keep,
    ``""`` to clear), which is worth catching in tests of a client that targets both.
    """
    out: dict[str, Any] = {}
    if "external_id" in data or not partial:
        ext = data.get("external_id")
        if not isinstance(ext, str) or not ext.strip():
            return {}, "external_id is required and must be a non-empty string"
        if len(ext) > MAX_EXTERNAL_ID:
            return {}, f"external_id must be at most {MAX_EXTERNAL_ID} characters"
        out["external_id"] = ext
    nullable = resource == "contacts"
    for name in _PROFILE_STRINGS:
        if name not in data:
            continue
        value = data[name]
        if value is None and nullable:
            out[name] = None
        elif not isinstance(value, str):
            return {}, f"{name} must be a string" + (" or null" if nullable else "")
        elif name == "email" and value and not _EMAIL_RE.match(value):
            return {}, "email must be a valid email address"
        else:
            # An empty string clears the field on identities; store it as "no value".
            out[name] = None if (value == "" and not nullable) else value
    if "tags" in data and not (data["tags"] is None and nullable):
        tags = data["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return {}, "tags must be a list of strings"
        out["tags"] = list(tags)
    if "metadata" in data and not (data["metadata"] is None and nullable):
        if not isinstance(data["metadata"], dict):
            return {}, "metadata must be an object"
        out["metadata"] = copy.deepcopy(data["metadata"])
    return out, None


class _Store:
    """Contacts of one resource, kept in creation order and indexed by ``_id`` and external id."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        self.id_by_external: dict[str, str] = {}

    def find(self, key: str) -> dict[str, Any] | None:
        found = self.by_id.get(key)
        if found is None and key in self.id_by_external:
            found = self.by_id[self.id_by_external[key]]
        return found

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = _now_iso()
        record: dict[str, Any] = {
            "_id": _new_id(),
            "external_id": fields["external_id"],
            "display_name": None,
            "email": None,
            "avatar_url": None,
            "tags": [],
            "metadata": {},
            "created": now,
            "updated": now,
        }
        record.update(fields)
        self.by_id[record["_id"]] = record
        self.id_by_external[record["external_id"]] = record["_id"]
        return record

    def replace(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        """Upsert semantics: every profile field not sent goes back to its empty value."""
        record.update(display_name=None, email=None, avatar_url=None, tags=[], metadata={})
        self.update(record, fields)

    def update(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        old_ext = record["external_id"]
        record.update(fields)
        record["updated"] = _now_iso()
        if record["external_id"] != old_ext:
            del self.id_by_external[old_ext]
            self.id_by_external[record["external_id"]] = record["_id"]

    def delete(self, record: dict[str, Any]) -> None:
        del self.by_id[record["_id"]]
        del self.id_by_external[record["external_id"]]


class _HTTPServer(ThreadingHTTPServer):
    # Many keep-alive clients (benchmarks, several workers) connect at once: a thread per
    # connection, a deep accept backlog, and threads that never block interpreter exit.
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], orq: FakeOrqServer) -> None:
        self.orq = orq
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up mid-answer are the point of many tests; their
        # broken pipes are expected, so don't print tracebacks to stderr.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOrq/1.0"
    # Close keep-alive connections that stay idle this long, so abandoned clients don't pin
    # a thread each for the life of the server.
    timeout = 60
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus delayed
    # ACKs would add ~40 ms to each keep-alive answer and wreck benchmark numbers.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # Quiet by default: tests and benchmarks read stderr for their own output.

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    @property
    def _orq(self) -> FakeOrqServer:
        return cast(_HTTPServer, self.server).orq

    def _handle(self) -> None:
        arrived = time.monotonic()
        body = self._read_body()
        if body is None:
            return
        split = urlsplit(self.path)
        if split.path.startswith(CONTROL_PREFIX):
            self._write(self._orq._control(self.command, split.path, split.query, body))
            return
        orq = self._orq
        orq._enter()
        try:
            self._serve_api(arrived, body)
        finally:
            orq._leave()

    def _read_body(self) -> bytes | None:
        """Read the whole request body so the keep-alive stream stays in step."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._write(_json_answer(400, {"error": "Invalid Content-Length"}))
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Skip optional trailers up to the blank line that ends the message.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _serve_api(self, arrived: float, body: bytes) -> None:
        orq = self._orq
        orq._sleep_latency()
        fault = orq._take_fault(self.command, self.path)
        rejected = fault is not None and fault.kind in ("status", "close", "redirect")
        status = 0
        if fault is not None and fault.kind == "delay":
            # Sleep, then carry on normally: the change lands even if the client gave up.
            time.sleep(fault.seconds if fault.seconds is not None else 1.0)
        if fault is not None and fault.kind == "close":
            # Hang up without a status line: the client sees a dropped connection.
            self.close_connection = True
        else:
            if fault is not None and rejected:
                answer = self._fault_answer(fault)
            else:
                answer = orq._answer(
                    self.command, self.path, self.headers.get("Authorization"), body
                )
            status = answer.status
            pause = None
            if fault is not None and fault.kind == "trickle":
                pause = fault.seconds if fault.seconds is not None else 0.2
            self._write(answer, trickle=pause)
        orq._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers=dict(self.headers.items()),
                body=body,
                status=status,
                time=arrived,
                fault=None if fault is None else fault.kind,
                rejected=rejected,
            )
        )

    def _fault_answer(self, fault: Fault) -> _Answer:
        if fault.kind == "redirect":
            location = fault.location or DEFAULT_REDIRECT_HOST + self.path
            answer = _json_answer(fault.status or 302, {"error": "Found"}, [("Location", location)])
        else:
            status = cast(int, fault.status)
            answer = _json_answer(status, {"error": _phrase(status)})
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

    def _write(self, answer: _Answer, *, trickle: float | None = None) -> None:
        try:
            self.send_response(answer.status)
            # RFC 9110 forbids Content-Length (and a body) on 204; everything else gets an
            # exact length so keep-alive clients know where the answer ends.
            if answer.status != 204:
                if answer.content_type:
                    self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if answer.status == 204:
                return
            if trickle is None:
                self.wfile.write(answer.body)
                return
            # Headers are already out; dribble the body so a per-read timeout may or may not
            # fire depending on the pause, while the whole answer takes len(body) * pause.
            for index in range(len(answer.body)):
                self.wfile.write(answer.body[index : index + 1])
                self.wfile.flush()
                time.sleep(trickle)
        except OSError:
            # The client hung up (often on purpose, after its timeout); drop the connection.
            self.close_connection = True


class FakeOrqServer:
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
        self._stores = {name: _Store() for name in RESOURCES}
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._window: deque[float] = deque()
        self._rate_limited = 0
        self._in_flight = 0
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
        self._httpd = _HTTPServer((host, port), self)
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
            return copy.deepcopy(list(self._store(resource).by_id.values()))

    def contact(self, external_id: str, resource: str = "contacts") -> dict[str, Any] | None:
        with self._lock:
            store = self._store(resource)
            record_id = store.id_by_external.get(external_id)
            return None if record_id is None else copy.deepcopy(store.by_id[record_id])

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded API requests, in the order their answers finished."""
        with self._lock:
            return list(self._requests)

    def api_requests(
        self, method: str | None = None, path_contains: str | None = None
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
        ]

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

    # -- steering ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget contacts, requests and faults; return to the settings given at construction."""
        with self._lock:
            self._stores = {name: _Store() for name in RESOURCES}
            self._requests.clear()
            self._faults.clear()
            self._window.clear()
            self._rate_limited = 0
            self._max_in_flight = self._in_flight
            self._apply_config(self._defaults)

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
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

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
        changes = {k: v for k, v in given.items() if v is not UNSET}
        with self._lock:
            self._apply_config(changes)
            return self._config_dict()

    def config(self) -> dict[str, Any]:
        with self._lock:
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

    def _store(self, resource: str) -> _Store:
        if resource not in self._stores:
            raise ValueError(f"resource must be one of {RESOURCES}")
        return self._stores[resource]

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
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
            now = time.monotonic()
            while self._window and self._window[0] <= now - self.rate_window:
                self._window.popleft()
            if len(self._window) >= limit:
                self._rate_limited += 1
                wait = self._window[0] + self.rate_window - now
                retry_after = max(1, math.ceil(wait))
                return False, [
                    ("Retry-After", str(retry_after)),
                    ("X-RateLimit-Limit", str(limit)),
                    ("X-RateLimit-Remaining", "0"),
                    # Unix time at which a call is allowed again.
                    ("X-RateLimit-Reset", str(math.ceil(time.time() + wait))),
                ]
            self._window.append(now)
            return True, [
                ("X-RateLimit-Limit", str(limit)),
                ("X-RateLimit-Remaining", str(limit - len(self._window))),
            ]

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        return self.api_key is None or token == self.api_key

    def _answer(self, method: str, target: str, authorization: str | None, body: bytes) -> _Answer:
        """The normal answer to an API request: outage, auth, rate limit, then the routes."""
        outage = self.outage
        if outage is not None:
            return _json_answer(outage, {"error": _phrase(outage)})
        if not self._authorized(authorization):
            return _json_answer(401, {"error": "Unauthorized"}, [("WWW-Authenticate", "Bearer")])
        allowed, limit_headers = self._check_rate_limit()
        if not allowed:
            return _json_answer(429, {"error": "Too many requests"}, limit_headers)
        answer = self._route(method, target, body)
        answer.headers.extend(limit_headers)
        return answer

    def _route(self, method: str, target: str, body: bytes) -> _Answer:
        split = urlsplit(target)
        parts = split.path.split("/", 3)  # "", "v2", resource, rest (kept whole)
        if len(parts) < 3 or parts[1] != "v2" or parts[2] not in RESOURCES:
            return _json_answer(404, {"error": "Not found"})
        resource = parts[2]
        # The rest may hold a percent-encoded "/" from an external id, so decode it whole.
        key = unquote(parts[3]) if len(parts) == 4 else ""
        if not key:
            if method == "POST":
                return self._create(resource, body)
            if method == "GET":
                return self._list(resource, parse_qs(split.query))
            return _json_answer(405, {"error": "Method not allowed"}, [("Allow", "GET, POST")])
        if method == "GET":
            return self._get(resource, key)
        if method == "PATCH":
            return self._patch(resource, key, body)
        if method == "DELETE":
            return self._delete(resource, key)
        return _json_answer(405, {"error": "Method not allowed"}, [("Allow", "GET, PATCH, DELETE")])

    def _parse(self, resource: str, body: bytes) -> tuple[dict[str, Any], _Answer | None]:
        try:
            data = json.loads(body)
        except ValueError:
            return {}, _error(resource, 400, "Invalid JSON body")
        if not isinstance(data, dict):
            return {}, _error(resource, 422, "Request body must be a JSON object")
        return data, None

    def _wrap(
        self,
        resource: str,
        status: int,
        record: dict[str, Any],
        headers: list[tuple[str, str]] | None = None,
    ) -> _Answer:
        body = copy.deepcopy(record)
        return _json_answer(
            status, {"identity": body} if resource == "identities" else body, headers
        )

    def _create(self, resource: str, body: bytes) -> _Answer:
        data, error = self._parse(resource, body)
        if error is not None:
            return error
        fields, problem = _clean_fields(data, resource=resource, partial=False)
        if problem is not None:
            return _error(resource, 422, problem)
        with self._lock:
            store = self._stores[resource]
            record_id = store.id_by_external.get(fields["external_id"])
            existing = None if record_id is None else store.by_id[record_id]
            if resource == "identities" or self.mode == "create_only":
                if existing is not None:
                    return _error(
                        resource, 409, f"{_singular(resource)} with external_id already exists"
                    )
                record = store.create(fields)
                location = (
                    [("Location", f"/v2/{resource}/{record['_id']}")]
                    if resource == "identities"
                    else []
                )
                return self._wrap(resource, 201, record, location)
            if existing is None:
                record = store.create(fields)
            else:
                record = existing
                store.replace(record, fields)
            return self._wrap(resource, 200, record)

    def _get(self, resource: str, key: str) -> _Answer:
        with self._lock:
            record = self._stores[resource].find(key)
            if record is None:
                return _error(resource, 404, f"{_singular(resource)} not found")
            return self._wrap(resource, 200, record)

    def _patch(self, resource: str, key: str, body: bytes) -> _Answer:
        data, error = self._parse(resource, body)
        if error is not None:
            return error
        fields, problem = _clean_fields(data, resource=resource, partial=True)
        if problem is not None:
            return _error(resource, 422, problem)
        with self._lock:
            store = self._stores[resource]
            record = store.find(key)
            if record is None:
                return _error(resource, 404, f"{_singular(resource)} not found", message_key=True)
            new_ext = fields.get("external_id", record["external_id"])
            if store.id_by_external.get(new_ext, record["_id"]) != record["_id"]:
                return _error(
                    resource, 409, f"{_singular(resource)} with external_id already exists"
                )
            store.update(record, fields)
            return self._wrap(resource, 200, record)

    def _delete(self, resource: str, key: str) -> _Answer:
        with self._lock:
            store = self._stores[resource]
            record = store.find(key)
            if record is None:
                return _error(resource, 404, f"{_singular(resource)} not found")
            store.delete(record)
        if resource == "identities":
            return _json_answer(200, {})
        return _Answer(204, content_type=None)

    def _list(self, resource: str, query: dict[str, list[str]]) -> _Answer:
        try:
            limit = int(query.get("limit", [str(DEFAULT_PAGE)])[0])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            return _error(resource, 422, f"limit must be an integer from 1 to {MAX_PAGE}")
        wanted_tags = set(query.get("filter_by.tags", []))
        with self._lock:
            records = list(self._stores[resource].by_id.values())
            after = query.get("starting_after", [""])[0]
            if after:
                ids = [r["_id"] for r in records]
                if after not in ids:
                    return _error(resource, 422, "starting_after does not name a known _id")
                records = records[ids.index(after) + 1 :]
            if wanted_tags:
                records = [r for r in records if wanted_tags <= set(r["tags"])]
            page = copy.deepcopy(records[:limit])
        return _json_answer(200, {"object": "list", "data": page, "has_more": len(records) > limit})

    def _control(self, method: str, path: str, query: str, body: bytes) -> _Answer:
        """The ``/__orq__/`` endpoints: no auth, faults, rate limit or recording."""
        name = path[len(CONTROL_PREFIX) :].strip("/")
        params = parse_qs(query)
        try:
            data = json.loads(body) if body.strip() else {}
            if method == "GET" and name == "contacts":
                resource = params.get("resource", ["contacts"])[0]
                return _json_answer(200, self.contacts(resource))
            if method == "GET" and name == "requests":
                return _json_answer(200, [r.to_dict() for r in self.requests])
            if method == "DELETE" and name == "requests":
                self.clear_requests()
                return _json_answer(200, {})
            if method == "POST" and name == "reset":
                self.reset()
                return _json_answer(200, {})
            if method == "GET" and name == "config":
                return _json_answer(200, self.config())
            if method == "POST" and name == "config":
                if not isinstance(data, dict):
                    raise ValueError("config must be a JSON object")
                unknown = set(data) - set(self._defaults)
                if unknown:
                    raise ValueError(f"unknown config keys: {sorted(unknown)}")
                with self._lock:
                    self._apply_config(data)
                    return _json_answer(200, self._config_dict())
            if method == "GET" and name == "faults":
                with self._lock:
                    return _json_answer(200, [f.to_dict() for f in self._faults])
            if method == "POST" and name == "faults":
                if not isinstance(data, dict):
                    raise ValueError("a fault must be a JSON object")
                fault = Fault.from_dict(data)
                with self._lock:
                    self._faults.append(fault)
                return _json_answer(200, fault.to_dict())
            if method == "DELETE" and name == "faults":
                self.clear_faults()
                return _json_answer(200, {})
            if method == "GET" and name == "stats":
                stats = self.stats()
                stats["by_status"] = {str(k): v for k, v in stats["by_status"].items()}
                return _json_answer(200, stats)
        except (ValueError, TypeError, KeyError) as exc:
            return _json_answer(400, {"error": str(exc)})
        return _json_answer(404, {"error": f"No control endpoint {method} {path}"})


class OrqServerControl:
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
        data = None if payload is None else _json_bytes(payload)
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

    def api_requests(
        self, method: str | None = None, path_contains: str | None = None
    ) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
        ]

    def clear_requests(self) -> None:
        self._call("DELETE", "requests")

    def reset(self) -> None:
        self._call("POST", "reset")

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
        return Fault.from_dict(self._call("POST", "faults", fault.to_dict()))

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def set_outage(self, status: int | None) -> None:
        self._call("POST", "config", {"outage": status})

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
        given = {
            "latency": latency,
            "jitter": jitter,
            "mode": mode,
            "rate_limit": rate_limit,
            "rate_window": rate_window,
            "outage": outage,
        }
        changes = {k: v for k, v in given.items() if v is not UNSET}
        return cast(dict[str, Any], self._call("POST", "config", changes))

    def config(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("GET", "config"))

    def stats(self) -> dict[str, Any]:
        stats = cast(dict[str, Any], self._call("GET", "stats"))
        stats["by_status"] = {int(k): v for k, v in stats["by_status"].items()}
        return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake Orq contacts API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="random extra latency, up to")
    parser.add_argument("--mode", choices=("upsert", "create_only"), default="upsert")
    parser.add_argument("--rate-limit", type=int, default=None, help="calls allowed per window")
    parser.add_argument("--rate-window", type=float, default=60.0, help="window length, seconds")
    args = parser.parse_args(argv)

    server = FakeOrqServer(
        args.host,
        args.port,
        api_key=args.api_key,
        latency=args.latency,
        jitter=args.jitter,
        mode=args.mode,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
    ).start()
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"Fake Orq server listening on {server.url}", flush=True)
    # Wait in short slices so the signal handler gets to run promptly on every platform.
    while not stopping.wait(0.2):
        pass
    server.stop()


if __name__ == "__main__":
    main()
