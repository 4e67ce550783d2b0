"""System checks: each misconfiguration is reported with its id, and no message shows the key."""

from __future__ import annotations

import pytest
from django.core import checks as django_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_orq_contacts.checks import base_url_problem, check_settings

KEY = "sk-orq-check-canary-12345"


@pytest.fixture(autouse=True)
def _only_settings(settings, monkeypatch):
    """Start each test from a valid configuration with a known key and no env key."""
    monkeypatch.delenv("ORQ_API_KEY", raising=False)
    settings.ORQ_CONTACTS = {"API_KEY": KEY, "BASE_URL": "https://my.orq.ai"}


def configure(settings, **values):
    settings.ORQ_CONTACTS = {**settings.ORQ_CONTACTS, **values}


def ids(messages=None):
    return sorted(m.id for m in (check_settings() if messages is None else messages))


def all_text(messages):
    return " ".join(f"{m.msg} {m.hint or ''}" for m in messages)


def test_a_valid_configuration_has_no_messages():
    assert check_settings() == []


def test_the_checks_are_registered_with_django(settings):
    def ours():
        return [m.id for m in django_checks.run_checks() if m.id.startswith("orq_contacts.")]

    assert ours() == []
    configure(settings, BASE_URL="http://my.orq.ai")
    assert ours() == ["orq_contacts.E003"]


# -- the API key --------------------------------------------------------------------------------


def test_e001_without_a_key(settings):
    settings.ORQ_CONTACTS = {"BASE_URL": "https://my.orq.ai"}
    messages = check_settings()
    assert ids(messages) == ["orq_contacts.E001"]
    assert messages[0].level == django_checks.ERROR
    assert "ORQ_API_KEY" in messages[0].hint


def test_the_environment_variable_satisfies_e001(settings, monkeypatch):
    settings.ORQ_CONTACTS = {"BASE_URL": "https://my.orq.ai"}
    monkeypatch.setenv("ORQ_API_KEY", KEY)
    assert check_settings() == []


@pytest.mark.parametrize(
    "backend",
    [
        "django_orq_contacts.backends.locmem.LocmemBackend",
        "django_orq_contacts.backends.dummy.DummyBackend",
    ],
)
def test_no_key_is_needed_by_other_backends(settings, backend):
    settings.ORQ_CONTACTS = {"BACKEND": backend}
    assert check_settings() == []


def test_manage_py_check_fails_on_e001(settings):
    settings.ORQ_CONTACTS = {"BASE_URL": "https://my.orq.ai"}
    with pytest.raises(SystemCheckError, match=r"orq_contacts\.E001"):
        call_command("check")


# -- dotted paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONTACT_BUILDER", "myproject.orq.no_such_builder"),
        ("SHOULD_SYNC", "no_such_module.should_sync"),
        ("EXTERNAL_ID", "tests.test_checks.missing_function"),
        ("CONTACT_BUILDER", "django_orq_contacts.conf.SETTINGS_NAME"),  # not callable
    ],
)
def test_e004_for_a_bad_dotted_path(settings, name, value):
    configure(settings, **{name: value})
    messages = check_settings()
    assert ids(messages) == ["orq_contacts.E004"]
    assert name in messages[0].msg


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONTACT_BUILDER", "django_orq_contacts.payload.default_contact"),
        ("SHOULD_SYNC", "django_orq_contacts.payload.should_sync"),
        ("EXTERNAL_ID", "username"),  # an attribute, not a path
        ("EXTERNAL_ID", "django_orq_contacts.payload.external_id_for"),
    ],
)
def test_good_dotted_paths_and_attributes_pass(settings, name, value):
    configure(settings, **{name: value})
    assert check_settings() == []


def test_e002_for_a_backend_that_cannot_be_imported(settings):
    configure(settings, BACKEND="django_orq_contacts.backends.nope.Backend")
    assert ids() == ["orq_contacts.E002"]


