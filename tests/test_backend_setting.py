"""EMAIL_BACKEND (and each mailer's BACKEND) is checked at configure():
a typo, or a path that imports but is not a backend, fails there and then,
not at the first send."""

from __future__ import annotations

import pytest

import asyncmail
from asyncmail import ConfigurationError, send_mail


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("asyncmail.backends.smtpp.EmailBackend", "Could not import"),  # module typo
        ("asyncmail.backends.smtp.EmailBackand", "Could not import"),  # class typo
        ("asyncmail.message.EmailMessage", "not an asyncmail backend"),
        ("asyncmail.backends.smtp.settings", "not an asyncmail backend"),
        ("EmailBackend", "not a dotted path"),
        ("", "not a dotted path"),
    ],
)
def test_bad_email_backend_fails_at_configure(path: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason) as info:
        asyncmail.configure(EMAIL_BACKEND=path)

    assert "EMAIL_BACKEND" in str(info.value)
    # Nothing was configured: the default backend is still in place.
    assert asyncmail.settings.EMAIL_BACKEND == "asyncmail.backends.smtp.EmailBackend"


def test_bad_mailer_backend_fails_at_configure() -> None:
    with pytest.raises(ConfigurationError, match=r"MAILERS\['bulk'\]"):
        asyncmail.configure(
            MAILERS={"bulk": {"BACKEND": "asyncmail.backends.locmen.EmailBackend"}}
        )
    assert asyncmail.settings.MAILERS == {}


def test_bad_backend_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_BACKEND", "no.such.Backend")
    asyncmail.settings.reload_environment()

    with pytest.raises(ConfigurationError, match=r"\$EMAIL_BACKEND"):
        send_mail("s", "b", "a@example.com", ["b@example.com"])


def test_a_good_backend_path_is_kept() -> None:
    asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")

    assert send_mail("s", "b", "a@example.com", ["b@example.com"]) == 1
    assert [m.subject for m in asyncmail.outbox] == ["s"]
