"""Settings for the test suite: real PostgreSQL and Redis on 127.0.0.1 by default.

ORQ_TEST_DB=sqlite runs the unit tests on SQLite; the integration tests need PostgreSQL.
"""

from __future__ import annotations

import os

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_orq_contacts",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if os.environ.get("ORQ_TEST_DB", "postgres") == "sqlite":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            # A worker process started by the tests is pointed at the test database.
            "NAME": os.environ.get("ORQ_TEST_DB_NAME", "postgres"),
            "TEST": {"NAME": os.environ.get("ORQ_TEST_DB_TEST_NAME", "test_orq_contacts")},
        }
    }

REDIS_URL = os.environ.get("ORQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # The rate limiter's pauses and the circuit breaker live in the cache: runs on
        # separate queues (parallel runs) must not trip each other's.
        "KEY_PREFIX": os.environ.get("ORQ_TEST_QUEUE", "orq-tests"),
    }
}

CELERY_BROKER_URL = os.environ.get("ORQ_TEST_BROKER_URL", REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("ORQ_TEST_QUEUE", "orq-tests")
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The canary key: the leak tests search logs, the broker and the database for it.
CANARY_API_KEY = "sk-orq-canary-7f3a9c1e5d"
ORQ_CONTACTS = {
    "API_KEY": CANARY_API_KEY,
    "BASE_URL": os.environ.get("ORQ_TEST_BASE_URL", "http://127.0.0.1:9"),
    "TIMEOUT": (2, 5),
    "RETRY_BACKOFF": 0.2,
    "RETRY_BACKOFF_MAX": 5,
    "SWEEP_GRACE": 0,
    "QUEUE": os.environ.get("ORQ_TEST_QUEUE", "orq-tests"),
    "PUBLISH": os.environ.get("ORQ_TEST_PUBLISH", "direct"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_orq_contacts": {"handlers": ["console"], "level": "INFO"}},
}

# A fast hasher: the suite creates many users with passwords.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
