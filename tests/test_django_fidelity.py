"""Fidelity to Django 6.1 where a Django user would notice.

Lazy strings (Django's own ``gettext_lazy``, with real translations), the
Django 6.1 mailer rules (``using=``, ``MAILERS``, ``sent_using``), what
Django passes to custom backends, ``message(policy=...)``, and the documented
differences from Django, each checked against the Django installed with the
``tests`` extra (6.1 on Python 3.12+, 5.2 on 3.11; comparisons that need 6.1
are skipped on 5.2).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
from collections import UserString
from email.message import EmailMessage as StdlibMessage
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings as django_settings  # noqa: E402

# Minimal settings, unless another suite (pytest-django, a settings module)
# configured Django already; translations need the app registry ready.
if not django_settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
    django_settings.configure(USE_I18N=True, LANGUAGE_CODE="en-us")
from django.apps import apps  # noqa: E402

if not apps.ready:
    django.setup()

from django.utils import translation  # noqa: E402
from django.utils.functional import lazy  # noqa: E402
from django.utils.translation import gettext_lazy  # noqa: E402

import asyncmail  # noqa: E402
from asyncmail import (  # noqa: E402
    BadHeaderError,
    ConfigurationError,
    EmailMessage,
    EmailMultiAlternatives,
    InvalidMailer,
    MailerDoesNotExist,
    get_connection,
)
from asyncmail.backends.base import BaseEmailBackend  # noqa: E402
from asyncmail.backends.smtp import EmailBackend as SMTPBackend  # noqa: E402
from helpers import unused_port  # noqa: E402
from scriptserver import ScriptServer  # noqa: E402
from smtpserver import SMTPServer  # noqa: E402

DJANGO_61 = django.VERSION >= (6, 1)
needs_django_61 = pytest.mark.skipif(not DJANGO_61, reason="compares with Django 6.1")

LOCMEM = "asyncmail.backends.locmem.EmailBackend"
SMTP = "asyncmail.backends.smtp.EmailBackend"
FILEBASED = "asyncmail.backends.filebased.EmailBackend"
HERE = __name__  # custom backends below are importable as HERE.Name

#: A message Django ships a translation of (fr, de) in its own catalog.
TRANSLATED = "Enter a valid email address."


class DuckLazy:
    """A lazy string of another library's kind: no common base class, just
    ``__str__`` and the str methods (babel's and flask-babel's look so)."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text

    def __getattr__(self, name: str) -> Any:
        return getattr(self._text, name)


lazy_str = lazy(lambda text: text, str)

LAZY_KINDS = {
    "gettext_lazy": gettext_lazy,
    "lazy(str)": lazy_str,
    "UserString": UserString,
    "duck": DuckLazy,
}


def parsed(data: bytes) -> StdlibMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, StdlibMessage)
    return message


def normalised(data: bytes) -> bytes:
    """Bytes with the random MIME boundaries made equal."""
    return re.sub(rb"===[0-9a-f]{32}===", b"===BOUNDARY===", data)


# -- lazy strings ---------------------------------------------------------------


def build(text: Any) -> EmailMultiAlternatives:
    """The same message with every text value passed through *text*."""
    message = EmailMultiAlternatives(
        text("Hello"),
        text("Body text\n"),
        text("Ann <ann@example.com>"),
        [text("Bob <bob@example.com>"), (text("Cy"), text("cy@example.com"))],
        cc=[text("cc@example.com")],
        bcc=[text("hidden@example.com")],
        reply_to=[text("replies@example.com")],
        headers={
            text("X-Tag"): text("tagged"),
            "Message-ID": text("<fixed@example.com>"),
            "Date": text("Tue, 01 Dec 2026 10:00:00 +0000"),
        },
    )
    message.attach(text("notes.txt"), text("Attached text\n"), "text/plain")
    message.attach_alternative(text("<p>Body text</p>"), "text/html")
    return message


@pytest.mark.parametrize("kind", list(LAZY_KINDS))
def test_lazy_strings_everywhere_give_the_bytes_plain_strings_give(kind: str) -> None:
    lazy_kind = LAZY_KINDS[kind]
    with_lazy = build(lazy_kind)
    assert not isinstance(with_lazy.subject, str)  # really lazy
    assert normalised(with_lazy.as_bytes()) == normalised(build(str).as_bytes())
    assert with_lazy.recipients()  # envelope addresses work too
    assert with_lazy.body_contains("Body text")


