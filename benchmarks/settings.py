"""Django settings for the benchmark project: PostgreSQL, Redis, the stand-in Orq server.

Everything a run varies comes from the environment, set by the harness for each child
process (``ORQ_BENCH_*``), so one settings module serves every figure.
"""

from __future__ import annotations

import os

SECRET_KEY = "benchmarks-only-not-secret"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django_orq_contacts",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "NAME": os.environ.get("ORQ_BENCH_DB", "orq_bench"),
    }
}

# Redis database 11, which the harness empties: apart from the test suite's 15, the fault
# suite's 13 and the example project's 0, so a benchmark and the tests can run side by side.
REDIS_URL = os.environ.get("ORQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
}
CELERY_BROKER_URL = REDIS_URL
QUEUE = os.environ.get("ORQ_BENCH_QUEUE", "orq-bench")
CELERY_TASK_DEFAULT_QUEUE = QUEUE
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

ORQ_CONTACTS = {
    "API_KEY": "bench-key",
    "BASE_URL": os.environ.get("ORQ_BENCH_BASE_URL", "http://127.0.0.1:9"),
    "TIMEOUT": (5, 30),
    "RATE_LIMIT": os.environ.get("ORQ_BENCH_RATE_LIMIT") or None,
    "PUBLISH": os.environ.get("ORQ_BENCH_PUBLISH", "thread"),
    "AUTO_SYNC": os.environ.get("ORQ_BENCH_AUTO_SYNC", "1") == "1",
    "QUEUE": QUEUE,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_orq_contacts": {"handlers": ["console"], "level": "WARNING"}},
}
