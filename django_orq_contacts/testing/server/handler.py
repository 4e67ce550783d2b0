"""The HTTP side: one thread per connection, reading requests and writing answers.

API requests go through the server's latency, faults and recording, then
:meth:`FakeOrqServer._answer`; ``/__orq__/`` requests go to the control endpoints.
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from .control import answer_control
from .faults import fault_answer
from .records import RecordedRequest
from .wire import CONTROL_PREFIX, Answer, json_answer

if TYPE_CHECKING:
    from .app import FakeOrqServer


class HTTPServer(ThreadingHTTPServer):
    # Many keep-alive clients (benchmarks, several workers) connect at once: a thread per
    # connection, a deep accept backlog, and threads that never block interpreter exit.
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], orq: FakeOrqServer) -> None:
        self.orq = orq
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up mid-answer are the point of many tests; their
        # broken pipes are expected, so don't print tracebacks to stderr.
        pass


class Handler(BaseHTTPRequestHandler):
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
        return cast(HTTPServer, self.server).orq

    def _handle(self) -> None:
        arrived = time.monotonic()
        body = self._read_body()
        if body is None:
            return
        split = urlsplit(self.path)
        if split.path.startswith(CONTROL_PREFIX):
            self._write(answer_control(self._orq, self.command, split.path, split.query, body))
            return
        orq = self._orq
        generation = orq._enter()
        try:
            self._serve_api(arrived, body, generation)
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
            self._write(json_answer(400, {"error": "Invalid Content-Length"}))
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

    def _serve_api(self, arrived: float, body: bytes, generation: int) -> None:
        orq = self._orq
        orq._sleep_latency()
        fault = orq._take_fault(self.command, self.path)
        rejected = fault is not None and fault.kind in ("status", "close", "redirect")
        if fault is not None and fault.kind == "delay":
            # Sleep, then carry on normally: the change lands even if the client gave up.
            time.sleep(fault.seconds if fault.seconds is not None else 1.0)
        if orq._generation != generation:
            # The server was reset while this request waited (a test that ended with a
            # client gone): it belongs to the past, and must not touch the next test's state.
            self.close_connection = True
            return
        answer = None
        pause = None
        if fault is not None and fault.kind == "close":
            # Hang up without a status line: the client sees a dropped connection.
            self.close_connection = True
        elif fault is not None and rejected:
            answer = fault_answer(fault, self.path)
        else:
            answer = orq._answer(self.command, self.path, self.headers.get("Authorization"), body)
            if fault is not None and fault.kind == "trickle":
                pause = fault.seconds if fault.seconds is not None else 0.2
        # Recorded before answering: a client that has its answer must find its request in
        # the log (recording after the write raced with tests that clear the log next).
        orq._record(
            generation,
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers=dict(self.headers.items()),
                body=body,
                status=0 if answer is None else answer.status,
                time=arrived,
                fault=None if fault is None else fault.kind,
                rejected=rejected,
            ),
        )
        if answer is not None:
            self._write(answer, trickle=pause)

    def _write(self, answer: Answer, *, trickle: float | None = None) -> None:
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