def test_lazy_strings_reach_the_server_and_the_envelope() -> None:
    with SMTPServer() as server:
        backend = SMTPBackend(host="127.0.0.1", port=server.port)
        message = build(gettext_lazy)
        message.connection = backend
        assert message.send() == 1
    (received,) = server.messages
    assert received.mail_from == "ann@example.com"
    assert received.rcpt_tos == [
        "bob@example.com",
        "cy@example.com",
        "cc@example.com",
        "hidden@example.com",
    ]
    sent = parsed(received.data)
    assert sent["Subject"] == "Hello"
    assert sent["X-Tag"] == "tagged"
    assert "Bcc" not in sent
    assert b"hidden@example.com" not in received.data


LINE_BREAK = "evil\r\nBcc: victim@example.com"


@pytest.mark.parametrize(
    "field",
    [
        "subject",
        "header value",
        "header name",
        "from",
        "to",
        "display name",
        "filename",
    ],
)
def test_a_lazy_string_holding_a_line_break_is_refused(field: str) -> None:
    bad = lazy_str(LINE_BREAK)
    kwargs: dict[str, Any] = {
        "subject": "s",
        "body": "b",
        "from_email": "ann@example.com",
        "to": ["bob@example.com"],
    }
    if field == "subject":
        kwargs["subject"] = bad
    elif field == "header value":
        kwargs["headers"] = {"X-Tag": bad}
    elif field == "header name":
        kwargs["headers"] = {lazy_str("X-Tag\r\nBcc"): "v"}
    elif field == "from":
        kwargs["from_email"] = lazy_str("ann@example.com\r\nBcc: victim@example.com")
    elif field == "to":
        kwargs["to"] = [lazy_str("bob@example.com\r\nBcc: victim@example.com")]
    elif field == "display name":
        kwargs["to"] = [(bad, "bob@example.com")]
    message = EmailMessage(**kwargs)
    if field == "filename":
        # Refused as soon as it is attached, before any send can start.
        with pytest.raises(BadHeaderError, match="filename"):
            message.attach(lazy_str("a.txt\r\nBcc: x"), "text", "text/plain")
        assert not message.attachments
        return
    with ScriptServer() as server:
        message.connection = SMTPBackend(host="127.0.0.1", port=server.port)
        with pytest.raises(BadHeaderError):
            message.send()
        assert server.count("MAIL") == 0  # nothing on the wire
        assert not server.data


def test_values_that_are_not_text_are_still_refused() -> None:
    lazy_int = lazy(lambda: 5, int)
    for address in (lazy_int(), object(), b"bob@example.com"):
        with pytest.raises(TypeError):
            EmailMessage("s", "b", "ann@example.com", [address]).as_bytes()
    with pytest.raises(TypeError):
        EmailMessage("s", "b", None, ["a@example.com"], headers={"X": b"v"}).as_bytes()


def test_lazy_strings_in_address_settings() -> None:
    asyncmail.configure(
        EMAIL_BACKEND=LOCMEM,
        ADMINS=[gettext_lazy("Admin <admin@example.com>")],
        MANAGERS=[UserString("manager@example.com")],
        DEFAULT_FROM_EMAIL=lazy_str("App <app@example.com>"),
        SERVER_EMAIL=DuckLazy("server@example.com"),
    )
    assert asyncmail.settings.ADMINS == ("Admin <admin@example.com>",)
    assert asyncmail.settings.SERVER_EMAIL == "server@example.com"
    asyncmail.mail_admins(gettext_lazy("Alert"), gettext_lazy("Disk full"))
    asyncmail.mail_managers("Report", "...")
    asyncmail.send_mail("Hi", "...", None, ["ada@example.com"])
    admins, managers, plain = asyncmail.outbox
    assert parsed(admins.as_bytes())["To"] == "Admin <admin@example.com>"
    assert parsed(admins.as_bytes())["From"] == "server@example.com"
    assert parsed(managers.as_bytes())["To"] == "manager@example.com"
    assert parsed(plain.as_bytes())["From"] == "App <app@example.com>"
    with pytest.raises(ConfigurationError, match="ADMINS"):
        asyncmail.configure(ADMINS=[lazy_str("a@example.com\r\nBcc: x@example.com")])


