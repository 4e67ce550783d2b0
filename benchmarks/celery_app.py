"""The Celery app the benchmark's workers run (``celery -A benchmarks.celery_app worker``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

app = Celery("benchmarks")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["django_orq_contacts"])
