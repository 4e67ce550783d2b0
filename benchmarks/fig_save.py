"""Figure 4: what the app adds to ``user.save()`` on PostgreSQL, as a ratio to a plain save."""

from __future__ import annotations

from typing import Any

from . import env
from .table import Row

USERS = 200
# Idle time after each paced save, as between a web process's requests.
PACE = 0.005


def run(rounds: int, block: int) -> tuple[list[Row], dict[str, Any]]:
    raw: dict[str, Any] = {}
    rows: list[Row] = []
    # The bar is about what a request waits for (the issue: "the request thread need not
    # wait on the broker"), so it applies to saves paced like requests. A loop of saves back
    # to back also pays, in the same interpreter, for the publisher thread's work: shown for
    # context, with no bar.
    for name, pace, label, barred in (
        ("paced", PACE, f"saves {PACE * 1000:.0f} ms apart (what a request waits for)", True),
        ("back_to_back", 0.0, "a loop of saves (context: with the publisher's CPU)", False),
    ):
        env.reset()
        env.create_users(USERS)
        # PUBLISH="thread" (the default) and the real Redis broker; no worker consumes the
        # queue, which env.reset() empties afterwards.
        result = env.run_child(
            "saves", str(USERS), str(rounds), str(block), str(pace), ORQ_BENCH_PUBLISH="thread"
        )
        ratio = result["app_ms"] / result["plain_ms"]
        raw[name] = {**result, "ratio": ratio}
        rows.append(
            Row(
                "4",
                f"user.save() with the app vs plain, {label}",
                f"{result['app_ms']:.2f} ms vs {result['plain_ms']:.2f} ms = {ratio:.2f}x",
                "< 1.5x" if barred else "",
                ratio < 1.5 if barred else None,
            )
        )
    env.reset()
    return rows, raw
