"""The example project served on 127.0.0.1 for a real browser, and headless Debian Chromium.

The site runs as it would for a developer: ``manage.py runserver`` and a real ``celery
worker`` (both subprocesses of the example project), a fresh SQLite file, and the stand-in
Orq server in this process as the API. Only Debian's ``chromium`` and ``chromium-driver`` are
used; nothing is downloaded. Under CI (``CI`` set) a missing browser fails the run instead of
skipping, so the browser test cannot silently stop running.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_orq_contacts.testing.server import FakeOrqServer

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "example_project"
ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# A key the admin pages are searched for: it must never reach the browser.
API_KEY = "sk-orq-browser-canary-3e8d1f"
ADMIN_PASSWORD = "browser-test-password"
PEOPLE = [
    ("alice", "Alice", "alice@example.com"),
    ("bob", "Bob", "bob@example.com"),
    ("carol", "Carol", "carol@example.com"),
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
]


def unavailable(reason: str) -> None:
    """Skip locally with the reason; fail under CI, where the browser must be there."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"browser test cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (install Debian's chromium and chromium-driver; CI fails here)")


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ExampleSite:
    url: str
    orq: FakeOrqServer
    users: dict[str, int]
    password: str
    logs: Path


class Processes:
    """The subprocesses this fixture started, each stopped by its own handle."""

    def __init__(self) -> None:
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_path = ARTIFACTS / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, *args], cwd=EXAMPLE, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.running.append((process, log_path))
        return process

    def check_alive(self) -> None:
        for process, log_path in self.running:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{process.args} exited with {process.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for process, _ in reversed(self.running):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


def run_manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# Users made with bulk_create (no signals): nothing is synced before the browser asks.
SETUP_USERS = """
import json, sys, django
django.setup()
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
User = get_user_model()
password, people = sys.argv[1], json.loads(sys.argv[2])
User.objects.bulk_create(
    [User(username="admin", email="admin@example.com", is_staff=True, is_superuser=True,
          password=make_password(password))]
    + [User(username=u, first_name=f, email=e) for u, f, e in people]
)
print(json.dumps({u.username: u.pk for u in User.objects.all()}))
"""


def site_env(orq: FakeOrqServer, database: Path) -> dict[str, str]:
    base_queue = os.environ.get("ORQ_TEST_QUEUE", "orq-tests")
    queue = f"{base_queue}-browser-{uuid.uuid4().hex[:8]}"  # no stale task from an old run
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="example.settings",
        DEBUG="true",  # runserver serves the admin's CSS, so the screenshot looks right
        DATABASE_URL=f"sqlite:///{database}",
        CELERY_BROKER_URL=os.environ.get("ORQ_TEST_BROKER_URL", "redis://127.0.0.1:6379/15"),
        CELERY_QUEUE=queue,
        ORQ_API_KEY=API_KEY,
        ORQ_BASE_URL=orq.url,
        ORQ_PUBLISH="thread",
        PYTHONUNBUFFERED="1",
    )
    for name in ("ORQ_BACKEND", "ORQ_QUEUE", "ORQ_EXTERNAL_ID_PREFIX", "ORQ_RATE_LIMIT"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def chromium_paths() -> tuple[str, str]:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            unavailable(f"{path} is missing")
    try:
        import selenium  # noqa: F401
    except ImportError:
        unavailable("the selenium package is not installed (pip install -e '.[test]')")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def example_site(chromium_paths: tuple[str, str]) -> Iterator[ExampleSite]:
    if not (EXAMPLE / "example" / "settings.py").exists():
        pytest.fail("example_project/example/settings.py is missing", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    orq = FakeOrqServer(api_key=API_KEY).start()
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="orq-browser-") as tmp:
        env = site_env(orq, Path(tmp) / "db.sqlite3")
        try:
            run_manage(env, "manage.py", "migrate", "--noinput", "-v0")
            users = json.loads(
                run_manage(env, "-c", SETUP_USERS, ADMIN_PASSWORD, json.dumps(PEOPLE))
            )
            worker = processes.start(
                "celery-worker",
                [
                    "-m",
                    "celery",
                    "-A",
                    "example",
                    "worker",
                    "-Q",
                    env["CELERY_QUEUE"],
                    "--pool",
                    "solo",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--loglevel",
                    "INFO",
                ],
                env,
            )
            port = free_port()
            processes.start(
                "runserver", ["manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env
            )
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(url, processes), f"the example site at {url}")
            worker_log = ARTIFACTS / "celery-worker.log"
            wait_until(
                lambda: (
                    processes.check_alive() or " ready." in worker_log.read_text(errors="replace")
                ),
                f"the celery worker (pid {worker.pid}) to be ready",
                timeout=60,
            )
            yield ExampleSite(url, orq, users, ADMIN_PASSWORD, ARTIFACTS)
        finally:
            processes.stop_all()
            orq.stop()


def _answers(url: str, processes: Processes) -> bool:
    processes.check_alive()
    try:
        with urllib.request.urlopen(f"{url}/admin/login/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture
def browser(chromium_paths: tuple[str, str]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # with the driver path too, Selenium Manager stays idle
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="orq-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        service = Service(
            executable_path=chromedriver, log_output=str(ARTIFACTS / "chromedriver.log")
        )
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()
