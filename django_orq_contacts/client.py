"""The only module that speaks HTTP: session, headers, timeouts, and mapping errors to classes.

One ``requests.Session`` per process and thread: a session made before a Celery prefork fork
would share its pooled sockets with the children, and sessions are not thread-safe, which
matters for ``orq_sync_contacts --concurrency``.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests
import urllib3

from . import __version__, circuit, ratelimit
from .conf import get_setting, get_timeout
from .exceptions import (
    OrqAPIError,
    OrqAuthError,
    OrqConfigurationError,
    OrqConnectionError,
    OrqPermanentError,
    OrqRateLimitError,
    OrqRedirectError,
    OrqServerError,
)

logger = logging.getLogger(__name__)

USER_AGENT = f"django-orq-contacts/{__version__}"
# Bodies past this are cut: success bodies are small, and an error page is kept only in part.
MAX_BODY = 1024 * 1024
_local = threading.local()


def get_session() -> requests.Session:
    """This process's and thread's session, made anew after a fork.

    The environment is read once per session (see ``proxies_for``), not on every call as
    requests does by default: that re-reading of proxies, CA bundle and ``~/.netrc`` cost
    more than the rest of a call. ``~/.netrc`` is not used at all: its credentials would
    replace the API key in the Authorization header.
    """
    pid = os.getpid()
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None or getattr(_local, "pid", None) != pid:
        session = requests.Session()
        session.trust_env = False
        session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        _local.session, _local.pid, _local.proxies = session, pid, {}
    return session


def proxies_for(url: str) -> dict[str, str]:
    """The environment's proxies for ``url`` (none when NO_PROXY covers it), read once."""
    get_session()
    known: dict[str, dict[str, str]] = _local.proxies
    if url not in known:
        known[url] = requests.utils.get_environ_proxies(url)
    return known[url]


def encode_body(body: Mapping[str, Any]) -> bytes:
    """Compact, ASCII-escaped JSON: byte-for-byte what the official SDK sends."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def item_path(resource: str, external_id: str) -> str:
    return f"/v2/{resource}/{quote(external_id, safe='')}"


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OrqResponse:
    """What callers need of a successful answer: status and the decoded body, if any."""

    def __init__(self, status: int, data: Any) -> None:
        self.status = status
        self.data = data


class OrqClient:
    """Sends one request to Orq and turns every failure into a classified OrqAPIError."""

    def __init__(self, api_key: str | None = None, base_url: str | None = None) -> None:
        key = api_key or get_setting("API_KEY")
        if not key:
            raise OrqConfigurationError(
                "No Orq API key: set ORQ_CONTACTS['API_KEY'] or the ORQ_API_KEY environment "
                "variable (see `manage.py check`)."
            )
        self._api_key = str(key)
        self.base_url = str(base_url or get_setting("BASE_URL")).rstrip("/")
        self.timeout = get_timeout()

    def __repr__(self) -> str:  # never show the key, even in a debugger or a traceback
        return f"<OrqClient {self.base_url}>"

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> OrqResponse:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = encode_body(body)
        circuit.before_call()
        ratelimit.acquire()
        # requests' read timeout applies to each read, so a server trickling a byte at a
        # time would never time out; the whole exchange gets a deadline of its own.
        deadline = time.monotonic() + sum(self.timeout)
        try:
            response = get_session().request(
                method,
                self.base_url + path,
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
                proxies=proxies_for(self.base_url),
            )
            with response:
                content = _read_body(response, deadline)
        except requests.Timeout as exc:
            circuit.record_failure()
            raise OrqConnectionError(f"{method} {path}: timed out ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            circuit.record_failure()
            # The exception text names the URL and sometimes the socket error; the class
            # is all a log reader needs and cannot leak anything.
            raise OrqConnectionError(f"{method} {path}: {type(exc).__name__}") from None
        status = response.status_code
        ratelimit.observe(status, response.headers)
        if 200 <= status < 300:
            circuit.record_success()
            return OrqResponse(status, _json_or_none(content))
        error = error_for(method, path, status, dict(response.headers), content)
        if isinstance(error, OrqServerError):
            circuit.record_failure()
        elif not isinstance(error, OrqRateLimitError):
            circuit.record_success()  # a 4xx answer means the API itself is up
        raise error


class _BodyTimeout(requests.Timeout):
    pass


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """Read the body, giving up at ``deadline`` and past MAX_BODY (an error page can be huge).

    ``read1`` returns what one socket read brings, so a trickled body is held to the deadline
    byte by byte; ``iter_content`` would block until a whole chunk (often the whole small
    body) had arrived, however long that took.
    """
    read1 = getattr(response.raw, "read1", None)
    pieces: Any = (
        iter(lambda: read1(16384, decode_content=True), b"")
        if read1 is not None
        else response.iter_content(chunk_size=16384)  # urllib3 < 2 has no read1
    )
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in pieces:
            chunks.append(chunk)
            size += len(chunk)
            if size >= MAX_BODY:
                break
            if time.monotonic() > deadline:
                raise _BodyTimeout("response body too slow")
    except urllib3.exceptions.ReadTimeoutError:
        raise _BodyTimeout("response body read timed out") from None
    except urllib3.exceptions.HTTPError as exc:
        # What iter_content would have wrapped: keep it inside requests' exception tree.
        raise requests.ConnectionError(type(exc).__name__) from None
    return b"".join(chunks)


def _json_or_none(content: bytes) -> Any:
    # A 2xx is a success whatever its body: an empty or odd body must not fail the sync.
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None


def error_for(
    method: str, path: str, status: int, headers: dict[str, str], content: bytes
) -> OrqAPIError:
    body = content.decode("utf-8", errors="replace")
    detail = _error_detail(content)
    message = f"{method} {path} answered {status}" + (f": {detail}" if detail else "")
    kwargs: dict[str, Any] = {"status": status, "body": body, "headers": headers}
    if status == 429:
        return OrqRateLimitError(message, retry_after=parse_retry_after(headers), **kwargs)
    if status >= 500 or status == 408:
        return OrqServerError(message, retry_after=parse_retry_after(headers), **kwargs)
    if status in (401, 403):
        return OrqAuthError(message, **kwargs)
    if 300 <= status < 400:
        return OrqRedirectError(f"{method} {path} answered a {status} redirect; refused", **kwargs)
    return OrqPermanentError(message, **kwargs)


def _error_detail(content: bytes) -> str:
    """The API's own short error text, when the body is the JSON it documents."""
    data = _json_or_none(content)
    if isinstance(data, dict):
        for key in ("message", "error", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])[:200]
    return ""
