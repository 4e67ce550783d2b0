"""The demo: the example project mirrors a few users to Orq and shows what Orq received.

Run it with ``./scripts/demo`` from the repository root (that sets up ``.venv`` first).

By default everything is local: a stand-in Orq server on 127.0.0.1 (the package's
``django_orq_contacts.testing.server``), a fresh SQLite file (``example_project/demo.sqlite3``)
and, when Redis answers at CELERY_BROKER_URL, a real ``celery worker`` on a private queue.
With ORQ_API_KEY and ORQ_BASE_URL both set, the contacts go to that Orq workspace instead
(with prefixed external ids, and the demo's users deleted again at the end).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEMO_DB = HERE / "demo.sqlite3"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
USER_PREFIX = "demo-"
REAL_ORQ_PREFIX = "django-orq-contacts-demo-"
WAIT_SECONDS = 30
WIDTH = max(72, min(shutil.get_terminal_size((100, 24)).columns, 120))

PEOPLE = [
    ("ada", "Ada", "Lovelace", "ada@example.com"),
    ("grace", "Grace", "Hopper", "grace@example.com"),
    ("alan", "Alan", "Turing", ""),
]
IMPORTED = [
    ("katherine", "Katherine", "Johnson", "katherine@example.com"),
    ("edsger", "Edsger", "Dijkstra", "edsger@example.com"),
]


class DemoError(Exception):
    """Something the user must see and fix; printed without a traceback."""


# --------------------------------------------------------------------------- output


def heading(number: int | str, title: str) -> None:
    print()
    print(f"== {number}. {title} ".ljust(WIDTH, "="))


def wrap(text: str, first: str, rest: str) -> str:
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def say(text: str, label: str = "") -> None:
    """A paragraph; with a label, a hanging one ("Orq:  text...")."""
    first = f"  {label:<11} " if label else "  "
    print(wrap(text, first, " " * len(first)))


def table(rows: list[list[str]], headers: list[str], indent: int = 4) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    pad = " " * indent

    def line(cells: list[str]) -> str:
        return pad + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    print(line(headers))
    print(pad + "  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


# --------------------------------------------------------------------------- processes


class Parts:
    """The processes the demo starts; all of them are stopped on the way out."""

    def __init__(self) -> None:
        self.logdir = Path(tempfile.mkdtemp(prefix="orq-demo-"))
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.queue_to_delete: tuple[str, str] | None = None

    def start(
        self, name: str, argv: list[str], log: Path, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            # Own session: a Ctrl-C in the terminal reaches only the demo, which then stops
            # each part in order (a celery worker hit by two SIGINTs would shut down cold).
            process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )
        self.processes.append((name, process))
        return process

    def stop(self) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in reversed(self.processes):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            quiet_print(f"  stopped the {name} (pid {process.pid})")
        self.processes.clear()
        if self.queue_to_delete:
            broker, queue = self.queue_to_delete
            self.queue_to_delete = None
            try:
                from kombu import Connection, Exchange, Queue

                with Connection(broker, connect_timeout=2) as conn:
                    # Declared first: kombu only deletes bindings it knows in this channel.
                    bound = Queue(queue, Exchange(queue), routing_key=queue)(conn.default_channel)
                    bound.declare()
                    bound.delete()
                    bound.exchange.delete()
            except Exception as exc:  # the demo's result does not depend on this tidy-up
                quiet_print(f"  (could not delete the demo's queue {queue}: {exc})")


def wait_for(what: str, ready: Callable[[], bool], *, hint: str = "") -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not ready():
        if time.monotonic() > deadline:
            raise DemoError(f"Gave up after {WAIT_SECONDS}s waiting for {what}. {hint}".strip())
        time.sleep(0.1)


def wait_for_line(process: subprocess.Popen[bytes], log: Path, marker: str, what: str) -> str:
    """The first line of ``log`` containing ``marker``, once the process has written it."""
    found: list[str] = []

    def seen() -> bool:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise DemoError(f"The {what} exited early (code {process.returncode}):\n{tail}")
        found[:] = [ln for ln in log.read_text(errors="replace").splitlines() if marker in ln]
        return bool(found)

    wait_for(f"the {what} to start", seen, hint=f"Its log: {log}")
    return found[0]


def start_stand_in_orq(parts: Parts) -> Any:
    """Start the stand-in server with a random demo key; point the example project at it."""
    from django_orq_contacts.testing.server import OrqServerControl

    key = "demo-" + secrets.token_hex(12)
    log = parts.logdir / "orq-server.log"
    argv = [sys.executable, "-m", "django_orq_contacts.testing.server", "--port", "0"]
    process = parts.start("stand-in Orq server", [*argv, "--api-key", key], log)
    line = wait_for_line(process, log, "listening on", "stand-in Orq server")
    url = line.rsplit(" ", 1)[-1].strip()
    # The demo's own key: a real key in the environment never travels, not even to loopback.
    os.environ["ORQ_API_KEY"] = key
    os.environ["ORQ_BASE_URL"] = url
    return OrqServerControl(url).wait_until_ready()


def broker_problem(url: str) -> str | None:
    """Why the broker cannot be used, or None when it answers."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=0)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def start_worker(parts: Parts, queue: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = parts.logdir / "celery-worker.log"
    argv = [
        sys.executable, "-m", "celery", "-A", "example", "worker",
        "--loglevel", "INFO", "--concurrency", "2", "--queues", queue,
        "--hostname", f"{queue}@%h", "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ]  # fmt: skip
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    process = parts.start(
        "Celery worker", argv, log, cwd=HERE, env={**os.environ, "PYTHONPATH": path}
    )
    return process, log


# --------------------------------------------------------------------------- what Orq saw


class Observer:
    """Shows, step by step, the requests Orq received (or, for a real Orq, the sync rows)."""

    def __init__(self, orq: Any) -> None:
        self.orq = orq
        self.seen = 0
        self.shown_headers = False

    def new_requests(self) -> None:
        if self.orq is None:
            say("Sync state of the demo's users:")
            sync_rows(None)
            return
        requests = self.orq.requests
        fresh, self.seen = requests[self.seen :], len(requests)
        if not fresh:
            say("Orq received: nothing (no HTTP call).")
            return
        say(f"Orq received {len(fresh)} request(s):")
        for request in fresh:
            self._print_request(request)
        if not self.shown_headers:
            self.shown_headers = True
            auth = request.header("Authorization") or ""
            say(
                f"(Every request carries Authorization: {auth[:12]}... (the demo's key, cut "
                f"short here) and User-Agent: {request.header('User-Agent')}.)"
            )

    def _print_request(self, request: Any) -> None:
        status = request.status
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        print(f"    {request.method:<6} {request.path:<28} -> {status} {phrase}")
        if request.body:
            try:
                body = json.dumps(request.json(), ensure_ascii=False)
            except ValueError:
                body = request.body.decode("utf-8", "replace")
            print(wrap(body, " " * 11, " " * 12))

    def all_requests(self) -> None:
        if self.orq is None:
            return
        rows = []
        for n, r in enumerate(self.orq.requests, 1):
            who = ""
            if r.body:
                data = r.json()
                who = f"{data.get('external_id', '')} {data.get('display_name') or ''}".strip()
            elif r.method == "DELETE":
                who = f"{r.path.rsplit('/', 1)[-1]} (deleted)"
            rows.append([str(n), r.method, r.path, str(r.status), who])
        table(rows, ["#", "method", "path", "status", "contact"])


def sync_rows(pks: list[Any] | None) -> None:
    """The ContactSync rows of these users (None: of every demo user)."""
    from django_orq_contacts.models import ContactSync

    rows = ContactSync.objects.select_related("user").order_by("user_id")
    if pks is None:
        rows = rows.filter(user__username__startswith=USER_PREFIX)
    else:
        rows = rows.filter(user_id__in=pks)
    table(
        [
            [
                r.user.get_username() if r.user else "-",
                r.external_id,
                r.status,
                r.orq_id or "-",
                str(r.attempts),
            ]
            for r in rows
        ],
        ["user", "external_id", "status", "orq_id", "attempts"],
    )


def wait_synced(pks: list[Any], hint: str) -> None:
    from django.db.models import F

    from django_orq_contacts.models import ContactSync

    def done() -> bool:
        rows = ContactSync.objects.filter(user_id__in=pks)
        failed = rows.filter(status=ContactSync.Status.FAILED).first()
        if failed is not None:
            raise DemoError(f"Contact {failed.external_id} failed: {failed.last_error}")
        return rows.filter(
            status=ContactSync.Status.SYNCED, synced_version=F("version")
        ).count() == len(pks)

    wait_for("the contacts to be synced", done, hint=hint)


# --------------------------------------------------------------------------- the story


def run(parts: Parts) -> None:
    sys.path.insert(0, str(HERE))
    real_orq = bool(os.environ.get("ORQ_API_KEY") and os.environ.get("ORQ_BASE_URL"))

    heading(1, "Setting up")
    orq = None
    if real_orq:
        os.environ.setdefault("ORQ_EXTERNAL_ID_PREFIX", REAL_ORQ_PREFIX)
        say(
            label="Orq:",
            text=f"YOUR Orq at {os.environ['ORQ_BASE_URL']} (ORQ_API_KEY and ORQ_BASE_URL "
            f"are set). External ids get the prefix {os.environ['ORQ_EXTERNAL_ID_PREFIX']!r}; "
            "the demo's users are deleted again at the end.",
        )
    else:
        orq = start_stand_in_orq(parts)
        say(
            label="Orq:",
            text=f"a stand-in Orq server at {os.environ['ORQ_BASE_URL']} (python -m "
            "django_orq_contacts.testing.server); it records every request. Set ORQ_API_KEY "
            "and ORQ_BASE_URL to use a real Orq workspace instead.",
        )

    own_db = "DATABASE_URL" not in os.environ
    if own_db:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{DEMO_DB}{suffix}").unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{DEMO_DB}"
        say(
            label="Database:",
            text=f"{DEMO_DB.relative_to(HERE.parent)} (SQLite, made afresh for each run)",
        )
    else:
        say(label="Database:", text="DATABASE_URL from the environment")

    broker = os.environ.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER)
    # A private queue: no other worker on this broker can take the demo's tasks.
    queue = f"orq-demo-{secrets.token_hex(4)}"
    os.environ["CELERY_QUEUE"] = queue
    os.environ.pop("ORQ_QUEUE", None)
    problem = broker_problem(broker)
    if problem is None:
        os.environ["ORQ_PUBLISH"] = "thread"
    else:
        os.environ["ORQ_PUBLISH"] = "direct"

    os.environ["DJANGO_SETTINGS_MODULE"] = "example.settings"
    import django

    django.setup()
    from django.core.management import call_command

    if problem is None:
        parts.queue_to_delete = (broker, queue)
        # Started before migrate so the two overlap; it takes no task before it is ready.
        worker, log = start_worker(parts, queue)
    call_command("migrate", verbosity=0)
    say(label=" ", text="migrated (django.contrib.auth + django_orq_contacts)")

    if problem is None:
        wait_for_line(worker, log, " ready.", "Celery worker")
        say(
            label="Celery:",
            text=f"a real `celery -A example worker` on queue {queue} at {broker}; its log: {log}",
        )
        hint = f"See the worker's log: {log}"
    else:
        say(label="Celery:", text=f"NOT USED. The broker at {broker} does not answer ({problem}).")
        say(
            label=" ",
            text="Falling back to ORQ_PUBLISH=direct: each sync runs in this process "
            "right after commit. Start Redis (or set CELERY_BROKER_URL) to see the worker do "
            "the work.",
        )
        hint = ""

    story(orq, hint, runner="the worker" if problem is None else "this process (direct mode)")


