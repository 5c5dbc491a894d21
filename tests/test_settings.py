"""Settings: Django's names and defaults, the environment, configure(),
read-only access, precedence and named mailers."""

from __future__ import annotations

import inspect
from email.headerregistry import Address
from pathlib import Path
from typing import Any

import pytest

import asyncmail
from asyncmail import ConfigurationError, EmailMessage, configure, settings
from asyncmail.settings import DEFAULTS, Settings

DJANGO_DEFAULTS = {
    "EMAIL_BACKEND": "asyncmail.backends.smtp.EmailBackend",
    "EMAIL_HOST": "localhost",
    "EMAIL_PORT": 25,
    "EMAIL_HOST_USER": "",
    "EMAIL_HOST_PASSWORD": "",
    "EMAIL_USE_TLS": False,
    "EMAIL_USE_SSL": False,
    "EMAIL_SSL_CERTFILE": None,
    "EMAIL_SSL_KEYFILE": None,
    "EMAIL_USE_LOCALTIME": False,
    "DEFAULT_FROM_EMAIL": "webmaster@localhost",
    "SERVER_EMAIL": "root@localhost",
    "ADMINS": (),
    "MANAGERS": (),
    "EMAIL_FILE_PATH": None,
    "DEFAULT_CHARSET": "utf-8",
    "MAILERS": {},
}


def from_environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings.reload_environment()


# -- defaults ---------------------------------------------------------------------


def test_defaults_use_django_names_and_values() -> None:
    for name, value in DJANGO_DEFAULTS.items():
        assert getattr(settings, name) == value, name
    assert set(DEFAULTS) == {
        *DJANGO_DEFAULTS,
        "EMAIL_TIMEOUT",
        "EMAIL_SUBJECT_PREFIX",
        "EMAIL_DKIM",
    }


def test_deliberate_differences_from_django() -> None:
    # Django: "[Django] " and no timeout at all.
    assert settings.EMAIL_SUBJECT_PREFIX == ""
    assert settings.EMAIL_TIMEOUT == 60.0
    assert isinstance(settings.EMAIL_TIMEOUT, float)


def test_as_dict_and_dir() -> None:
    values = settings.as_dict()
    assert values == {**DEFAULTS}
    configure(EMAIL_HOST_PASSWORD="s3cret")
    assert settings.as_dict()["EMAIL_HOST_PASSWORD"] == "********"
    assert settings.EMAIL_HOST_PASSWORD == "s3cret"
    assert dir(settings) == sorted(DEFAULTS)


# -- read-only ----------------------------------------------------------------------


def test_settings_are_read_only() -> None:
    with pytest.raises(AttributeError, match=r"use asyncmail.configure\(EMAIL_HOST"):
        settings.EMAIL_HOST = "elsewhere"
    with pytest.raises(AttributeError, match="read-only"):
        del settings.EMAIL_HOST
    with pytest.raises(AttributeError, match="read-only"):
        settings.NEW_NAME = 1
    assert settings.EMAIL_HOST == "localhost"


def test_unknown_setting_read_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigurationError, match="did you mean EMAIL_HOST\\?"):
        _ = settings.EMAIL_HOTS


def test_private_and_dunder_names_are_plain_attribute_errors() -> None:
    # inspect.unwrap (used by doctest) and copy probe optional dunders.
    assert not hasattr(settings, "__wrapped__")
    assert inspect.unwrap(settings) is settings
    with pytest.raises(AttributeError):
        _ = settings._anything


# -- environment --------------------------------------------------------------------


def test_environment_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    from_environment(
        monkeypatch,
        EMAIL_BACKEND="asyncmail.backends.console.EmailBackend",
        EMAIL_HOST="smtp.example.com",
        EMAIL_HOST_USER="user",
        EMAIL_HOST_PASSWORD="pw",
        EMAIL_SUBJECT_PREFIX="[App] ",
        DEFAULT_FROM_EMAIL="App <app@example.com>",
        SERVER_EMAIL="server@example.com",
        DEFAULT_CHARSET="iso-8859-1",
        EMAIL_SSL_CERTFILE="/etc/ssl/cert.pem",
        EMAIL_FILE_PATH="/var/mail/out",
    )
    assert settings.EMAIL_BACKEND == "asyncmail.backends.console.EmailBackend"
    assert settings.EMAIL_HOST == "smtp.example.com"
    assert settings.EMAIL_HOST_USER == "user"
    assert settings.EMAIL_HOST_PASSWORD == "pw"
    assert settings.EMAIL_SUBJECT_PREFIX == "[App] "
    assert settings.DEFAULT_FROM_EMAIL == "App <app@example.com>"
    assert settings.SERVER_EMAIL == "server@example.com"
    assert settings.DEFAULT_CHARSET == "iso-8859-1"
    assert settings.EMAIL_SSL_CERTFILE == "/etc/ssl/cert.pem"
    assert settings.EMAIL_SSL_KEYFILE is None
    assert settings.EMAIL_FILE_PATH == "/var/mail/out"


