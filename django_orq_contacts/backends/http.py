"""The real backend: Orq's contacts or identities API over HTTP.

Upsert with the fewest calls under every API generation. POST is tried first (an upsert on
most contacts releases); a duplicate-style 4xx falls back to PATCH by external id. Where POST
is known to be create-only (identities always; contacts once a duplicate answer has shown it),
a contact synced before is PATCHed first (404 -> POST), saving the doomed POST of each update.
PATCH is never tried first on contacts that have not shown it: upsert-era releases do not
document it.
"""

from __future__ import annotations

from typing import Any

from ..client import OrqClient, item_path
from ..conf import get_setting
from ..exceptions import OrqPermanentError
from .base import BaseBackend, UpsertResult

DUPLICATE_HINTS = ("exist", "duplicate", "conflict", "already")
# (base URL, resource) pairs whose POST has answered "duplicate": create-only servers.
_create_only: set[tuple[str, str]] = set()


def is_duplicate(error: OrqPermanentError) -> bool:
    if error.status == 409:
        return True
    text = f"{error} {error.body}".lower()
    return error.status in (400, 422) and any(hint in text for hint in DUPLICATE_HINTS)


def wire_body(payload: dict[str, Any], resource: str) -> dict[str, Any]:
    """The request body for ``resource`` from a full payload, fields in the SDK's order."""
    if resource == "contacts":
        # null clears display_name/email/avatar_url on contacts.
        return dict(payload)
    # identities fields are not nullable: "" clears a text field; omitting keeps the old
    # value, which for the avatar (no empty URI allowed) is the best that can be done.
    body: dict[str, Any] = {}
    for name, value in payload.items():
        if value is None:
            if name == "avatar_url":
                continue
            value = ""
        body[name] = value
    return body


def _orq_id(data: Any) -> str:
    if isinstance(data, dict):
        inner = data.get("identity", data)
        if isinstance(inner, dict):
            value = inner.get("_id") or inner.get("id")
            if value:
                return str(value)
    return ""


class HttpBackend(BaseBackend):
    def __init__(self, client: OrqClient | None = None, resource: str | None = None) -> None:
        self.client = client or OrqClient()
        self.resource = resource or str(get_setting("RESOURCE"))

    def upsert(self, payload: dict[str, Any], *, known: bool = False) -> UpsertResult:
        body = wire_body(payload, self.resource)
        patch_body = {k: v for k, v in body.items() if k != "external_id"}
        path = item_path(self.resource, payload["external_id"])
        server = (self.client.base_url, self.resource)
        if known and (self.resource == "identities" or server in _create_only):
            try:
                return UpsertResult(_orq_id(self.client.request("PATCH", path, patch_body).data))
            except OrqPermanentError as exc:
                if exc.status != 404:
                    raise
            # Deleted on Orq's side since our last sync: create it again.
            return UpsertResult(self._post(body).orq_id, calls=2)
        try:
            return self._post(body)
        except OrqPermanentError as exc:
            if not is_duplicate(exc):
                raise
            _create_only.add(server)
        response = self.client.request("PATCH", path, patch_body)
        return UpsertResult(_orq_id(response.data), calls=2)

    def _post(self, body: dict[str, Any]) -> UpsertResult:
        return UpsertResult(_orq_id(self.client.request("POST", f"/v2/{self.resource}", body).data))

    def delete(self, external_id: str) -> int:
        try:
            self.client.request("DELETE", item_path(self.resource, external_id))
        except OrqPermanentError as exc:
            if exc.status != 404:
                raise
        return 1