# -- lazy strings are translated in the caller's language ------------------------


def translated(language: str) -> str:
    with translation.override(language):
        text = str(gettext_lazy(TRANSLATED))
    assert text != TRANSLATED  # Django's catalog has it
    return text


def sent_subjects(server: SMTPServer) -> list[str]:
    return [str(parsed(item.data)["Subject"]) for item in server.messages]


def test_blocking_sends_use_the_callers_active_language() -> None:
    subject = gettext_lazy(TRANSLATED)
    with SMTPServer() as server:
        asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT=server.port)
        built_before = EmailMessage(subject, "b", None, ["a@example.com"])
        with translation.override("fr"):
            asyncmail.send_mail(subject, subject, None, ["a@example.com"])
            asyncmail.send_mass_mail([(subject, "b", None, ["b@example.com"])])
            built_before.send()  # evaluated at send time, as in Django
            backend = get_connection()
            with backend as connection:
                connection.send_messages(
                    [EmailMessage(subject, "b", None, ["c@example.com"])]
                )
        with translation.override("de"):
            asyncmail.send_mail(subject, "b", None, ["d@example.com"])
    french, german = translated("fr"), translated("de")
    assert sent_subjects(server) == [french, french, french, french, german]
    body = parsed(server.messages[0].data).get_content()
    assert body.strip() == french


def test_async_sends_use_the_active_language() -> None:
    subject = gettext_lazy(TRANSLATED)

    async def send() -> None:
        with translation.override("de"):
            await asyncmail.asend_mail(subject, "b", None, ["a@example.com"])
            await EmailMessage(subject, "b", None, ["b@example.com"]).asend()

    with SMTPServer() as server:
        asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT=server.port)
        asyncio.run(send())
    assert sent_subjects(server) == [translated("de")] * 2


# -- using= and MAILERS (Django 6.1) ---------------------------------------------


def django_using_errors() -> dict[str, str]:
    """Django 6.1's own TypeError messages, from Django itself."""
    from django.core.mail.deprecation import report_using_incompatibility

    messages = {}
    for name, kwargs in {
        "connection": {"connection": object()},
        "fail_silently": {"fail_silently": True},
        "auth_user": {"auth_user": "u"},
        "auth_password": {"auth_password": "p"},
    }.items():
        with pytest.raises(TypeError) as caught:
            report_using_incompatibility(**kwargs)
        messages[name] = str(caught.value)
    return messages


USING_ERRORS = {
    "connection": "'connection' is not compatible with 'using'.",
    "fail_silently": "'fail_silently' is not compatible with 'using'.",
    "auth_user": "'auth_user' and 'auth_password' are not compatible with 'using'.",
    "auth_password": "'auth_user' and 'auth_password' are not compatible with 'using'.",
}


@needs_django_61
def test_our_using_messages_start_with_djangos() -> None:
    for name, django_message in django_using_errors().items():
        assert django_message.startswith(USING_ERRORS[name])


def _calls(argument: str) -> dict[str, Any]:
    value: Any = {
        "connection": get_connection(LOCMEM),
        "fail_silently": True,
        "auth_user": "u",
        "auth_password": "p",
    }[argument]
    extra = {argument: value}
    calls = {
        "send_mail": lambda: asyncmail.send_mail(
            "s", "b", None, ["a@example.com"], using="alerts", **extra
        ),
        "asend_mail": lambda: asyncio.run(
            asyncmail.asend_mail(
                "s", "b", None, ["a@example.com"], using="alerts", **extra
            )
        ),
        "send_mass_mail": lambda: asyncmail.send_mass_mail(
            [("s", "b", None, ["a@example.com"])], using="alerts", **extra
        ),
    }
    if argument in ("connection", "fail_silently"):
        calls["mail_admins"] = lambda: asyncmail.mail_admins(
            "s", "b", using="alerts", **extra
        )
        calls["amail_managers"] = lambda: asyncio.run(
            asyncmail.amail_managers("s", "b", using="alerts", **extra)
        )
    if argument == "connection":
        calls["EmailMessage.send"] = lambda: EmailMessage(
            "s", "b", None, ["a@example.com"], connection=value
        ).send(using="alerts")
    if argument == "fail_silently":
        calls["EmailMessage.send"] = lambda: EmailMessage(
            "s", "b", None, ["a@example.com"]
        ).send(True, using="alerts")
    return calls


