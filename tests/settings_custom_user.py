"""The test settings with a custom user model: UUID pk, email as the username, no names.

AUTH_USER_MODEL cannot change once Django has started, so tests/test_custom_user.py runs
tests/custom_user/ in a pytest subprocess with ``--ds=tests.settings_custom_user``.
"""

from __future__ import annotations

import copy

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES as _BASE_DATABASES
from tests.settings import INSTALLED_APPS as _BASE_APPS

INSTALLED_APPS = [*_BASE_APPS, "tests.custom_user"]
AUTH_USER_MODEL = "custom_user.EmailUser"

# The parent pytest run holds its own test database open; use a sibling one.
DATABASES = copy.deepcopy(_BASE_DATABASES)
if "TEST" in DATABASES["default"]:
    DATABASES["default"]["TEST"]["NAME"] += "_custom_user"

# Hashing speed is not under test here.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