def story(orq: Any, hint: str, runner: str) -> None:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from django_orq_contacts.models import ContactSync
    from django_orq_contacts.pausing import paused

    user_model = get_user_model()
    observer = Observer(orq)
    with paused(discard=True):  # a DATABASE_URL of yours may hold users of an earlier run
        user_model.objects.filter(username__startswith=USER_PREFIX).delete()

    heading(2, "Three users sign up")
    say(
        "Each save marks a ContactSync row in the same transaction and, after commit, queues "
        f"the task django_orq_contacts.sync_contact(<pk>), which {runner} runs."
    )
    users = [
        user_model.objects.create_user(
            username=USER_PREFIX + name, first_name=first, last_name=last, email=email
        )
        for name, first, last, email in PEOPLE
    ]
    pks = [u.pk for u in users]
    wait_synced(pks, hint)
    observer.new_requests()
    ada, _grace, alan = users

    heading(3, "Ada changes her email; then she logs in")
    ada.email = "ada.lovelace@example.org"
    ada.save()
    wait_synced([ada.pk], hint)
    observer.new_requests()
    version = ContactSync.objects.get(user=ada).version
    ada.last_login = timezone.now()
    ada.save(update_fields=["last_login"])  # what django.contrib.auth does on every login
    unchanged = ContactSync.objects.get(user=ada).version == version
    say(
        "The login saved only last_login, which is not part of the contact: "
        + ("no task was queued." if unchanged else "a task was queued (unexpected!).")
    )
    if orq is not None:
        time.sleep(0.5)  # a stray call would have arrived by now
        observer.new_requests()

    heading(4, "Alan deletes his account")
    row_pk = ContactSync.objects.get(user=alan).pk
    alan.delete()
    say(
        f"post_delete queued django_orq_contacts.delete_contact(<row id>) for {runner}; the "
        "ContactSync row outlives the user until Orq confirms the delete."
    )
    wait_for(
        "the contact to be deleted",
        lambda: not ContactSync.objects.filter(pk=row_pk).exists(),
        hint=hint,
    )
    observer.new_requests()

    heading(5, "An import that bypasses signals, then `manage.py orq_sync_contacts`")
    imported = user_model.objects.bulk_create(
        [
            user_model(username=USER_PREFIX + n, first_name=f, last_name=la, email=e)
            for n, f, la, e in IMPORTED
        ]
    )
    say(
        f"bulk_create() added {len(imported)} users and fired no signal, so nothing was sent "
        "yet. The command finds them (and anything else whose contact differs from the last "
        "sync) and syncs them inline:"
    )
    manage("orq_sync_contacts")
    observer.new_requests()
    say("Run it again: every contact is up to date, so it makes no call at all.")
    manage("orq_sync_contacts")
    observer.new_requests()

    heading(6, "What Orq holds now")
    expected = list(user_model.objects.filter(username__startswith=USER_PREFIX).order_by("pk"))
    if orq is not None:
        show_stand_in_contacts(orq, expected)
        say("Every request Orq received during the demo:")
        observer.all_requests()
    else:
        say("The sync state of the demo's users (a real Orq's requests cannot be listed here):")
        sync_rows([u.pk for u in expected])
        heading(7, "Tidying up your Orq workspace")
        rows = list(ContactSync.objects.filter(user__in=expected).values_list("pk", flat=True))
        for user in expected:
            user.delete()
        wait_for(
            "the demo's contacts to be deleted",
            lambda: not ContactSync.objects.filter(pk__in=rows).exists(),
            hint=hint,
        )
        say(f"Deleted the demo's {len(expected)} users, and with them their Orq contacts.")


