"""The practical ceiling: bare ``requests`` threads posting contacts, nothing else.

No database, no state, no limiter: the same bodies our client sends, on the same number of
threads with one session each. Prints one JSON line.

    python -m benchmarks.ceiling http://127.0.0.1:PORT 10000 16
"""

from __future__ import annotations

import json
import sys
import threading
import time

import requests


def run(url: str, count: int, concurrency: int) -> dict[str, float]:
    numbers = iter(range(count))
    lock = threading.Lock()
    errors: list[int] = []

    def worker() -> None:
        session = requests.Session()
        session.trust_env = False  # the fastest plain use of requests: no per-call env lookups
        while True:
            with lock:
                i = next(numbers, None)
            if i is None:
                return
            body = json.dumps(
                {
                    "external_id": f"ceiling-{i}",
                    "display_name": f"Ada L{i}",
                    "email": f"ceiling{i}@example.com",
                    "avatar_url": None,
                    "tags": [],
                    "metadata": {"username": f"ceiling{i}"},
                },
                separators=(",", ":"),
            ).encode("ascii")
            response = session.post(
                url + "/v2/contacts",
                data=body,
                headers={
                    "Authorization": "Bearer bench-key",
                    "Accept": "application/json",
                    "Content-Type": "application/json",
                },
                timeout=(5, 30),
            )
            if response.status_code >= 300:
                errors.append(response.status_code)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"calls": count, "seconds": seconds, "rate": count / seconds, "errors": len(errors)}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
