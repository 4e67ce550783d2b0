"""The custom user model suite (tests/custom_user/) run in a pytest subprocess.

AUTH_USER_MODEL is fixed once Django has set up, so the only honest way to test a second
user model from the main run is a second process with its own settings. This test fails
when that suite fails, or when it runs nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED_TESTS = 6


def test_custom_user_model_suite_passes():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings_custom_user")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--ds=tests.settings_custom_user",
            "tests/custom_user/test_flow.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed is not None, output
    assert int(passed.group(1)) == EXPECTED_TESTS, output
