"""Settings for the fault suite's processes: the test settings with short clocks.

The celery workers and the helper processes the scenarios start run with these (through
``DJANGO_SETTINGS_MODULE``); the test process applies ``FAULTS_ORQ_CONTACTS`` through the
``settings`` fixture, so both sides agree on leases, backoff and the breaker.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import CACHES as BASE_CACHES
from tests.settings import ORQ_CONTACTS as BASE_ORQ_CONTACTS

# Short enough that a killed worker's lease, a tripped breaker and a backoff all run out
# within a test; long enough that a healthy call (milliseconds here) never outlives a lease.
FAULTS_ORQ_CONTACTS = {
    "TIMEOUT": (1, 1.5),
    "RETRY_BACKOFF": 0.2,
    "RETRY_BACKOFF_MAX": 3,
    "MAX_RETRIES": 8,
    "LEASE_SECONDS": 4,
    "SWEEP_GRACE": 0,
    "BREAKER_THRESHOLD": 4,
    "BREAKER_COOLDOWN": 1,
    "SHOULD_SYNC": "tests.faults.hooks.is_active",
}

ORQ_CONTACTS = {
    **BASE_ORQ_CONTACTS,
    **FAULTS_ORQ_CONTACTS,
    # A scenario needing other values (e.g. the soft time limit one) passes them as JSON.
    **json.loads(os.environ.get("ORQ_FAULTS_OVERRIDES") or "{}"),
}

# kombu's Redis transport gives a message held unacked by a dead worker back after the
# visibility timeout; the default hour would outlast the suite. Retries wait at most
# RETRY_BACKOFF_MAX (3s), so no healthy ETA message is held that long.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 6,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}

# The breaker and the rate limiter live in the cache: every process of the suite, whatever
# its queue, shares the test process's keys, so the fixtures can reset them.
CACHES = {
    "default": {
        **BASE_CACHES["default"],
        "KEY_PREFIX": os.environ.get(
            "ORQ_FAULTS_CACHE_PREFIX", BASE_CACHES["default"]["KEY_PREFIX"]
        ),
    }
}
