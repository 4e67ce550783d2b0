"""The API itself: ``/v2/contacts`` and ``/v2/identities`` over one store per resource."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from .store import Store, clean_fields
from .wire import RESOURCES, Answer, error, json_answer, singular

# "upsert": POST /v2/contacts replaces a contact with the same external id;
# "create_only": it answers 409 like identities always do.
Mode = Literal["upsert", "create_only"]

MAX_PAGE = 50
DEFAULT_PAGE = 10


class ContactsApi:
    """The routes, run under the server's lock (shared so inspection sees a consistent store)."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.stores = {name: Store() for name in RESOURCES}

    def reset(self) -> None:
        self.stores = {name: Store() for name in RESOURCES}

    def store(self, resource: str) -> Store:
        if resource not in self.stores:
            raise ValueError(f"resource must be one of {RESOURCES}")
        return self.stores[resource]

    def route(self, method: str, target: str, body: bytes, *, mode: Mode) -> Answer:
        split = urlsplit(target)
        parts = split.path.split("/", 3)  # "", "v2", resource, rest (kept whole)
        if len(parts) < 3 or parts[1] != "v2" or parts[2] not in RESOURCES:
            return json_answer(404, {"error": "Not found"})
        resource = parts[2]
        # The rest may hold a percent-encoded "/" from an external id, so decode it whole.
        key = unquote(parts[3]) if len(parts) == 4 else ""
        if not key:
            if method == "POST":
                return self._create(resource, body, mode)
            if method == "GET":
                return self._list(resource, parse_qs(split.query))
            return json_answer(405, {"error": "Method not allowed"}, [("Allow", "GET, POST")])
        if method == "GET":
            return self._get(resource, key)
        if method == "PATCH":
            return self._patch(resource, key, body)
        if method == "DELETE":
            return self._delete(resource, key)
        return json_answer(405, {"error": "Method not allowed"}, [("Allow", "GET, PATCH, DELETE")])

    def _fields(
        self, resource: str, body: bytes, *, partial: bool
    ) -> tuple[dict[str, Any], Answer | None]:
        """The validated profile fields of a JSON body, or the error answer to send."""
        try:
            data = json.loads(body)
        except ValueError:
            return {}, error(resource, 400, "Invalid JSON body")
        if not isinstance(data, dict):
            return {}, error(resource, 422, "Request body must be a JSON object")
        fields, problem = clean_fields(data, resource=resource, partial=partial)
        if problem is not None:
            return {}, error(resource, 422, problem)
        return fields, None

    def _wrap(
        self,
        resource: str,
        status: int,
        record: dict[str, Any],
        headers: list[tuple[str, str]] | None = None,
    ) -> Answer:
        body = copy.deepcopy(record)
        return json_answer(
            status, {"identity": body} if resource == "identities" else body, headers
        )

    def _create(self, resource: str, body: bytes, mode: Mode) -> Answer:
        fields, problem = self._fields(resource, body, partial=False)
        if problem is not None:
            return problem
        with self._lock:
            store = self.stores[resource]
            record_id = store.id_by_external.get(fields["external_id"])
            existing = None if record_id is None else store.by_id[record_id]
            if resource == "identities" or mode == "create_only":
                if existing is not None:
                    return error(
                        resource, 409, f"{singular(resource)} with external_id already exists"
                    )
                record = store.create(fields)
                location = (
                    [("Location", f"/v2/{resource}/{record['_id']}")]
                    if resource == "identities"
                    else []
                )
                return self._wrap(resource, 201, record, location)
            if existing is None:
                record = store.create(fields)
            else:
                record = existing
                store.replace(record, fields)
            return self._wrap(resource, 200, record)

    def _get(self, resource: str, key: str) -> Answer:
        with self._lock:
            record = self.stores[resource].find(key)
            if record is None:
                return error(resource, 404, f"{singular(resource)} not found")
            return self._wrap(resource, 200, record)

    def _patch(self, resource: str, key: str, body: bytes) -> Answer:
        fields, problem = self._fields(resource, body, partial=True)
        if problem is not None:
            return problem
        with self._lock:
            store = self.stores[resource]
            record = store.find(key)
            if record is None:
                return error(resource, 404, f"{singular(resource)} not found", message_key=True)
            new_ext = fields.get("external_id", record["external_id"])
            if store.id_by_external.get(new_ext, record["_id"]) != record["_id"]:
                return error(resource, 409, f"{singular(resource)} with external_id already exists")
            store.update(record, fields)
            return self._wrap(resource, 200, record)

    def _delete(self, resource: str, key: str) -> Answer:
        with self._lock:
            store = self.stores[resource]
            record = store.find(key)
            if record is None:
                return error(resource, 404, f"{singular(resource)} not found")
            store.delete(record)
        if resource == "identities":
            return json_answer(200, {})
        return Answer(204, content_type=None)

    def _list(self, resource: str, query: dict[str, list[str]]) -> Answer:
        try:
            limit = int(query.get("limit", [str(DEFAULT_PAGE)])[0])
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_PAGE:
            return error(resource, 422, f"limit must be an integer from 1 to {MAX_PAGE}")
        wanted_tags = set(query.get("filter_by.tags", []))
        with self._lock:
            records = list(self.stores[resource].by_id.values())
            after = query.get("starting_after", [""])[0]
            if after:
                ids = [r["_id"] for r in records]
                if after not in ids:
                    return error(resource, 422, "starting_after does not name a known _id")
                records = records[ids.index(after) + 1 :]
            if wanted_tags:
                records = [r for r in records if wanted_tags <= set(r["tags"])]
            page = copy.deepcopy(records[:limit])
        return json_answer(200, {"object": "list", "data": page, "has_more": len(records) > limit})
