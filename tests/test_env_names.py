"""Environment names are validated (issue #8, class 10): an EMAIL_* variable
that is no setting is ignored with a warning that suggests the closest name,
as configure() does for a misspelt keyword."""

from __future__ import annotations

import warnings

import pytest

import asyncmail
from asyncmail.settings import DEFAULTS, UnknownSettingWarning

TYPOS = {
    "EMAIL_HOTS": "EMAIL_HOST",
    "EMAIL_PROT": "EMAIL_PORT",
    "EMAIL_USE_TSL": "EMAIL_USE_TLS",
    "EMAIL_HOST_PASWORD": "EMAIL_HOST_PASSWORD",
    "EMAIL_TIMEOUTS": "EMAIL_TIMEOUT",
}


@pytest.mark.parametrize(("typo", "meant"), TYPOS.items())
def test_a_misspelt_variable_warns_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, typo: str, meant: str
) -> None:
    monkeypatch.setenv(typo, "value")
    asyncmail.settings.reload_environment()
    with pytest.warns(UnknownSettingWarning) as record:
        assert asyncmail.settings.EMAIL_HOST == "localhost"
    (warning,) = record
    assert f"${typo}" in str(warning.message)
    assert f"did you mean {meant}?" in str(warning.message)
    # configure() gives the same suggestion for the same typo.
    with pytest.raises(asyncmail.ConfigurationError, match=f"did you mean {meant}"):
        asyncmail.configure(**{typo: "value"})


def test_it_warns_once_per_read_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_HOTS", "x")
    monkeypatch.setenv("EMAIL_ZZZZZZZZ", "x")
    asyncmail.settings.reload_environment()
    with pytest.warns(UnknownSettingWarning) as record:
        _ = asyncmail.settings.EMAIL_HOST
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ = asyncmail.settings.EMAIL_PORT  # the environment is read already
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "did you mean" not in messages[1]  # nothing close to EMAIL_ZZZZZZZZ


def test_known_and_unrelated_variables_do_not_warn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in DEFAULTS:
        if name.startswith("EMAIL_") and name not in ("EMAIL_PORT", "EMAIL_TIMEOUT"):
            monkeypatch.setenv(name, "")
    monkeypatch.setenv("EMAILER", "x")
    monkeypatch.setenv("MY_EMAIL_HOST", "x")
    asyncmail.settings.reload_environment()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _ = asyncmail.settings.EMAIL_HOST


def test_cli_settings_shows_the_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asyncmail.cli import main

    monkeypatch.setenv("EMAIL_HOTS", "x")
    asyncmail.settings.reload_environment()
    with pytest.warns(UnknownSettingWarning, match="did you mean EMAIL_HOST"):
        assert main(["settings"]) == 0
    assert "EMAIL_HOST = 'localhost'" in capsys.readouterr().out
