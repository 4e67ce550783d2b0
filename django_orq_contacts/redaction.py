"""Scrub secrets and personal data from text that may reach logs, the database or the admin."""

from __future__ import annotations

import re

from django.conf import settings

EMAIL_RE = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+")
BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")


def _api_key() -> str | None:
    # Imported lazily: conf imports nothing from here, and redact() must work even while
    # settings are half configured (it runs inside exception constructors).
    from .conf import get_setting

    try:
        key = get_setting("API_KEY") if settings.configured else None
    except Exception:  # a broken settings module must not hide the original error
        return None
    return str(key) if key else None


def redact(text: str) -> str:
    """Remove the API key, bearer tokens and email addresses from ``text``."""
    # Bearer tokens first: replacing the key first left "Bearer [redacted] key]".
    text = BEARER_RE.sub(r"\1[redacted]", text)
    key = _api_key()
    if key and len(key) >= 4:
        text = text.replace(key, "[redacted key]")
    return EMAIL_RE.sub("[redacted email]", text)
