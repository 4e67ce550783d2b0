"""``python -m django_orq_contacts.testing.server``: run the fake server until a signal."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from .app import FakeOrqServer


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