@pytest.mark.parametrize("argument", list(USING_ERRORS))
def test_using_with_arguments_a_mailer_configures_is_a_type_error(
    argument: str,
) -> None:
    asyncmail.configure(
        MAILERS={"alerts": {"BACKEND": LOCMEM}},
        ADMINS=["admin@example.com"],
        MANAGERS=["manager@example.com"],
    )
    for name, call in _calls(argument).items():
        with pytest.raises(TypeError) as caught:
            call()
        assert str(caught.value).startswith(USING_ERRORS[argument]), name
    assert asyncmail.outbox == []  # nothing was sent


def test_sent_using_names_the_mailer() -> None:
    asyncmail.configure(
        MAILERS={"default": {"BACKEND": LOCMEM}, "alerts": {"BACKEND": LOCMEM}},
        ADMINS=["admin@example.com"],
    )
    asyncmail.send_mail("one", "b", None, ["a@example.com"], using="alerts")
    asyncmail.send_mail("two", "b", None, ["a@example.com"])
    EmailMessage("three", "b", None, ["a@example.com"]).send(using="alerts")
    asyncmail.send_mass_mail([("four", "b", None, ["a@example.com"])], using="alerts")
    asyncmail.mail_admins("five", "b", using="alerts")
    asyncio.run(
        asyncmail.asend_mail("six", "b", None, ["a@example.com"], using="alerts")
    )
    assert [(m.subject, m.sent_using) for m in asyncmail.outbox] == [
        ("one", "alerts"),
        ("two", "default"),
        ("three", "alerts"),
        ("four", "alerts"),
        ("five", "alerts"),
        ("six", "alerts"),
    ]


def test_sent_using_is_none_without_mailers() -> None:
    asyncmail.configure(EMAIL_BACKEND=LOCMEM)
    asyncmail.send_mail("s", "b", None, ["a@example.com"])
    (stored,) = asyncmail.outbox
    assert stored.sent_using is None


@needs_django_61
def test_sent_using_as_djangos_locmem_sets_it() -> None:
    from django.core import mail as django_mail
    from django.core.mail.backends.locmem import EmailBackend as DjangoLocmem

    DjangoLocmem(alias="alerts").send_messages(
        [django_mail.EmailMessage("s", "b", "a@example.com", ["b@example.com"])]
    )
    assert django_mail.outbox[-1].sent_using == "alerts"
    asyncmail.configure(MAILERS={"alerts": {"BACKEND": LOCMEM}})
    get_connection(using="alerts").blocking().send_messages(
        [EmailMessage("s", "b", "a@example.com", ["b@example.com"])]
    )
    assert asyncmail.outbox[-1].sent_using == django_mail.outbox[-1].sent_using


def test_a_mailer_needs_host_and_takes_nothing_from_email_settings(
    tmp_path: Path,
) -> None:
    asyncmail.configure(
        EMAIL_HOST="settings.example.com",
        EMAIL_PORT=2525,
        EMAIL_HOST_USER="settings-user",
        EMAIL_HOST_PASSWORD="settings-password",
        EMAIL_USE_TLS=True,
        EMAIL_TIMEOUT=5,
        EMAIL_SSL_CERTFILE=str(tmp_path / "cert.pem"),
        EMAIL_SSL_KEYFILE=str(tmp_path / "key.pem"),
        MAILERS={
            "nohost": {"BACKEND": SMTP, "OPTIONS": {"port": 25}},
            "relay": {"BACKEND": SMTP, "OPTIONS": {"host": "relay.example.com"}},
        },
    )
    with pytest.raises(InvalidMailer) as caught:
        get_connection(using="nohost")
    assert str(caught.value) == "MAILERS['nohost']: OPTIONS must define 'host'."
    relay = get_connection(using="relay")
    assert isinstance(relay, SMTPBackend)
    assert (relay.host, relay.port) == ("relay.example.com", 25)
    assert (relay.username, relay.password) == ("", "")
    assert (relay.use_tls, relay.use_ssl) == (False, False)
    assert not relay.ssl_certfile
    assert not relay.ssl_keyfile
    assert relay.timeout == 60.0  # asyncmail's default, not EMAIL_TIMEOUT
    # Call options still win, and are checked by the same rules.
    assert get_connection(using="relay", port=2626).port == 2626


