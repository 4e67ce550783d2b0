"""The one settings getter: ``ORQ_CONTACTS`` read at call time, defaults in one place.

Reading at call time (never caching at import) is what makes ``override_settings`` work in
tests and keeps a mis-typed key from being silently frozen into a module global.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

SETTINGS_NAME = "ORQ_CONTACTS"
API_KEY_ENV = "ORQ_API_KEY"

DEFAULTS: dict[str, Any] = {
    # Default None means: read the ORQ_API_KEY environment variable.
    "API_KEY": None,
    "BASE_URL": "https://my.orq.ai",
    "RESOURCE": "contacts",
    "TIMEOUT": (5, 30),
    "AUTO_SYNC": True,
    "SYNC_DELETES": True,
    # Delete the remote contact when SHOULD_SYNC turns false for a user that was synced.
    "DELETE_EXCLUDED": True,
    "EXTERNAL_ID": None,
    "CONTACT_BUILDER": None,
    "SHOULD_SYNC": None,
    # Model fields whose change makes a save worth syncing; None means "the fields the
    # default builder reads" (or every field when a CONTACT_BUILDER is set).
    "SYNC_FIELDS": None,
    "MAX_RETRIES": 8,
    "RETRY_BACKOFF": 2,
    "RETRY_BACKOFF_MAX": 600,
    # The longest Retry-After (or rate-limit reset) honoured; a server asking for a day is
    # more likely wrong than right, and every process would pause that long.
    "RETRY_AFTER_MAX": 3600,
    "QUEUE": None,
    "BACKEND": "django_orq_contacts.backends.http.HttpBackend",
    # Rows marked pending are left alone by the sweeper for this long, so the task enqueued
    # on commit gets the first go and the sweeper only mops up what the broker lost.
    "SWEEP_GRACE": 60,
    "SWEEP_BATCH": 500,
    # A claimed row whose worker vanished (SIGKILL, OOM) is reclaimable after this long.
    "LEASE_SECONDS": 300,
    # Seconds a publish may spend on connect, each read and each write before giving up
    # (broker down or hung); the row then waits for the sweeper.
    "PUBLISH_TIMEOUT": 2.0,
    # "thread": publish from a background thread (the request never waits on the broker);
    # "inline": publish in the committing thread; "direct": no Celery, sync right after
    # commit in the committing thread (tests and scripts).
    "PUBLISH": "thread",
    # PostgreSQL in autocommit only: commit the row a save marks without waiting for its WAL
    # flush (the user's own save is untouched). See state._bump for what that risks.
    "ASYNC_MARK_COMMIT": True,
    "RATE_LIMIT": None,
    # Open the shared circuit breaker after this many transient failures in a row (0: off),
    # and let one probe call through every BREAKER_COOLDOWN seconds while it is open.
    "BREAKER_THRESHOLD": 5,
    "BREAKER_COOLDOWN": 30,
    "CACHE_ALIAS": "default",
}


def get_setting(name: str) -> Any:
    """Return one ORQ_CONTACTS setting, falling back to its documented default."""
    if name not in DEFAULTS:
        raise KeyError(f"Unknown {SETTINGS_NAME} setting {name!r}")
    user_settings = getattr(settings, SETTINGS_NAME, None) or {}
    value = user_settings.get(name, DEFAULTS[name])
    if name == "API_KEY" and not value:
        # An explicit None (e.g. env("ORQ_API_KEY", default=None)) means the default too.
        return os.environ.get(API_KEY_ENV) or None
    return value


def unknown_setting_names() -> list[str]:
    user_settings = getattr(settings, SETTINGS_NAME, None) or {}
    return sorted(str(key) for key in user_settings if key not in DEFAULTS)


def get_timeout() -> tuple[float, float]:
    """TIMEOUT as a (connect, read) pair; a single number means both."""
    value = get_setting("TIMEOUT")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value), float(value))
    connect, read = value
    return (float(connect), float(read))


def get_callable(name: str) -> Any:
    """Import the callable named by a dotted-path setting, or None when unset.

    A callable may also be given directly (handy in tests and in settings files).
    """
    value = get_setting(name)
    if value is None or callable(value):
        return value
    return _import(str(value), name)


@lru_cache(maxsize=64)
def _import(path: str, setting: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        from .redaction import redact  # the value may be a key pasted in the wrong place

        raise ImproperlyConfigured(
            redact(f"{SETTINGS_NAME}[{setting!r}] = {path!r} cannot be imported: {exc}")
        ) from exc
