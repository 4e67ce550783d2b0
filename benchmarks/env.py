"""The benchmark's surroundings: its database, users, stand-in Orq server, workers, children.

Everything started here is stopped here, by process id: the harness leaves no server,
worker or queued task behind.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DB_NAME = os.environ.get("ORQ_BENCH_DB", "orq_bench")
REDIS_URL = os.environ.get("ORQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
QUEUE = os.environ.get("ORQ_BENCH_QUEUE", "orq-bench")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        ORQ_BENCH_DB=DB_NAME,
        ORQ_BENCH_REDIS_URL=REDIS_URL,
        ORQ_BENCH_QUEUE=QUEUE,
        PYTHONPATH=str(ROOT),
        # Loopback only, whatever proxy the shell has set.
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def setup_django() -> None:
    """Create the benchmark database if needed, migrate it, and set Django up here."""
    import psycopg

    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    ) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    os.environ.update({k: v for k, v in child_env().items() if k.startswith(("ORQ_", "DJANGO"))})
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def reset() -> None:
    """No users, no sync rows, an empty queue and no limiter state."""
    import redis
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE auth_user, django_orq_contacts_contactsync RESTART IDENTITY CASCADE"
        )
    redis.Redis.from_url(REDIS_URL).flushdb()


def create_users(count: int, start: int = 0) -> None:
    """``count`` users without signals, all sharing one (cheap) password hash."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    user_model = get_user_model()
    password = make_password("bench")
    step = 5000
    for first in range(start, start + count, step):
        last = min(start + count, first + step)
        user_model.objects.bulk_create(
            user_model(
                username=f"user{i}",
                email=f"user{i}@example.com",
                first_name="Ada",
                last_name=f"L{i}",
                password=password,
            )
            for i in range(first, last)
        )


def run_child(*args: str, timeout: float = 1800, **env: str) -> dict[str, Any]:
    """Run ``python -m benchmarks.child ARGS`` and return the JSON it prints last.

    The command's own exit code is in that JSON (a sync with failures exits 1), so only
    a missing result counts as the child failing.
    """
    return run_json([sys.executable, "-m", "benchmarks.child", *args], timeout, **env)


def run_json(command: list[str], timeout: float = 1800, **env: str) -> dict[str, Any]:
    """Run ``command`` and return the JSON line it prints last."""
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        name = " ".join(command[1:3])
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}") from None


@contextmanager
def fake_server(latency: float, rate_limit: int | None = None) -> Iterator[Any]:
    """The stand-in Orq server in its own process (it must not share our interpreter)."""
    from django_orq_contacts.testing.server import OrqServerControl

    command = [
        sys.executable,
        "-m",
        "django_orq_contacts.testing.server",
        "--port",
        "0",
        "--latency",
        str(latency),
    ]
    if rate_limit is not None:
        command += ["--rate-limit", str(rate_limit), "--rate-window", "1"]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield OrqServerControl(url).wait_until_ready()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def celery_workers(count: int, **env: str) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` real ``celery worker`` processes on the benchmark's queue."""
    RESULTS.mkdir(exist_ok=True)
    workers: list[subprocess.Popen[str]] = []
    logs = []
    try:
        for n in range(count):
            log_path = RESULTS / f"worker{n + 1}.log"
            log = open(log_path, "w")  # noqa: SIM115 - closed below, after the process ends
            logs.append((log, log_path))
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "benchmarks.celery_app",
                        "worker",
                        "-Q",
                        QUEUE,
                        "-c",
                        "2",
                        "-P",
                        "prefork",
                        "-n",
                        f"bench{n + 1}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "-l",
                        "INFO",
                    ],
                    cwd=ROOT,
                    env=child_env(**env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 60
        for _, path in logs:
            while "ready." not in path.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"celery worker not ready; see {path}")
                time.sleep(0.2)
        yield workers
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the task in hand
        for proc in workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log, _ in logs:
            log.close()


def machine() -> dict[str, str]:
    from django.db import connection

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    import redis

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": platform.python_version(),
        "postgresql": postgres,
        "redis": str(redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
