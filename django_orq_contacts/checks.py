"""System checks: report a misconfiguration at ``manage.py check`` time, with a hint.

No message ever includes the API key, even where the key is what is wrong.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import SETTINGS_NAME, get_callable, get_setting, get_timeout, unknown_setting_names
from .ratelimit import parse_rate
from .redaction import redact

HTTP_BACKEND = "django_orq_contacts.backends.http.HttpBackend"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
PROCESS_LOCAL_CACHES = ("LocMemCache", "DummyCache")


def _setting(name: str) -> str:
    return f"{SETTINGS_NAME}[{name!r}]"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    raw = getattr(settings, SETTINGS_NAME, {})
    if not isinstance(raw, dict):
        return [
            Error(
                f"{SETTINGS_NAME} must be a dict.",
                hint="See the README's settings table.",
                id="orq_contacts.E010",
            )
        ]
    for name in unknown_setting_names():
        messages.append(
            Warning(
                f"Unknown setting {_setting(name)} is ignored.",
                hint="Check the spelling against the README's settings table.",
                id="orq_contacts.W001",
            )
        )
    messages += _check_backend_and_key()
    messages += _check_base_url(get_setting("BASE_URL"))
    messages += _check_dotted_paths()
    messages += _check_values()
    messages += _check_rate_limit()
    # Messages echo setting values (a dotted path, a rate); a key pasted into the wrong
    # setting would be printed by `manage.py check` and kept in CI logs.
    for message in messages:
        message.msg = redact(message.msg)
        message.hint = redact(message.hint) if message.hint else message.hint
    return messages


def _check_backend_and_key() -> list[CheckMessage]:
    backend = get_setting("BACKEND")
    if isinstance(backend, str):
        try:
            import_string(backend)
        except ImportError as exc:
            return [
                Error(
                    f"{_setting('BACKEND')} cannot be imported: {exc}",
                    hint="Use a dotted path such as "
                    "'django_orq_contacts.backends.locmem.LocmemBackend'.",
                    id="orq_contacts.E002",
                )
            ]
    uses_http = backend == HTTP_BACKEND or getattr(backend, "__name__", "") == "HttpBackend"
    if uses_http and not get_setting("API_KEY"):
        return [
            Error(
                "No Orq API key is configured for the HTTP backend.",
                hint=f"Set {_setting('API_KEY')} or the ORQ_API_KEY environment "
                "variable, or choose another BACKEND for this environment.",
                id="orq_contacts.E001",
            )
        ]
    return []


def base_url_problem(url: object) -> str | None:
    """Why ``url`` is not an acceptable BASE_URL, or None when it is."""
    if not isinstance(url, str) or not url.strip():
        return "is blank"
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an absolute http(s) URL"
    if parts.username or parts.password:
        return "must not contain credentials (the API key goes in API_KEY)"
    if parts.query or parts.fragment:
        return "must not have a query string or fragment"
    if parts.scheme == "http" and not is_loopback(host):
        return "must use https (plain http is allowed only for a loopback host)"
    return None


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "localhost.evil.test" is a name like any other


def _check_base_url(url: object) -> list[CheckMessage]:
    problem = base_url_problem(url)
    if problem is None:
        return []
    return [
        Error(
            f"{_setting('BASE_URL')} {problem}.",
            hint="The default is https://my.orq.ai; tests use http://127.0.0.1:<port>.",
            id="orq_contacts.E003",
        )
    ]


def _check_dotted_paths() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    names = ["CONTACT_BUILDER", "SHOULD_SYNC"]
    external_id = get_setting("EXTERNAL_ID")
    if external_id is not None and (callable(external_id) or "." in str(external_id)):
        names.append("EXTERNAL_ID")
    for name in names:
        try:
            value = get_callable(name)
        except ImproperlyConfigured as exc:
            messages.append(
                Error(
                    str(exc), hint="Give a dotted path to a callable(user).", id="orq_contacts.E004"
                )
            )
            continue
        if value is not None and not callable(value):
            messages.append(
                Error(
                    f"{_setting(name)} is not callable.",
                    hint="Give a dotted path to a callable(user).",
                    id="orq_contacts.E004",
                )
            )
    return messages


def _check_values() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if get_setting("RESOURCE") not in ("contacts", "identities"):
        messages.append(
            Error(
                f"{_setting('RESOURCE')} must be 'contacts' or 'identities'.",
                id="orq_contacts.E005",
            )
        )
    try:
        timeouts = get_timeout()
        if min(timeouts) <= 0:
            raise ValueError
    except (TypeError, ValueError):
        messages.append(
            Error(
                f"{_setting('TIMEOUT')} must be a positive number or a "
                "(connect, read) pair of them.",
                hint="For example (5, 30).",
                id="orq_contacts.E006",
            )
        )
    for name in (
        "MAX_RETRIES",
        "RETRY_BACKOFF",
        "RETRY_BACKOFF_MAX",
        "RETRY_AFTER_MAX",
        "SWEEP_GRACE",
        "SWEEP_BATCH",
        "LEASE_SECONDS",
        "PUBLISH_TIMEOUT",
        "BREAKER_THRESHOLD",
        "BREAKER_COOLDOWN",
    ):
        value = get_setting(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            messages.append(
                Error(f"{_setting(name)} must be a number >= 0.", id="orq_contacts.E007")
            )
    if get_setting("PUBLISH") not in ("thread", "inline", "direct"):
        messages.append(
            Error(
                f"{_setting('PUBLISH')} must be 'thread', 'inline' or 'direct'.",
                id="orq_contacts.E008",
            )
        )
    return messages


def _check_rate_limit() -> list[CheckMessage]:
    try:
        rate = parse_rate(get_setting("RATE_LIMIT"))
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="orq_contacts.E009")]
    if rate is None:
        return []
    alias = get_setting("CACHE_ALIAS")
    backend = str(settings.CACHES.get(alias, {}).get("BACKEND", ""))
    if backend.endswith(PROCESS_LOCAL_CACHES) or not backend:
        return [
            Warning(
                f"{_setting('RATE_LIMIT')} is set but the cache {alias!r} is local to "
                "each process, so every process gets the whole limit.",
                hint="Use a shared cache (Redis, Memcached, database) or set "
                f"{_setting('CACHE_ALIAS')} to one.",
                id="orq_contacts.W002",
            )
        ]
    return []