def test_a_mailer_sends_to_its_own_host_only() -> None:
    with SMTPServer() as server:
        asyncmail.configure(
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=unused_port(),  # nothing listens there
            EMAIL_HOST_USER="user",  # would make the send try AUTH
            EMAIL_HOST_PASSWORD="secret",
            MAILERS={
                "default": {
                    "BACKEND": SMTP,
                    "OPTIONS": {"host": "127.0.0.1", "port": server.port},
                }
            },
        )
        assert asyncmail.send_mail("s", "b", "a@example.com", ["b@example.com"]) == 1
    (received,) = server.messages
    assert received.rcpt_tos == ["b@example.com"]
    assert received.authenticated is None


@pytest.mark.parametrize(
    ("options", "port"),
    [
        ({}, 25),
        ({"use_tls": True}, 587),
        ({"use_ssl": True}, 465),
        ({"use_ssl": True, "port": 2465}, 2465),
        ({"use_tls": None, "port": None}, 25),
    ],
)
def test_a_mailers_port_follows_its_tls_mode(
    options: dict[str, Any], port: int
) -> None:
    asyncmail.configure(
        EMAIL_PORT=2525,
        MAILERS={
            "m": {"BACKEND": SMTP, "OPTIONS": {"host": "mx.example.com", **options}}
        },
    )
    assert get_connection(using="m").port == port
    if DJANGO_61:
        from django.core.mail.backends.smtp import EmailBackend as DjangoSMTP

        django_backend = DjangoSMTP(alias="m", host="mx.example.com", **options)
        assert django_backend.port == port


@needs_django_61
def test_invalid_mailer_messages_are_djangos() -> None:
    from django.core.mail import InvalidMailer as DjangoInvalidMailer
    from django.core.mail.backends.smtp import EmailBackend as DjangoSMTP

    asyncmail.configure(
        MAILERS={
            "nohost": {"BACKEND": SMTP},
            "both": {
                "BACKEND": SMTP,
                "OPTIONS": {"host": "h", "use_tls": True, "use_ssl": True},
            },
        }
    )
    for alias, options in (
        ("nohost", {}),
        ("both", {"host": "h", "use_tls": True, "use_ssl": True}),
    ):
        with pytest.raises(DjangoInvalidMailer) as theirs:
            DjangoSMTP(alias=alias, **options)
        with pytest.raises(InvalidMailer) as ours:
            get_connection(using=alias)
        assert str(ours.value) == str(theirs.value)


def test_other_mailer_errors_are_invalid_mailer(tmp_path: Path) -> None:
    asyncmail.configure(
        EMAIL_FILE_PATH=str(tmp_path / "settings"),
        MAILERS={
            "files": {"BACKEND": FILEBASED},
            "typo": {"BACKEND": LOCMEM, "OPTIONS": {"use_tsl": True}},
            "filed": {
                "BACKEND": FILEBASED,
                "OPTIONS": {"file_path": str(tmp_path / "m")},
            },
        },
    )
    with pytest.raises(
        InvalidMailer, match=r"^MAILERS\['files'\]: OPTIONS must define 'file_path'"
    ):
        get_connection(using="files")
    with pytest.raises(InvalidMailer, match=r"^MAILERS\['typo'\]: .*use_tsl"):
        get_connection(using="typo")
    # A BACKEND that does not import fails at configure(), naming the mailer.
    with pytest.raises(InvalidMailer, match=r"^MAILERS\['nowhere'\].*Could not import"):
        asyncmail.configure(
            MAILERS={"nowhere": {"BACKEND": "no.such.module.EmailBackend"}}
        )
    filed = get_connection(using="filed")
    assert filed.file_path == tmp_path / "m"  # type: ignore[attr-defined]
    with pytest.raises(InvalidMailer, match="must not define 'alias'"):
        asyncmail.configure(
            MAILERS={"x": {"BACKEND": LOCMEM, "OPTIONS": {"alias": "y"}}}
        )


