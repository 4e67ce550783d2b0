"""The one settings getter: defaults, the environment fallback, read at call time."""

from __future__ import annotations

import pytest

from django_orq_contacts.conf import DEFAULTS, get_setting, get_timeout


def test_unset_key_and_explicit_none_both_fall_back_to_the_environment(settings, monkeypatch):
    monkeypatch.setenv("ORQ_API_KEY", "from-env-key")
    settings.ORQ_CONTACTS = {}
    assert get_setting("API_KEY") == "from-env-key"
    settings.ORQ_CONTACTS = {"API_KEY": None}
    assert get_setting("API_KEY") == "from-env-key"
    settings.ORQ_CONTACTS = {"API_KEY": "from-settings"}
    assert get_setting("API_KEY") == "from-settings"


def test_read_at_call_time(settings):
    settings.ORQ_CONTACTS = {"RESOURCE": "identities"}
    assert get_setting("RESOURCE") == "identities"
    settings.ORQ_CONTACTS = {}
    assert get_setting("RESOURCE") == DEFAULTS["RESOURCE"] == "contacts"


@pytest.mark.parametrize(("value", "expected"), [((5, 30), (5.0, 30.0)), (7, (7.0, 7.0)), (2.5, (2.5, 2.5))])
def test_timeout_pair_or_number(settings, value, expected):
    settings.ORQ_CONTACTS = {"TIMEOUT": value}
    assert get_timeout() == expected


def test_unknown_name_is_a_programming_error():
    with pytest.raises(KeyError):
        get_setting("API_KEYS")
