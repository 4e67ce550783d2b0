"""Hooks the fault suite's settings name by dotted path."""

from __future__ import annotations

from typing import Any


def is_active(user: Any) -> bool:
    """SHOULD_SYNC: deactivated users have no contact."""
    return bool(user.is_active)
