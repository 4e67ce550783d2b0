"""User -> contact fields: the default mapping, the hooks for a custom one, and validation.

Everything a builder returns is normalised into plain JSON and checked against documented
limits here, before any HTTP call, so a bad payload fails one user permanently instead of
costing a call (and a retry loop) per attempt.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator
from django.db.models import Model
from django.utils.functional import Promise

from .conf import get_callable, get_setting
from .exceptions import PayloadError

FIELDS = ("external_id", "display_name", "email", "avatar_url", "tags", "metadata")
PROFILE_FIELDS = FIELDS[1:]

# Documented limits (README, "Contact mapping"). external_id's comes from the API itself.
MAX_EXTERNAL_ID = 120
MAX_DISPLAY_NAME = 512
MAX_EMAIL = 254
MAX_AVATAR_URL = 2048
MAX_TAGS = 100
MAX_TAG = 128
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
# Far below Python's int -> str digit limit (which would raise ValueError in json.dumps) and
# far above any number JSON readers keep exactly (2**53).
MAX_INT_BITS = 1024

# Saves touching only these fields never need a sync (a login updates last_login).
NEVER_SYNCED_FIELDS = frozenset({"last_login", "password"})

_email_validator = EmailValidator()
_url_validator = URLValidator(schemes=["http", "https"])


def external_id_for(user: Model) -> str:
    """The user's stable Orq external id, from the EXTERNAL_ID setting (default: the pk)."""
    setting = get_setting("EXTERNAL_ID")
    try:
        if setting is None:
            value: Any = user.pk
        elif callable(setting) or "." in str(setting):
            value = get_callable("EXTERNAL_ID")(user)
        else:
            value = getattr(user, str(setting))
        # str() itself can fail (an int over sys.get_int_max_str_digits()).
        raw = None if value is None else str(value)
    except Exception as exc:
        # Like a failing CONTACT_BUILDER: permanent for this user, not a crash of the task.
        raise PayloadError(f"EXTERNAL_ID raised {type(exc).__name__}") from exc
    if raw is None:
        raise PayloadError("external_id is empty (is the user saved?)")
    text = _clean_text(raw, "external_id")
    if not text.strip():
        raise PayloadError("external_id is empty")
    if len(text) > MAX_EXTERNAL_ID:
        raise PayloadError(f"external_id is longer than {MAX_EXTERNAL_ID} characters")
    return text


def should_sync(user: Model) -> bool:
    predicate = get_callable("SHOULD_SYNC")
    return True if predicate is None else bool(predicate(user))


def default_contact(user: Any) -> dict[str, Any]:
    """The default profile: full name (else username), email, and the username as metadata."""
    username = user.get_username()
    full_name = user.get_full_name().strip() if hasattr(user, "get_full_name") else ""
    email = getattr(user, user.get_email_field_name(), None) or None
    return {
        "display_name": full_name or username or None,
        # None (sent as null, or "" for identities) clears a stale email in Orq.
        "email": email,
        "avatar_url": None,
        "tags": [],
        "metadata": {"username": username},
    }


def build(user: Model) -> dict[str, Any]:
    """The full, validated contact body for ``user``, fields in the SDK's order."""
    builder = get_callable("CONTACT_BUILDER") or default_contact
    try:
        profile = builder(user)
    except PayloadError:
        raise
    except Exception as exc:
        raise PayloadError(f"CONTACT_BUILDER raised {type(exc).__name__}") from exc
    if not isinstance(profile, Mapping):
        raise PayloadError(f"CONTACT_BUILDER returned {type(profile).__name__}, not a dict")
    unknown = set(profile) - set(PROFILE_FIELDS)
    if unknown:
        raise PayloadError(f"unknown contact fields: {sorted(map(str, unknown))}")
    return {
        "external_id": external_id_for(user),
        "display_name": _optional_text(
            profile.get("display_name"), "display_name", MAX_DISPLAY_NAME
        ),
        "email": _email(profile.get("email")),
        "avatar_url": _avatar_url(profile.get("avatar_url")),
        "tags": _tags(profile.get("tags")),
        "metadata": _metadata(profile.get("metadata")),
    }


def payload_hash(payload: Mapping[str, Any], resource: str) -> str:
    """A stable digest of what would be sent; equal digests mean no call is needed."""
    canonical = json.dumps(
        [resource, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def is_sync_relevant(update_fields: frozenset[str] | None) -> bool:
    """Whether a save with these ``update_fields`` may change the contact."""
    if update_fields is None:
        return True
    watched = get_setting("SYNC_FIELDS")
    if watched is not None:
        return bool(update_fields & set(watched))
    return bool(update_fields - NEVER_SYNCED_FIELDS)


def _clean_text(value: str, field: str) -> str:
    if "\x00" in value:
        raise PayloadError(f"{field} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{field} contains a lone surrogate") from None
    return value


def _optional_text(value: Any, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, Promise)):
        raise PayloadError(f"{field} must be a string, not {type(value).__name__}")
    text = _clean_text(str(value), field).strip()
    if len(text) > limit:
        raise PayloadError(f"{field} is longer than {limit} characters")
    return text or None


def _email(value: Any) -> str | None:
    text = _optional_text(value, "email", MAX_EMAIL)
    if text is not None:
        try:
            _email_validator(text)
        except ValidationError:
            raise PayloadError("email is not a valid address") from None
    return text


def _avatar_url(value: Any) -> str | None:
    text = _optional_text(value, "avatar_url", MAX_AVATAR_URL)
    if text is not None:
        try:
            _url_validator(text)
        except ValidationError:
            raise PayloadError("avatar_url is not an http(s) URL") from None
    return text


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise PayloadError("tags must be a list of strings")
    tags = [_optional_text(tag, "tag", MAX_TAG) for tag in value]
    if any(tag is None for tag in tags):
        raise PayloadError("tags must be non-empty strings")
    # Sets have no order; sorting keeps the payload hash stable between processes.
    result = [t for t in tags if t is not None]
    if isinstance(value, (set, frozenset)):
        result.sort()
    if len(result) > MAX_TAGS:
        raise PayloadError(f"more than {MAX_TAGS} tags")
    return result


def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PayloadError("metadata must be a dict")
    data = _json_value(value, depth=0)
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=True))
    if size > MAX_METADATA_BYTES:
        raise PayloadError(f"metadata is {size} bytes as JSON, over {MAX_METADATA_BYTES}")
    assert isinstance(data, dict)
    return data


def _json_value(value: Any, depth: int) -> Any:
    """Turn common Python values into JSON ones; refuse what has no faithful JSON form."""
    if depth > MAX_METADATA_DEPTH:
        raise PayloadError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise PayloadError("metadata contains an integer too large for JSON")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError("metadata contains NaN or infinity")
        return value
    if isinstance(value, (str, Promise)):
        return _clean_text(str(value), "metadata")
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise PayloadError("metadata contains a non-finite Decimal")
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, (str, Promise)):
                raise PayloadError("metadata keys must be strings")
            out[_clean_text(str(key), "metadata key")] = _json_value(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_json_value(item, depth + 1) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [_json_value(item, depth + 1) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    raise PayloadError(f"metadata value of type {type(value).__name__} is not JSON")