def test_empty_optional_path_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    from_environment(monkeypatch, EMAIL_SSL_KEYFILE="", EMAIL_FILE_PATH="")
    assert settings.EMAIL_SSL_KEYFILE is None
    assert settings.EMAIL_FILE_PATH is None


@pytest.mark.parametrize(("raw", "port"), [("587", 587), (" 2525 ", 2525), ("1", 1)])
def test_environment_port(monkeypatch: pytest.MonkeyPatch, raw: str, port: int) -> None:
    from_environment(monkeypatch, EMAIL_PORT=raw)
    assert port == settings.EMAIL_PORT
    assert type(settings.EMAIL_PORT) is int


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("abc", r"\$EMAIL_PORT must be a port number, not 'abc'"),
        ("25.0", r"\$EMAIL_PORT must be a port number"),
        ("0", r"\$EMAIL_PORT must be an int from 1 to 65535, not 0"),
        ("65536", r"\$EMAIL_PORT must be an int from 1 to 65535"),
    ],
)
def test_bad_environment_port_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    from_environment(monkeypatch, EMAIL_PORT=raw)
    with pytest.raises(ConfigurationError, match=message):
        _ = settings.EMAIL_PORT


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("True", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
@pytest.mark.parametrize(
    "name", ["EMAIL_USE_TLS", "EMAIL_USE_SSL", "EMAIL_USE_LOCALTIME"]
)
def test_environment_booleans(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, value: bool
) -> None:
    from_environment(monkeypatch, **{name: raw})
    assert getattr(settings, name) is value


@pytest.mark.parametrize("raw", ["maybe", "2", "y e s", "enabled"])
def test_bad_environment_boolean_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    from_environment(monkeypatch, EMAIL_USE_TLS=raw)
    with pytest.raises(
        ConfigurationError, match=r"\$EMAIL_USE_TLS must be true or false"
    ):
        _ = settings.EMAIL_USE_TLS


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("none", None),
        ("None", None),
        (" NONE ", None),
        ("", None),
        ("2.5", 2.5),
        ("30", 30.0),
    ],
)
def test_environment_timeout(
    monkeypatch: pytest.MonkeyPatch, raw: str, value: float | None
) -> None:
    from_environment(monkeypatch, EMAIL_TIMEOUT=raw)
    assert value == settings.EMAIL_TIMEOUT
    if value is not None:
        assert type(settings.EMAIL_TIMEOUT) is float


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("soon", r"\$EMAIL_TIMEOUT must be seconds, not 'soon'"),
        ("0", r"\$EMAIL_TIMEOUT must be a positive number of seconds or None"),
        ("-1", r"\$EMAIL_TIMEOUT must be a positive number of seconds or None"),
    ],
)
def test_bad_environment_timeout_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    from_environment(monkeypatch, EMAIL_TIMEOUT=raw)
    with pytest.raises(ConfigurationError, match=message):
        _ = settings.EMAIL_TIMEOUT


@pytest.mark.parametrize("name", ["ADMINS", "MANAGERS"])
def test_environment_address_lists(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from_environment(
        monkeypatch,
        **{name: 'Ann Admin <ann@example.com>, bob@example.com,"Doe, J" <j@x.org>'},
    )
    assert getattr(settings, name) == (
        "Ann Admin <ann@example.com>",
        "bob@example.com",
        '"Doe, J" <j@x.org>',
    )
    from_environment(monkeypatch, **{name: "  "})
    assert getattr(settings, name) == ()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"ADMINS": "not-an-address"}, r"\$ADMINS: .*it has no '@'"),
        ({"MANAGERS": "a@example.com, x@y <z@w>"}, r"\$MANAGERS: "),
        ({"DEFAULT_FROM_EMAIL": "a@b@c"}, r"\$DEFAULT_FROM_EMAIL: .*more than one '@'"),
        ({"SERVER_EMAIL": "root@"}, r"\$SERVER_EMAIL: "),
        ({"DEFAULT_CHARSET": "no-such-codec"}, r"\$DEFAULT_CHARSET: unknown charset"),
        ({"MAILERS": "{not json"}, r"\$MAILERS must be JSON: "),
        ({"MAILERS": "[1, 2]"}, r"\$MAILERS must be a dict"),
        ({"MAILERS": '{"bulk": {"BACKEND": 1}}'}, r"\$MAILERS\['bulk'\]\['BACKEND'\]"),
    ],
)
def test_bad_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    from_environment(monkeypatch, **variables)
    (name,) = variables
    with pytest.raises(ConfigurationError, match=message):
        getattr(settings, name)


