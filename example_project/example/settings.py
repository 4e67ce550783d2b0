"""Settings for the example project: everything that differs between machines comes from the
environment (django-environ), with defaults that run on a laptop.

Environment variables (all optional):

=========================  ===============================================================
DEBUG                      default ``True`` (this is a development example)
SECRET_KEY                 a fixed development key; set a real one anywhere else
ALLOWED_HOSTS              comma-separated; default ``127.0.0.1,localhost,[::1]``
DATABASE_URL               default ``sqlite:///<this directory>/db.sqlite3``
CACHE_URL                  default ``locmemcache://``; use ``redis://...`` with RATE_LIMIT
CELERY_BROKER_URL          default ``redis://127.0.0.1:6379/0``
CELERY_QUEUE               Celery's default queue, default ``celery``
ORQ_API_KEY                your Orq API key; without one, contacts are printed (console
                           backend) instead of sent
ORQ_BASE_URL               default ``https://my.orq.ai``
ORQ_BACKEND                dotted path of the sync backend (overrides the choice above)
ORQ_RESOURCE               ``contacts`` (default) or ``identities``
ORQ_QUEUE                  a separate Celery queue for the sync tasks (default: CELERY_QUEUE)
ORQ_PUBLISH                ``thread`` (default), ``inline`` or ``direct`` (no Celery)
ORQ_RATE_LIMIT             e.g. ``100/m``; default none
ORQ_EXTERNAL_ID_PREFIX     prefix the contacts' external ids (default: plain pk)
DJANGO_SUPERUSER_USERNAME  with DJANGO_SUPERUSER_PASSWORD and DJANGO_SUPERUSER_EMAIL:
                           ``manage.py createsuperuser --noinput`` (Django's own variables)
=========================  ===============================================================
"""

from pathlib import Path

import django
import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="django-insecure-example-project-development-only")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_orq_contacts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the Celery worker write to one file: wait for the other's lock
    # instead of failing at once, and (Django 5.1+) take the write lock when a transaction
    # starts, so two writers never deadlock upgrading a read lock.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options.setdefault("timeout", 20)
    if django.VERSION >= (5, 1):
        options.setdefault("transaction_mode", "IMMEDIATE")

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"

# Celery reads every CELERY_* setting (see example/celery.py).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", default="celery")
# Bounds how long a publish may wait for a broker that is down; the ContactSync row keeps
# the work for the sweeper meanwhile.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

ORQ_API_KEY = env("ORQ_API_KEY", default=None)
ORQ_EXTERNAL_ID_PREFIX = env("ORQ_EXTERNAL_ID_PREFIX", default="")
# Without a key there is nothing to send to: print the contacts instead, so the example
# runs (and `manage.py check` passes) before you have an Orq account.
_DEFAULT_BACKEND = (
    "django_orq_contacts.backends.http.HttpBackend"
    if ORQ_API_KEY
    else "django_orq_contacts.backends.console.ConsoleBackend"
)

ORQ_CONTACTS = {
    "API_KEY": ORQ_API_KEY,
    "BASE_URL": env("ORQ_BASE_URL", default="https://my.orq.ai"),
    "BACKEND": env("ORQ_BACKEND", default=_DEFAULT_BACKEND),
    "RESOURCE": env("ORQ_RESOURCE", default="contacts"),
    "QUEUE": env("ORQ_QUEUE", default=None),
    "PUBLISH": env("ORQ_PUBLISH", default="thread"),
    "RATE_LIMIT": env("ORQ_RATE_LIMIT", default=None),
    "EXTERNAL_ID": "example.contacts.prefixed_external_id" if ORQ_EXTERNAL_ID_PREFIX else None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_orq_contacts": {"handlers": ["console"], "level": "INFO"}},
}
