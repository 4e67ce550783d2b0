"""A stand-in Orq server on 127.0.0.1 for tests, the demo and benchmarks.

It speaks the contacts API (``/v2/contacts``) and its successor (``/v2/identities``) as
described in the project's notes on the wire format, and it can misbehave on demand:
latency, one-shot faults (error statuses, hangs, trickled bodies, dropped connections,
redirects), a sustained outage and a server-side rate limit. Everything can be driven from
Python (:class:`FakeOrqServer`) or over HTTP under ``/__orq__/`` (:class:`OrqServerControl`),
so a test can steer a server that runs in another process, e.g. next to a Celery worker.

Only the standard library is used, so the helper works wherever the package is installed.
Run it stand-alone with ``python -m django_orq_contacts.testing.server --port 8765``.

The modules: ``app`` (FakeOrqServer), ``handler`` (HTTP requests), ``routes`` and ``store``
(the contacts API and its storage), ``faults`` (fault specs, rate-limit window),
``control`` (the ``/__orq__/`` endpoints and OrqServerControl), ``cli`` (the command line).
"""

from __future__ import annotations

from .app import FakeOrqServer
from .cli import main
from .control import OrqServerControl
from .faults import DEFAULT_REDIRECT_HOST, FAULT_KINDS, Fault, FaultKind
from .records import RecordedRequest
from .routes import DEFAULT_PAGE, MAX_PAGE, Mode
from .steering import UNSET
from .store import MAX_EXTERNAL_ID
from .wire import CONTROL_PREFIX, RESOURCES

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_PAGE",
    "DEFAULT_REDIRECT_HOST",
    "FAULT_KINDS",
    "MAX_EXTERNAL_ID",
    "MAX_PAGE",
    "RESOURCES",
    "UNSET",
    "FakeOrqServer",
    "Fault",
    "FaultKind",
    "Mode",
    "OrqServerControl",
    "RecordedRequest",
    "main",
]
