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
    for name, pace, label in (
        ("paced", PACE, f"saves {PACE * 1000:.0f} ms apart (the request's own cost)"),
        ("back_to_back", 0.0, "back to back (publisher competing)"),
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
                "< 1.5x",
                ratio < 1.5,
            )
        )
    env.reset()
    return rows, raw