def test_environment_mailers_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from_environment(
        monkeypatch,
        MAILERS='{"bulk": {"BACKEND": "asyncmail.backends.locmem.EmailBackend",'
        ' "OPTIONS": {"timeout": 5}}, "default": {}}',
    )
    assert settings.MAILERS == {
        "bulk": {
            "BACKEND": "asyncmail.backends.locmem.EmailBackend",
            "OPTIONS": {"timeout": 5},
        },
        "default": {"BACKEND": "asyncmail.backends.smtp.EmailBackend", "OPTIONS": {}},
    }


def test_environment_is_read_once_until_reloaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_environment(monkeypatch, EMAIL_HOST="first.example.com")
    assert settings.EMAIL_HOST == "first.example.com"
    monkeypatch.setenv("EMAIL_HOST", "second.example.com")
    assert settings.EMAIL_HOST == "first.example.com"
    settings.reload_environment()
    assert settings.EMAIL_HOST == "second.example.com"
    monkeypatch.delenv("EMAIL_HOST")
    settings.reload_environment()
    assert settings.EMAIL_HOST == "localhost"


def test_unrelated_environment_variables_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_environment(monkeypatch, EMAIL_HOTS="typo.example.com", DJANGO_X="1")
    # Ignored, but a misspelt EMAIL_* name is reported (tests/test_env_names.py).
    with pytest.warns(UserWarning, match=r"\$EMAIL_HOTS .*did you mean EMAIL_HOST"):
        assert settings.EMAIL_HOST == "localhost"


# -- configure() --------------------------------------------------------------------


