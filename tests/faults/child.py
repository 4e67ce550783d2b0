"""Helper processes for the fault scenarios: ``python -m tests.faults.child COMMAND ...``.

They run with the workers' environment (``tests.faults.worker_settings``, the test database,
the suite's broker and queue, ``PUBLISH = "thread"``), i.e. like another web or cron process
of the same site. Each prints one JSON line as its last output.

- ``die-after-commit USERNAME EMAIL OTHER_PK FIRST_NAME``: create a user and change another
  in one transaction, then die (``os._exit``) right after the commit, before the publish.
- ``saves PK COUNT TAG SEED``: COUNT saves of one user, each its own transaction.
- ``sweep LIMIT``: run the sweeper (``sync.sync_due``) until nothing is left.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

DIED_AFTER_COMMIT = 17


def _setup() -> None:
    import django

    django.setup()
    from tests.celery_app import app

    # The publisher thread resolves the default app: make sure it is the site's.
    app.set_default()


def _wait_for_go(barrier: str | None) -> None:
    """Line up with the other helpers so their work really overlaps."""
    if not barrier:
        return
    folder = Path(barrier)
    (folder / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 30
    while not (folder / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.01)


def die_after_commit(username: str, email: str, other_pk: str, first_name: str) -> None:
    from django.contrib.auth import get_user_model
    from django.db import transaction

    user_model = get_user_model()
    with transaction.atomic():
        # Registered before the saves, so it runs before the app's publish callback: the
        # process is gone with the transaction committed and nothing handed to the broker.
        transaction.on_commit(lambda: os._exit(DIED_AFTER_COMMIT))
        user_model.objects.create_user(username, email=email)
        other = user_model.objects.get(pk=other_pk)
        other.first_name = first_name
        other.save()
    raise SystemExit("still alive after the commit")


def saves(pk: str, count: int, tag: str, seed: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from django_orq_contacts import dispatch

    rng = random.Random(seed)
    user_model = get_user_model()
    for index in range(count):
        with transaction.atomic():
            user = user_model.objects.get(pk=pk)
            user.first_name = f"{tag}{index}"
            user.last_name = f"seed{seed}"
            user.save()
        time.sleep(rng.uniform(0, 0.12))
    return {"flushed": dispatch.flush(10)}


def sweep(limit: int) -> dict[str, Any]:
    from django_orq_contacts import sync

    outcomes = []
    while results := sync.sync_due(limit):
        outcomes.extend([r.outcome, str(r.user_pk), r.calls] for r in results)
    return {"outcomes": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--barrier")
    options = parser.parse_args()
    _setup()
    _wait_for_go(options.barrier)
    args = options.args
    if options.command == "die-after-commit":
        die_after_commit(*args)
    elif options.command == "saves":
        result = saves(args[0], int(args[1]), args[2], int(args[3]))
    elif options.command == "sweep":
        result = sweep(int(args[0]))
    else:
        raise SystemExit(f"unknown command {options.command!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
