"""Figure 3: the command and two Celery workers share a 10 calls/s limit without tripping it."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from . import env
from .table import Row

LIMIT = 10


def run(users: int, latency: float) -> tuple[list[Row], dict[str, Any]]:
    from django_orq_contacts.models import ContactSync

    env.reset()
    env.create_users(users)
    with env.fake_server(latency, rate_limit=LIMIT) as server:
        limited = {"ORQ_BENCH_BASE_URL": server.url, "ORQ_BENCH_RATE_LIMIT": f"{LIMIT}/s"}
        with env.celery_workers(2, **limited):
            # Every other user is saved (the signal queues its task for the workers) while
            # the command syncs everyone inline: three processes on one limit.
            touch = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.child", "touch", "2"],
                cwd=env.ROOT,
                env=env.child_env(**limited),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            command = env.run_child("sync", **limited)
            touch.wait(120)
            settled = _wait_until_synced(ContactSync, users, timeout=120)
        calls = [r for r in server.requests if r.path.startswith("/v2/")]
    accepted = sorted(r.time for r in calls if 200 <= r.status < 300)
    refused = sum(1 for r in calls if r.status == 429)
    span = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    rate = (len(accepted) - 1) / span if span else 0.0
    share = refused / len(calls) if calls else 0.0
    command_calls = _calls_in(command["summary"])
    raw = {
        "users": users,
        "limit_per_s": LIMIT,
        "accepted": len(accepted),
        "refused_429": refused,
        "span_s": span,
        "rate": rate,
        "command": command,
        "command_calls": command_calls,
        "worker_calls": len(calls) - command_calls,
        "all_synced": settled,
    }
    note = "" if settled else " (not all users synced)"
    rows = [
        Row(
            "3",
            f"{users:,} users, limit {LIMIT}/s, command + 2 workers: calls/s",
            f"{rate:.2f}/s ({len(accepted):,} calls: command {command_calls}, workers "
            f"{len(calls) - command_calls}){note}",
            f">= {0.9 * LIMIT:g}/s (90%)",
            rate >= 0.9 * LIMIT and settled,
        ),
        Row(
            "3",
            "429 answers received",
            f"{refused} ({share:.1%} of calls)",
            "<= 1% of calls",
            share <= 0.01,
        ),
    ]
    return rows, raw


def _wait_until_synced(model: Any, users: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if model.objects.filter(status="synced").count() >= users:
            return True
        time.sleep(1)
    return False


def _calls_in(summary: str) -> int:
    try:
        return int(summary.rsplit("; ", 1)[1].split()[0])
    except (IndexError, ValueError):
        return 0
