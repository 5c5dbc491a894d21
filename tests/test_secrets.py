"""Secrets (issue #8, class 7) are masked wherever settings, options or
backends are shown: ``asyncmail settings``, settings.as_dict() and repr(),
backend reprs, error messages. Every secret-named key counts, at any depth of
MAILERS OPTIONS (password, token, OAuth and API keys, client secrets), and
empty secrets stay visibly empty."""

from __future__ import annotations

import json

import pytest

import asyncmail
from asyncmail import ConfigurationError, SMTPAuthenticationError, get_connection
from asyncmail.cli import main
from asyncmail.settings import MASK, is_secret_name, mask_secrets
from helpers import backend_for
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio

SECRETS = {
    "password": "pw-1-secret",
    "oauth_token": "tok-2-secret",
    "access_token": "tok-3-secret",
    "api_key": "key-4-secret",
    "apiKey": "key-5-secret",
    "client_secret": "cs-6-secret",
    "PASSWD": "pw-7-secret",
    "private_key": "pk-8-secret",
    "refresh-token": "tok-9-secret",
}
MAILERS = {
    "default": {"OPTIONS": {"host": "relay.example.com", **SECRETS}},
    "nested": {
        "BACKEND": "asyncmail.backends.smtp.EmailBackend",
        "OPTIONS": {
            "auth": {"credentials": [{"token": "deep-10-secret"}]},
            "ssl_keyfile": "/etc/keys/client-key.pem",
            "username": "visible-user",
        },
    },
}


def assert_masked(text: str) -> None:
    assert "-secret" not in text
    assert "hp-0" not in text


def test_names_that_hold_secrets() -> None:
    for name in [*SECRETS, "EMAIL_HOST_PASSWORD", "token", "credentials"]:
        assert is_secret_name(name), name
    for name in ("ssl_keyfile", "ssl_certfile", "host", "username", "keyfile_path"):
        assert not is_secret_name(name), name


def test_mask_secrets_at_any_depth() -> None:
    masked = mask_secrets({"a": [{"password": "x", "empty_token": ""}], "b": 1})
    assert masked == {"a": [{"password": MASK, "empty_token": ""}], "b": 1}


@pytest.mark.parametrize("source", ["configure", "environment"])
def test_settings_display_masks_every_secret(
    source: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if source == "configure":
        asyncmail.configure(MAILERS=MAILERS, EMAIL_HOST_PASSWORD="hp-0")
    else:
        monkeypatch.setenv("MAILERS", json.dumps(MAILERS))
        monkeypatch.setenv("EMAIL_HOST_PASSWORD", "hp-0")
        asyncmail.settings.reload_environment()
    shown = asyncmail.settings.as_dict()
    assert_masked(repr(shown))
    assert shown["EMAIL_HOST_PASSWORD"] == MASK
    assert shown["MAILERS"]["default"]["OPTIONS"]["password"] == MASK
    assert shown["MAILERS"]["nested"]["OPTIONS"]["username"] == "visible-user"
    assert shown["MAILERS"]["nested"]["OPTIONS"]["ssl_keyfile"] == (
        "/etc/keys/client-key.pem"
    )
    assert_masked(repr(asyncmail.settings))
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert_masked(out)
    assert "visible-user" in out
    assert MASK in out
    # The real values are still there for the backends.
    assert asyncmail.settings.MAILERS["default"]["OPTIONS"]["password"] == (
        "pw-1-secret"
    )


def test_backend_reprs_show_no_secret() -> None:
    backend = get_connection(
        "asyncmail.backends.smtp.EmailBackend",
        host="relay.example.com",
        username="u",
        password="pw-1-secret",
    )
    assert_masked(repr(backend))
    assert_masked(str(backend))
    asyncmail.configure(
        MAILERS={
            "m": {"OPTIONS": {"host": "relay.example.com", "password": "pw-1-secret"}}
        }
    )
    assert_masked(repr(get_connection(using="m")))


def test_configuration_errors_do_not_echo_secrets() -> None:
    bad = {"m": {"OPTIONS": {"password": "pw-1-secret"}, "EXTRA": 1}}
    with pytest.raises(ConfigurationError) as info:
        asyncmail.configure(MAILERS=bad)
    assert_masked(str(info.value))
    with pytest.raises(ConfigurationError) as info:
        get_connection(
            "asyncmail.backends.smtp.EmailBackend",
            host="bad\r\nhost",
            password="pw-1-secret",
        )
    assert_masked(str(info.value))


async def test_authentication_errors_do_not_echo_the_password() -> None:
    with SMTPServer(credentials=("user", "right-password")) as server:
        backend = backend_for(server.port, username="user", password="pw-1-secret")
        with pytest.raises(SMTPAuthenticationError) as info:
            await backend.open()
        assert_masked(str(info.value))
        assert_masked(repr(info.value))
        await backend.close()