def test_an_unknown_mailer_is_mailer_does_not_exist() -> None:
    asyncmail.configure(MAILERS={"bulk": {"BACKEND": LOCMEM}})
    calls = [
        lambda: get_connection(using="nope"),
        lambda: asyncmail.send_mail("s", "b", None, ["a@example.com"], using="nope"),
        lambda: EmailMessage("s", "b", None, ["a@example.com"]).send(using="nope"),
    ]
    for call in calls:
        with pytest.raises(MailerDoesNotExist) as caught:
            call()
        error = caught.value
        assert isinstance(error, KeyError)
        assert isinstance(error, InvalidMailer)
        assert str(error).startswith("The mailer 'nope' is not configured")
    if DJANGO_61:
        from django.core.mail import MailerDoesNotExist as DjangoMissing

        theirs = DjangoMissing(alias="nope").args[0]
        assert str(error).startswith(theirs.rstrip("."))


# -- what Django passes to backends ----------------------------------------------


class NamedBackend(BaseEmailBackend):
    """A Django-style custom backend: credentials as named parameters, and
    its own ``send_messages(messages)`` without asyncmail's keywords."""

    created: list[dict[str, Any]] = []  # noqa: RUF012 - a test record
    received: list[EmailMessage] = []  # noqa: RUF012

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        fail_silently: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently, **options)
        NamedBackend.created.append(
            {"username": username, "password": password, "fail_silently": fail_silently}
        )

    async def send_messages(self, email_messages: Any) -> int:  # type: ignore[override]
        messages = list(email_messages)
        NamedBackend.received.extend(messages)
        return len(messages)


class KwargsBackend(BaseEmailBackend):
    """A custom backend that takes whatever Django passes, as ``**kwargs``."""

    created: list[dict[str, Any]] = []  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        KwargsBackend.created.append(dict(kwargs))
        super().__init__(
            fail_silently=kwargs.pop("fail_silently", False),
            alias=kwargs.pop("alias", None),
        )

    async def deliver(self, message: EmailMessage) -> Any:
        from asyncmail.backends.base import accepted_result

        return accepted_result(message)


@pytest.fixture
def records() -> None:
    NamedBackend.created.clear()
    NamedBackend.received.clear()
    KwargsBackend.created.clear()


@pytest.mark.usefixtures("records")
def test_custom_backends_get_credentials_and_fail_silently_as_django_passes_them() -> (
    None
):
    asyncmail.configure(EMAIL_BACKEND=f"{HERE}.NamedBackend")
    sent = asyncmail.send_mail(
        "s",
        "b",
        None,
        ["a@example.com"],
        auth_user="u",
        auth_password="p",
        fail_silently=True,
    )
    assert sent == 1
    asyncmail.send_mass_mail([("s", "b", None, ["a@example.com"])], auth_user="u")
    assert NamedBackend.created == [
        {"username": "u", "password": "p", "fail_silently": True},
        {"username": "u", "password": None, "fail_silently": False},
    ]
    asyncmail.configure(EMAIL_BACKEND=f"{HERE}.KwargsBackend")
    asyncmail.send_mail(
        "s",
        "b",
        None,
        ["a@example.com"],
        auth_user="u",
        auth_password="p",
        fail_silently=True,
    )
    asyncmail.send_mail("s", "b", None, ["a@example.com"])
    # What Django 6.1's send_mail passes to get_connection() and on to the class.
    assert KwargsBackend.created[-2:] == [
        {"fail_silently": True, "username": "u", "password": "p"},
        {"fail_silently": False},
    ]


@pytest.mark.usefixtures("records")
def test_send_mass_mail_sets_each_messages_connection() -> None:
    asyncmail.configure(EMAIL_BACKEND=f"{HERE}.NamedBackend")
    datatuple = [
        ("one", "b", None, ["a@example.com"]),
        ("two", "b", None, ["b@example.com"]),
    ]

    given = NamedBackend()
    assert asyncmail.send_mass_mail(datatuple, connection=given) == 2
    assert [m.connection for m in NamedBackend.received] == [given, given]

    NamedBackend.received.clear()
    asyncmail.send_mass_mail(datatuple)
    first, second = (m.connection for m in NamedBackend.received)
    assert isinstance(first, NamedBackend)
    assert first is second

    NamedBackend.received.clear()
    backend = NamedBackend()
    with backend as view:
        asyncmail.send_mass_mail(datatuple, connection=view)
    assert [m.connection for m in NamedBackend.received] == [view, view]

    NamedBackend.received.clear()
    asyncmail.send_mail("s", "b", None, ["a@example.com"], connection=given)
    assert NamedBackend.received[0].connection is given