def test_configure_sets_values_by_django_name() -> None:
    configure(
        EMAIL_HOST="smtp.example.com",
        EMAIL_PORT=587,
        EMAIL_USE_TLS=True,
        EMAIL_TIMEOUT=5,
        EMAIL_FILE_PATH=Path("/tmp/mail"),
        ADMINS=[("Ann", "ann@example.com"), "bob@example.com"],
        MANAGERS=("Carl <carl@example.com>",),
    )
    assert settings.EMAIL_HOST == "smtp.example.com"
    assert settings.EMAIL_PORT == 587
    assert settings.EMAIL_USE_TLS is True
    assert settings.EMAIL_TIMEOUT == 5.0
    assert type(settings.EMAIL_TIMEOUT) is float
    assert settings.EMAIL_FILE_PATH == "/tmp/mail"
    assert settings.ADMINS == ("Ann <ann@example.com>", "bob@example.com")
    assert settings.MANAGERS == ("Carl <carl@example.com>",)
    configure(EMAIL_TIMEOUT=None)
    assert settings.EMAIL_TIMEOUT is None
    assert asyncmail.configure is configure


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("EMAIL_HOTS", "Unknown setting 'EMAIL_HOTS'; did you mean EMAIL_HOST\\?"),
        ("EMAIL_USE_TTLS", "did you mean EMAIL_USE_TLS\\?"),
        ("DEFAULT_FROM_MAIL", "did you mean DEFAULT_FROM_EMAIL\\?"),
        ("email_host", "Unknown setting 'email_host'"),
        ("TOTALLY_UNRELATED", "Unknown setting 'TOTALLY_UNRELATED'$"),
    ],
)
def test_configure_unknown_name_suggests_the_closest(name: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        configure(**{name: "x"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EMAIL_HOST", 1, "EMAIL_HOST must be a str, not int"),
        ("EMAIL_PORT", "25", "EMAIL_PORT must be an int from 1 to 65535, not '25'"),
        ("EMAIL_PORT", True, "EMAIL_PORT must be an int"),
        ("EMAIL_PORT", 0, "EMAIL_PORT must be an int"),
        ("EMAIL_PORT", 70000, "EMAIL_PORT must be an int"),
        ("EMAIL_USE_TLS", "yes", "EMAIL_USE_TLS must be True or False"),
        ("EMAIL_USE_SSL", 1, "EMAIL_USE_SSL must be True or False"),
        ("EMAIL_USE_LOCALTIME", None, "EMAIL_USE_LOCALTIME must be True or False"),
        ("EMAIL_TIMEOUT", -1, "EMAIL_TIMEOUT must be a positive number"),
        ("EMAIL_TIMEOUT", 0, "EMAIL_TIMEOUT must be a positive number"),
        ("EMAIL_TIMEOUT", True, "EMAIL_TIMEOUT must be a positive number"),
        ("EMAIL_TIMEOUT", "5", "EMAIL_TIMEOUT must be a positive number"),
        ("EMAIL_SSL_CERTFILE", 5, "EMAIL_SSL_CERTFILE must be a str"),
        ("DEFAULT_CHARSET", "klingon", "DEFAULT_CHARSET: unknown charset 'klingon'"),
        ("DEFAULT_FROM_EMAIL", "a@b@c", "DEFAULT_FROM_EMAIL: Invalid address"),
        ("DEFAULT_FROM_EMAIL", ("N", "n@example.com"), "must be a str"),
        ("SERVER_EMAIL", "x@y <z@w>", "SERVER_EMAIL: Invalid address"),
        ("ADMINS", "admin@example.com", "ADMINS must be a list of e-mail addresses"),
        ("ADMINS", ["not-an-address"], "ADMINS: Invalid address"),
        ("MANAGERS", [("N", "a@b@c")], "MANAGERS: Invalid address"),
        ("MANAGERS", [42], "MANAGERS: An address must be"),
        ("EMAIL_SUBJECT_PREFIX", None, "EMAIL_SUBJECT_PREFIX must be a str"),
    ],
)
def test_configure_validates_types(name: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        configure(**{name: value})
    assert getattr(settings, name) == DEFAULTS[name]


def test_address_lists_hold_text_that_parses_back() -> None:
    # Not the RFC 2047 header form, which would be read back literally.
    configure(
        ADMINS=[
            ("Zo\u00eb", "zoe@example.com"),
            ("Doe, J", "j@example.com"),
            Address("Ann", "ann", "b\u00fccher.example"),
        ]
    )
    assert settings.ADMINS == (
        "Zo\u00eb <zoe@example.com>",
        '"Doe, J" <j@example.com>',
        "Ann <ann@xn--bcher-kva.example>",
    )
    message = EmailMessage("s", "b", "f@example.com", list(settings.ADMINS))
    assert message.message()["To"] == (
        'Zo\u00eb <zoe@example.com>, "Doe, J" <j@example.com>,'
        " Ann <ann@xn--bcher-kva.example>"
    )


def test_environment_address_list_with_non_ascii_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_environment(monkeypatch, MANAGERS="Zo\u00eb <zoe@example.com>, m@example.com")
    assert settings.MANAGERS == ("Zo\u00eb <zoe@example.com>", "m@example.com")


def test_address_list_pair_that_has_no_text_form_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"ADMINS: .*control character"):
        configure(ADMINS=[("Bell\x07", "b@example.com")])


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="EMAIL_PORT"):
        configure(EMAIL_PORT="x")


def test_configure_is_all_or_nothing() -> None:
    with pytest.raises(ConfigurationError):
        configure(EMAIL_HOST="changed.example.com", EMAIL_PORT="bad")
    assert settings.EMAIL_HOST == "localhost"


def test_tls_and_ssl_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="mutually exclusive"):
        configure(EMAIL_USE_TLS=True, EMAIL_USE_SSL=True)
    assert settings.EMAIL_USE_TLS is False
    assert settings.EMAIL_USE_SSL is False


# -- precedence ---------------------------------------------------------------------


def test_precedence_defaults_then_environment_then_configure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_environment(monkeypatch, EMAIL_HOST="env.example.com", EMAIL_PORT="2525")
    assert settings.EMAIL_HOST == "env.example.com"
    assert settings.EMAIL_PORT == 2525
    assert settings.EMAIL_HOST_USER == ""  # still the default
    configure(EMAIL_HOST="code.example.com")
    assert settings.EMAIL_HOST == "code.example.com"
    assert settings.EMAIL_PORT == 2525  # the environment still applies
    # configure() wins even over a variable read later.
    monkeypatch.setenv("EMAIL_HOST", "later.example.com")
    settings.reload_environment()
    assert settings.EMAIL_HOST == "code.example.com"


