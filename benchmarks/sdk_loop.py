"""What a site would write without us: the official SDK's ``contacts.create`` in a loop.

Runs in its own virtualenv (``orq-ai-sdk==4.5.25``), never imports Django, and talks only
to the stand-in server given on the command line. Prints one JSON line.

    python benchmarks/sdk_loop.py http://127.0.0.1:PORT 500
"""

from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlsplit

from orq_ai_sdk import Orq


def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("refusing a non-loopback server: this loop must never reach the real Orq")
    orq = Orq(api_key="bench-key", server_url=url, timeout_ms=30_000)
    # One call first so the connection is open, as it is for every loop we compare with.
    orq.contacts.create(external_id="sdk-warmup")
    started = time.perf_counter()
    for i in range(count):
        orq.contacts.create(
            external_id=f"sdk-{i}",
            display_name=f"Ada L{i}",
            email=f"sdk{i}@example.com",
            avatar_url=None,
            tags=[],
            metadata={"username": f"sdk{i}"},
        )
    seconds = time.perf_counter() - started
    print(json.dumps({"calls": count, "seconds": seconds, "rate": count / seconds}))


if __name__ == "__main__":
    main()