def test_asyncmails_own_backends_ignore_credentials_they_cannot_use() -> None:
    asyncmail.configure(EMAIL_BACKEND=LOCMEM)
    assert asyncmail.send_mail("s", "b", None, ["a@example.com"], auth_user="u") == 1


# -- message(policy=...) --------------------------------------------------------


def policy_message() -> EmailMessage:
    message = EmailMessage(
        "Café déjà vu",
        "Grüße, voilà\n",
        "Zoë Ünal <zoe@example.com>",
        ["Åsa <asa@example.com>"],
        headers={"X-Note": "naïve"},
    )
    message.attach("résumé.txt", "données\n", "text/plain")
    return message


def header_lines(data: bytes, names: tuple[str, ...]) -> dict[str, bytes]:
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    found = {}
    for line in lines:
        name = line.split(b":", 1)[0].decode("ascii", "replace")
        if name in names:
            found.setdefault(name, line)
    return found


def test_the_default_policy_is_asyncmails_own_serialisation() -> None:
    message = policy_message()
    stdlib = message.message()
    assert stdlib.policy is email.policy.default
    data = stdlib.as_bytes()
    assert b"=?utf-8?" in data  # encoded words: no UTF-8 headers by default
    reparsed = parsed(message.as_bytes())
    assert stdlib["Subject"] == reparsed["Subject"] == "Café déjà vu"


def test_smtputf8_policy_gives_utf8_headers() -> None:
    stdlib = policy_message().message(policy=email.policy.SMTPUTF8)
    data = stdlib.as_bytes()
    assert b"\r\n" in data  # the policy's linesep
    assert "Subject: Café déjà vu".encode() in data
    assert "From: Zoë Ünal <zoe@example.com>".encode() in data
    assert "To: Åsa <asa@example.com>".encode() in data
    assert "X-Note: naïve".encode() in data
    assert 'filename="résumé.txt"'.encode() in data
    assert b"=?utf-8?" not in data
    assert stdlib.get_body().get_content() == "Grüße, voilà\n"  # type: ignore[union-attr]


@needs_django_61
def test_smtputf8_headers_are_djangos() -> None:
    from django.core import mail as django_mail

    theirs = django_mail.EmailMessage(
        "Café déjà vu",
        "Grüße, voilà\n",
        "Zoë Ünal <zoe@example.com>",
        ["Åsa <asa@example.com>"],
        headers={"X-Note": "naïve"},
    )
    names = ("Subject", "From", "To", "X-Note")
    ours = policy_message().message(policy=email.policy.SMTPUTF8).as_bytes()
    theirs_data = theirs.message(policy=email.policy.SMTPUTF8).as_bytes()
    assert header_lines(ours, names) == header_lines(theirs_data, names)


def test_seven_bit_policy_has_no_8bit_part() -> None:
    policy = email.policy.default.clone(cte_type="7bit")
    stdlib = policy_message().message(policy=policy)
    data = stdlib.as_bytes()
    assert data.isascii()
    assert b"Content-Transfer-Encoding: 8bit" not in data
    parts = [part for part in stdlib.walk() if not part.is_multipart()]
    # (base64 text keeps MIME's canonical CRLF line breaks inside)
    contents = [part.get_content().replace("\r\n", "\n") for part in parts]
    assert contents == ["Grüße, voilà\n", "données\n"]
    # The default policy would have used 8bit.
    assert b"Content-Transfer-Encoding: 8bit" in policy_message().message().as_bytes()


def test_compat32_and_smtp_policies_work() -> None:
    legacy = policy_message().message(policy=email.policy.compat32)
    assert legacy.policy is email.policy.compat32
    assert legacy.is_multipart()
    assert "Subject: =?utf-8?" in legacy.as_string()
    smtp = policy_message().message(policy=email.policy.SMTP).as_bytes()
    assert b"\n" not in smtp.replace(b"\r\n", b"")  # CRLF only


def test_a_message_override_still_sends_without_smtputf8() -> None:
    class Stamped(EmailMessage):
        def message(self, *, policy: Any = email.policy.default) -> StdlibMessage:
            msg = super().message(policy=policy)
            msg["X-Stamp"] = "stämpel"
            return msg

    with SMTPServer() as server:
        message = Stamped("Café", "b", "a@example.com", ["b@example.com"])
        message.connection = SMTPBackend(host="127.0.0.1", port=server.port)
        assert message.send() == 1
    (received,) = server.messages
    assert "SMTPUTF8" not in received.mail_options
    head = received.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert parsed(received.data)["X-Stamp"] == "stämpel"
    assert parsed(received.data)["Subject"] == "Café"