def test_a_bad_environment_value_fails_only_its_own_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each variable is parsed on its own: a bad one is reported when that
    # setting is read (naming the variable), and configure() hides it.
    from_environment(monkeypatch, EMAIL_PORT="nope", EMAIL_HOST="env.example.com")
    assert settings.EMAIL_HOST == "env.example.com"
    with pytest.raises(ConfigurationError, match=r"\$EMAIL_PORT"):
        _ = settings.EMAIL_PORT
    configure(EMAIL_PORT=587)
    assert settings.EMAIL_PORT == 587


# -- override() ---------------------------------------------------------------------


def test_override_applies_and_restores() -> None:
    configure(EMAIL_HOST="configured.example.com")
    with settings.override(EMAIL_HOST="temp.example.com", EMAIL_PORT=2525):
        assert settings.EMAIL_HOST == "temp.example.com"
        assert settings.EMAIL_PORT == 2525
        with settings.override(EMAIL_PORT=26):
            assert settings.EMAIL_PORT == 26
            assert settings.EMAIL_HOST == "temp.example.com"
        assert settings.EMAIL_PORT == 2525
        configure(EMAIL_HOST_USER="inside")
    assert settings.EMAIL_HOST == "configured.example.com"
    assert settings.EMAIL_PORT == 25
    # configure() inside the block is undone too.
    assert settings.EMAIL_HOST_USER == ""


def test_override_restores_after_an_exception() -> None:
    with pytest.raises(RuntimeError), settings.override(EMAIL_HOST="x.example.com"):
        raise RuntimeError
    assert settings.EMAIL_HOST == "localhost"


def test_override_validates_like_configure() -> None:
    with (
        pytest.raises(ConfigurationError, match="did you mean EMAIL_PORT"),
        settings.override(EMAIL_PROT=1),
    ):
        pass
    with (
        pytest.raises(ConfigurationError, match="EMAIL_PORT must be an int"),
        settings.override(EMAIL_PORT="1"),
    ):
        pass
    assert settings.EMAIL_PORT == 25


def test_override_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from_environment(monkeypatch, DEFAULT_FROM_EMAIL="env@example.com")
    with settings.override(DEFAULT_FROM_EMAIL="test@example.com"):
        assert settings.DEFAULT_FROM_EMAIL == "test@example.com"
    assert settings.DEFAULT_FROM_EMAIL == "env@example.com"


def test_separate_settings_objects_do_not_share_state() -> None:
    other = Settings()
    other.configure(EMAIL_HOST="other.example.com")
    assert other.EMAIL_HOST == "other.example.com"
    assert settings.EMAIL_HOST == "localhost"


# -- MAILERS ------------------------------------------------------------------------


def test_mailers_are_normalised() -> None:
    configure(
        MAILERS={
            "default": {},
            "bulk": {
                "BACKEND": "asyncmail.backends.locmem.EmailBackend",
                "OPTIONS": {"fail_silently": True},
            },
            "smtp": {"OPTIONS": {"host": "relay.example.com"}},
        }
    )
    assert settings.MAILERS == {
        "default": {"BACKEND": "asyncmail.backends.smtp.EmailBackend", "OPTIONS": {}},
        "bulk": {
            "BACKEND": "asyncmail.backends.locmem.EmailBackend",
            "OPTIONS": {"fail_silently": True},
        },
        "smtp": {
            "BACKEND": "asyncmail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "relay.example.com"},
        },
    }


def test_mailers_options_are_copied() -> None:
    options = {"host": "a.example.com"}
    configure(MAILERS={"x": {"OPTIONS": options}})
    options["host"] = "changed.example.com"
    assert settings.MAILERS["x"]["OPTIONS"] == {"host": "a.example.com"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "MAILERS must be a dict of alias -> config"),
        ("bulk", "MAILERS must be a dict"),
        ({"": {}}, "aliases must be non-empty str"),
        ({1: {}}, "aliases must be non-empty str"),
        ({"bulk": "locmem"}, r"MAILERS\['bulk'\] must be a dict"),
        ({"bulk": {"BACKEN": "x"}}, r"unknown keys \['BACKEN'\]; use 'BACKEND'"),
        ({"bulk": {"BACKEND": None}}, r"MAILERS\['bulk'\]\['BACKEND'\] must be a str"),
        ({"bulk": {"OPTIONS": []}}, r"\['OPTIONS'\] must be a dict of keyword"),
        ({"bulk": {"OPTIONS": {1: 2}}}, r"\['OPTIONS'\] must be a dict of keyword"),
    ],
)
def test_mailers_validation(value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        configure(MAILERS=value)
    assert settings.MAILERS == {}
