"""Figure 5: the command's peak memory stays flat from 50,000 to 200,000 users."""

from __future__ import annotations

from typing import Any

from . import env
from .table import Row


def run(small: int, large: int) -> tuple[list[Row], dict[str, Any]]:
    env.reset()
    env.create_users(small)
    # --dry-run walks every user through the payload and the unchanged check, with no call
    # and no write: the same pagination and per-user work as a sync, repeatable in minutes.
    first = env.run_child("sync", "--dry-run")
    env.create_users(large - small, start=small)
    second = env.run_child("sync", "--dry-run")
    env.reset()
    growth = second["peak_rss_mb"] / first["peak_rss_mb"] - 1
    rows = [
        Row(
            "5",
            f"Peak RSS, orq_sync_contacts --dry-run over {large:,} users",
            f"{second['peak_rss_mb']:.0f} MB ({second['seconds']:.0f} s)",
            "< 150 MB",
            second["peak_rss_mb"] < 150 and second["returncode"] == 0,
        ),
        Row(
            "5",
            f"Peak RSS over {small:,} users, and growth to {large:,}",
            f"{first['peak_rss_mb']:.0f} MB, {growth:+.1%}",
            "within 10%",
            abs(growth) <= 0.10,
        ),
    ]
    return rows, {
        "small": {**first, "users": small},
        "large": {**second, "users": large},
        "growth": growth,
    }
