from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _orq_everywhere(orq_server):
    """Every test talks to the stand-in server unless it switches backend itself."""
    return orq_server
