"""Contacts storage, one store per resource, and the validation of the fields clients send."""

from __future__ import annotations

import copy
import os
import re
import time
from datetime import datetime, timezone
from typing import Any

MAX_EXTERNAL_ID = 120
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
_PROFILE_STRINGS = ("display_name", "email", "avatar_url")


def new_id() -> str:
    """A ULID-shaped id: 48 bits of milliseconds then 80 random bits, Crockford base32."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_fields(
    data: dict[str, Any], *, resource: str, partial: bool
) -> tuple[dict[str, Any], str | None]:
    """Validate profile fields; return the ones sent, or an error message.

    Contacts accept ``null`` for the string fields; identities do not (omit to keep,
    ``""`` to clear), which is worth catching in tests of a client that targets both.
    """
    out: dict[str, Any] = {}
    if "external_id" in data or not partial:
        ext = data.get("external_id")
        if not isinstance(ext, str) or not ext.strip():
            return {}, "external_id is required and must be a non-empty string"
        if len(ext) > MAX_EXTERNAL_ID:
            return {}, f"external_id must be at most {MAX_EXTERNAL_ID} characters"
        out["external_id"] = ext
    nullable = resource == "contacts"
    for name in _PROFILE_STRINGS:
        if name not in data:
            continue
        value = data[name]
        if value is None and nullable:
            out[name] = None
        elif not isinstance(value, str):
            return {}, f"{name} must be a string" + (" or null" if nullable else "")
        elif name == "email" and value and not _EMAIL_RE.match(value):
            return {}, "email must be a valid email address"
        else:
            # An empty string clears the field on identities; store it as "no value".
            out[name] = None if (value == "" and not nullable) else value
    if "tags" in data and not (data["tags"] is None and nullable):
        tags = data["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return {}, "tags must be a list of strings"
        out["tags"] = list(tags)
    if "metadata" in data and not (data["metadata"] is None and nullable):
        if not isinstance(data["metadata"], dict):
            return {}, "metadata must be an object"
        out["metadata"] = copy.deepcopy(data["metadata"])
    return out, None


class Store:
    """Contacts of one resource, kept in creation order and indexed by ``_id`` and external id."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        self.id_by_external: dict[str, str] = {}

    def find(self, key: str) -> dict[str, Any] | None:
        found = self.by_id.get(key)
        if found is None and key in self.id_by_external:
            found = self.by_id[self.id_by_external[key]]
        return found

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        now = now_iso()
        record: dict[str, Any] = {
            "_id": new_id(),
            "external_id": fields["external_id"],
            "display_name": None,
            "email": None,
            "avatar_url": None,
            "tags": [],
            "metadata": {},
            "created": now,
            "updated": now,
        }
        record.update(fields)
        self.by_id[record["_id"]] = record
        self.id_by_external[record["external_id"]] = record["_id"]
        return record

    def replace(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        """Upsert semantics: every profile field not sent goes back to its empty value."""
        record.update(display_name=None, email=None, avatar_url=None, tags=[], metadata={})
        self.update(record, fields)

    def update(self, record: dict[str, Any], fields: dict[str, Any]) -> None:
        old_ext = record["external_id"]
        record.update(fields)
        record["updated"] = now_iso()
        if record["external_id"] != old_ext:
            del self.id_by_external[old_ext]
            self.id_by_external[record["external_id"]] = record["_id"]

    def delete(self, record: dict[str, Any]) -> None:
        del self.by_id[record["_id"]]
        del self.id_by_external[record["external_id"]]