# -- the documented differences, checked against Django 6.1 ----------------------


def django_message(*args: Any, **kwargs: Any) -> Any:
    from django.core import mail as django_mail

    return django_mail.EmailMessage(*args, **kwargs)


@needs_django_61
def test_int_header_values_work_where_django_61_fails() -> None:
    with pytest.raises(TypeError):
        django_message(
            "s", "b", "a@example.com", ["b@example.com"], headers={"X-N": 5}
        ).message()
    ours = EmailMessage(
        "s", "b", "a@example.com", ["b@example.com"], headers={"X-N": 5}
    )
    assert parsed(ours.as_bytes())["X-N"] == "5"


@needs_django_61
def test_mime_version_is_at_the_top_level_only() -> None:
    theirs = django_message("s", "", "a@example.com", ["b@example.com"])
    theirs.attach("f.txt", "hi", "text/plain")
    theirs_parsed = parsed(theirs.message().as_bytes())
    assert "MIME-Version" not in theirs_parsed  # Django 6.1: not at the top
    assert "MIME-Version" in theirs_parsed.get_payload()[0]  # but in the part
    ours = EmailMessage("s", "", "a@example.com", ["b@example.com"])
    ours.attach("f.txt", "hi", "text/plain")
    data = ours.as_bytes()
    assert data.count(b"MIME-Version") == 1
    assert parsed(data)["MIME-Version"] == "1.0"


@needs_django_61
def test_header_overrides_ignore_case_and_may_replace_the_subject() -> None:
    theirs = django_message(
        "s", "b", "a@example.com", ["b@example.com"], headers={"to": "o@example.com"}
    )
    assert parsed(theirs.message().as_bytes())["To"] == "b@example.com"  # ignored
    with pytest.raises(ValueError, match="Subject"):
        django_message(
            "s", "b", "a@example.com", ["b@example.com"], headers={"Subject": "x"}
        ).message()
    ours = EmailMessage(
        "s",
        "b",
        "a@example.com",
        ["b@example.com"],
        headers={"to": "o@example.com", "Subject": "x"},
    )
    sent = parsed(ours.as_bytes())
    assert (sent["To"], sent["Subject"]) == ("o@example.com", "x")


@needs_django_61
def test_structural_headers_are_refused_by_both() -> None:
    for name in ("Content-Type", "MIME-Version"):
        with pytest.raises(ValueError, match=name):
            django_message(
                "s", "b", "a@example.com", ["b@example.com"], headers={name: "x"}
            ).message()
        with pytest.raises(BadHeaderError, match=name):
            EmailMessage(
                "s", "b", "a@example.com", ["b@example.com"], headers={name: "x"}
            ).as_bytes()


@needs_django_61
def test_long_lines_stay_8bit_up_to_998_octets() -> None:
    body = "x" * 100 + "\n"
    theirs = django_message("s", body, "a@example.com", ["b@example.com"]).message()
    assert theirs["Content-Transfer-Encoding"] == "quoted-printable"
    ours = parsed(
        EmailMessage("s", body, "a@example.com", ["b@example.com"]).as_bytes()
    )
    assert ours["Content-Transfer-Encoding"] == "7bit"


@needs_django_61
def test_compat32_works_where_django_61_fails() -> None:
    with pytest.raises(AttributeError):
        django_message("s", "b", "a@example.com", ["b@example.com"]).message(
            policy=email.policy.compat32
        )
    assert (
        EmailMessage("s", "b", "a@example.com", ["b@example.com"]).message(
            policy=email.policy.compat32
        )["Subject"]
        == "s"
    )


@needs_django_61
def test_addresses_django_accepts_and_asyncmail_refuses() -> None:
    for address in ("a@x.example, b@x.example", "root", "a@x.example (Ann)"):
        django_message("s", "b", "a@example.com", [address]).message()  # accepted
        with pytest.raises(asyncmail.InvalidAddressError):
            EmailMessage("s", "b", "a@example.com", [address]).as_bytes()