def show_stand_in_contacts(orq: Any, users: list[Any]) -> None:
    from django_orq_contacts import payload

    contacts = {c["external_id"]: c for c in orq.contacts()}
    table(
        [
            [c["external_id"], c["display_name"] or "-", c["email"] or "-", c["_id"]]
            for c in contacts.values()
        ],
        ["external_id", "display_name", "email", "Orq _id"],
    )
    mismatches = []
    for user in users:
        sent = payload.build(user)
        stored = contacts.pop(sent["external_id"], None)
        if stored is None or any(stored[k] != v for k, v in sent.items()):
            mismatches.append(user.get_username())
    if mismatches or contacts:
        raise DemoError(f"Orq differs from the database: {mismatches or sorted(contacts)}")
    say(f"Orq matches the database: {len(users)} contacts, one per remaining user, Alan gone.")


def manage(*args: str) -> None:
    command = [sys.executable, str(HERE / "manage.py"), *args, "--no-progress"]
    print(f"    $ python manage.py {' '.join(args)}")
    done = subprocess.run(command, capture_output=True, text=True, cwd=HERE, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        print(f"      {line}")
    if done.returncode:
        raise DemoError(f"manage.py {' '.join(args)} exited with code {done.returncode}")


class Stopped(BaseException):
    """SIGTERM: leave like Ctrl-C does, through the clean-up."""


def on_sigterm(signum: int, frame: object) -> None:
    raise Stopped


def quiet_print(text: str) -> None:
    """Print, unless stdout is gone (``| head``): the clean-up must go on regardless."""
    with contextlib.suppress(OSError):
        print(text, flush=True)


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    parts = Parts()
    code = 0
    try:
        run(parts)
    except DemoError as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, Stopped) as exc:
        quiet_print("\nInterrupted." if isinstance(exc, KeyboardInterrupt) else "\nStopped.")
        code = 130 if isinstance(exc, KeyboardInterrupt) else 143
    except BrokenPipeError:
        # Whoever read our output went away; point stdout at nothing so exit stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave a worker behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        quiet_print("")
        quiet_print("== *. Stopping what the demo started ".ljust(WIDTH, "="))
        parts.stop()
    if code == 0:
        print(f"\nDone in {time.monotonic() - started:.1f}s. Logs of the parts: {parts.logdir}")
        print("Next: run the example project yourself, see example_project/README.md.")
    return code


if __name__ == "__main__":
    sys.exit(main())
