"""What the harness runs in child processes, with Django set up from ``ORQ_BENCH_*``.

Each subcommand prints one JSON line last, which the harness reads.

    python -m benchmarks.child sync [orq_sync_contacts flags...]
    python -m benchmarks.child default-concurrency
    python -m benchmarks.child touch EVERY       # user.save() on every EVERY-th user
    python -m benchmarks.child saves USERS ROUNDS BLOCK PACE
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from io import StringIO
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync(args: list[str]) -> dict[str, Any]:
    """Run the command as ``manage.py`` would; time only the command, not Django's start."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    if os.environ.get("ORQ_BENCH_STUB_BREAKER") == "1":
        # Analysis only (--experiment-breaker): what the breaker's shared-state reads cost.
        from django_orq_contacts import circuit

        circuit.before_call = lambda: None
        circuit.record_success = lambda: None
    out, err = StringIO(), StringIO()
    code = 0
    started = time.perf_counter()
    try:
        call_command("orq_sync_contacts", "--no-progress", *args, stdout=out, stderr=err)
    except CommandError as exc:
        code = exc.returncode
    seconds = time.perf_counter() - started
    lines = out.getvalue().strip().splitlines()
    return {
        "seconds": seconds,
        "returncode": code,
        "summary": lines[-1] if lines else "",
        "errors": err.getvalue().strip().splitlines()[:5],
        "peak_rss_mb": peak_rss_mb(),
    }


def default_concurrency() -> dict[str, Any]:
    from django.core.management import load_command_class

    command = load_command_class("django_orq_contacts", "orq_sync_contacts")
    options = command.create_parser("manage.py", "orq_sync_contacts").parse_args([])
    return {"concurrency": options.concurrency}


def touch(every: int) -> dict[str, Any]:
    """Save every ``every``-th user: the signal marks it and publishes its task."""
    from django.contrib.auth import get_user_model

    from django_orq_contacts import dispatch

    saved = 0
    for user in get_user_model().objects.order_by("pk")[::every]:
        user.first_name = "Touched"
        user.save()
        saved += 1
    dispatch.flush(30)
    return {"saved": saved}


def saves(users: int, rounds: int, block: int, pace: float) -> dict[str, Any]:
    """Figure 4: user.save() with the app's receiver connected vs disconnected.

    Blocks of saves alternate between the two, so drift on a shared machine hits both
    alike. Only the save() calls are timed. With ``pace`` > 0 each save is followed by
    that many seconds of idle time, as between a web process's requests, and the publisher
    thread does its work there; with 0 the saves run back to back and the publisher's
    work competes with them for the interpreter. The queue is drained between blocks.
    """
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_save

    from django_orq_contacts import dispatch, receivers

    user_model = get_user_model()
    people = list(user_model.objects.order_by("pk")[:users])
    uid = "orq_contacts_saved"
    counter = 0

    def run_block(connected: bool) -> float:
        nonlocal counter
        if connected:
            post_save.connect(receivers.user_saved, sender=user_model, dispatch_uid=uid)
        else:
            post_save.disconnect(sender=user_model, dispatch_uid=uid)
        spent = 0.0
        for _ in range(block):
            person = people[counter % len(people)]
            counter += 1
            person.first_name = f"F{counter}"
            started = time.perf_counter()
            person.save()
            spent += time.perf_counter() - started
            if pace:
                time.sleep(pace)
        dispatch.flush(30)
        return spent / block

    run_block(True)  # every user gets its row; connections and the broker are warm
    run_block(False)
    plain, app = [], []
    for _ in range(rounds):
        plain.append(run_block(False))
        app.append(run_block(True))
    post_save.connect(receivers.user_saved, sender=user_model, dispatch_uid=uid)
    return {
        "plain_ms": statistics.median(plain) * 1000,
        "app_ms": statistics.median(app) * 1000,
        "saves_each": rounds * block,
        "pace_s": pace,
    }


def main() -> None:
    django.setup()
    # As a project's __init__ would: shared tasks bind to this app (its Redis broker), not
    # to Celery's default app and its default broker.
    from benchmarks import celery_app  # noqa: F401

    name, args = sys.argv[1], sys.argv[2:]
    if name == "sync":
        result = sync(args)
    elif name == "default-concurrency":
        result = default_concurrency()
    elif name == "touch":
        result = touch(int(args[0]))
    elif name == "saves":
        result = saves(int(args[0]), int(args[1]), int(args[2]), float(args[3]))
    else:
        sys.exit(f"unknown subcommand {name!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
