"""tests/custom_user/ runs only under tests.settings_custom_user (AUTH_USER_MODEL is fixed at
start-up); tests/test_custom_user.py runs it in a subprocess from the main suite."""

import os

if os.environ.get("DJANGO_SETTINGS_MODULE") != "tests.settings_custom_user":
    collect_ignore_glob = ["test_*.py"]