# -- base URL fuzz -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://my.orq.ai",
        "https://api.orq.ai/",
        "https://my.orq.ai:8443/prefix",
        "http://127.0.0.1:8765",
        "http://127.0.0.5",
        "http://localhost:8000",
        "http://LOCALHOST",
        "http://[::1]:8765",
    ],
)
def test_accepted_base_urls(settings, url):
    assert base_url_problem(url) is None
    configure(settings, BASE_URL=url)
    assert check_settings() == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://my.orq.ai", "https"),
        ("http://10.0.0.5:8000", "https"),
        ("http://0.0.0.0:8000", "https"),
        ("http://localhost.evil.test", "https"),
        ("http://127.0.0.1.evil.test", "https"),
        ("http://[::2]", "https"),
        ("https://user:pass@my.orq.ai", "credentials"),
        (f"https://{KEY}@my.orq.ai", "credentials"),
        (f"https://:{KEY}@my.orq.ai", "credentials"),
        ("https://my.orq.ai/?api_key=x", "query"),
        (f"https://my.orq.ai/v2?key={KEY}", "query"),
        ("https://my.orq.ai/#top", "fragment"),
        ("", "blank"),
        ("   ", "blank"),
        (None, "blank"),
        ("my.orq.ai", "absolute"),
        ("ftp://my.orq.ai", "absolute"),
        ("https://", "absolute"),
        ("https://my.orq.ai:99999", "valid"),
        ("http://[::1", "valid"),
    ],
)
def test_rejected_base_urls_name_the_reason_but_never_the_key(settings, url, reason):
    assert reason in base_url_problem(url)
    configure(settings, BASE_URL=url)
    messages = check_settings()
    assert ids(messages) == ["orq_contacts.E003"]
    assert KEY not in all_text(messages)


# -- other values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "check_id"),
    [
        ({"RESOURCE": "people"}, "orq_contacts.E005"),
        ({"TIMEOUT": 0}, "orq_contacts.E006"),
        ({"TIMEOUT": (5, -1)}, "orq_contacts.E006"),
        ({"TIMEOUT": "30"}, "orq_contacts.E006"),
        ({"TIMEOUT": (5,)}, "orq_contacts.E006"),
        ({"MAX_RETRIES": -1}, "orq_contacts.E007"),
        ({"RETRY_BACKOFF": "2"}, "orq_contacts.E007"),
        ({"LEASE_SECONDS": True}, "orq_contacts.E007"),
        ({"PUBLISH": "later"}, "orq_contacts.E008"),
        ({"RATE_LIMIT": "100 per minute"}, "orq_contacts.E009"),
        ({"RATE_LIMIT": "0/m"}, "orq_contacts.E009"),
    ],
)
def test_bad_values(settings, values, check_id):
    configure(settings, **values)
    assert ids() == [check_id]


@pytest.mark.parametrize("value", ["100/m", "10/s", "5/10s", "1000/hour"])
def test_good_rate_limits_with_a_shared_cache(settings, value):
    configure(settings, RATE_LIMIT=value)
    assert check_settings() == []


def test_e010_when_the_setting_is_not_a_dict(settings):
    settings.ORQ_CONTACTS = [("API_KEY", KEY)]
    assert ids() == ["orq_contacts.E010"]


def test_w002_rate_limit_with_a_process_local_cache(settings):
    settings.CACHES = {
        **settings.CACHES,
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    configure(settings, RATE_LIMIT="100/m", CACHE_ALIAS="local")
    messages = check_settings()
    assert ids(messages) == ["orq_contacts.W002"]
    assert messages[0].level == django_checks.WARNING
    configure(settings, RATE_LIMIT=None)
    assert check_settings() == []


def test_w001_names_an_unknown_setting(settings):
    configure(settings, API_KEYS="typo")
    messages = check_settings()
    assert ids(messages) == ["orq_contacts.W001"]
    assert "API_KEYS" in messages[0].msg


# -- the key never shows --------------------------------------------------------------------------------

STRING_SETTINGS = [
    "BASE_URL",
    "RESOURCE",
    "EXTERNAL_ID",
    "CONTACT_BUILDER",
    "SHOULD_SYNC",
    "BACKEND",
    "PUBLISH",
    "RATE_LIMIT",
    "TIMEOUT",
    "MAX_RETRIES",
]


@pytest.mark.parametrize("name", STRING_SETTINGS)
@pytest.mark.parametrize("shape", ["{key}", "x.{key}", "https://{key}@h", "{key}/m"])
def test_a_key_pasted_into_the_wrong_setting_is_not_echoed(settings, name, shape):
    configure(settings, **{name: shape.format(key=KEY)})
    messages = check_settings()
    assert KEY not in all_text(messages)
