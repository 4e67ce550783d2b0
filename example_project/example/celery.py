"""The site's Celery app: what a project adds to run django-orq-contacts' tasks.

Run a worker from the example_project directory with ``celery -A example worker -l INFO``,
and the sweeper schedule below with ``celery -A example beat`` (or ``worker -B`` in
development).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

app = Celery("example")
# Every CELERY_* Django setting configures Celery (broker URL, default queue, ...).
app.config_from_object("django.conf:settings", namespace="CELERY")
# Finds django_orq_contacts.tasks through INSTALLED_APPS.
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # The sweeper syncs every row the on-commit task did not finish: the broker was down at
    # commit, a worker died mid-call, or a retry was handed over after a long Retry-After.
    # It costs one small query when nothing is due, so once a minute is cheap.
    "orq-contacts-sweeper": {
        "task": "django_orq_contacts.sync_pending",
        "schedule": 60.0,
    },
}
