"""asyncmail.django.EmailBackend against Django's backend contract, with
Django configured in this process only.

Run by tests/test_django.py as ``python -m pytest contract_checks.py`` in a
subprocess (Django's settings are process-wide; the main test process must
stay free of Django). Every check talks to a real aiosmtpd on 127.0.0.1 and
looks at what it received.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from email.mime.text import MIMEText
from pathlib import Path

import django
from django.conf import settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/

warnings.simplefilter("ignore", DeprecationWarning)  # Django 6.1's EMAIL_* ones
settings.configure(
    DEFAULT_FROM_EMAIL="app@example.com",
    EMAIL_BACKEND="asyncmail.django.EmailBackend",
    EMAIL_HOST="127.0.0.1",
    USE_I18N=True,
    SECRET_KEY="contract-checks",
)
django.setup()

import pytest
from django.core import mail
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.utils.translation import gettext_lazy

import asyncmail
import asyncmail.django
from asyncmail.django import EmailBackend
from helpers import unused_port
from smtpserver import SMTPServer

DJANGO_6 = django.VERSION >= (6, 0)
FIXED = {"Date": "Tue, 01 Dec 2026 10:00:00 +0000", "Message-ID": "<fixed@example.com>"}


@pytest.fixture
def server():
    with SMTPServer() as running:
        yield running


def backend_for(server, **options):
    return EmailBackend(host="127.0.0.1", port=server.port, **options)


def parsed(data: bytes):
    # As Django's own SMTP tests do: CRLF to LF, then parse.
    return email.message_from_bytes(
        data.replace(b"\r\n", b"\n"), policy=email.policy.default
    )


def django_smtp_bytes(server, message) -> bytes:
    """What Django's own SMTP backend puts on the wire for *message*."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend = DjangoSMTPBackend(host="127.0.0.1", port=server.port)
    before = len(server.messages)
    assert backend.send_messages([message]) == 1
    return server.messages[before].data


# -- Django's synchronous contract ----------------------------------------------


def test_is_a_django_backend_and_usable_as_email_backend(server):
    from django.core.mail.backends.base import BaseEmailBackend

    connection = mail.get_connection(port=server.port)
    assert isinstance(connection, EmailBackend)
    assert isinstance(connection, BaseEmailBackend)
    sent = mail.send_mail(
        "Hi", "Body\n", None, ["ada@example.com"], connection=connection
    )
    assert sent == 1
    assert server.messages[0].mail_from == "app@example.com"
    assert server.messages[0].rcpt_tos == ["ada@example.com"]


def test_open_close_and_reuse_across_calls(server):
    backend = backend_for(server)
    assert backend.connection is None
    assert backend.open() is True
    assert backend.open() is False
    assert backend.connection is not None
    for n in range(3):
        message = mail.EmailMessage(f"S{n}", "b", to=[f"u{n}@example.com"])
        assert backend.send_messages([message]) == 1
    backend.close()
    assert backend.connection is None
    backend.close()  # closing a closed backend is a no-op
    assert server.sessions == 1
    assert [m.rcpt_tos for m in server.messages] == [
        [f"u{n}@example.com"] for n in range(3)
    ]


def test_with_block_opens_once_and_closes(server):
    backend = backend_for(server)
    with backend as connection:
        assert connection is backend
        assert (
            connection.send_messages(
                [mail.EmailMessage("1", "b", to=["a@example.com"])]
            )
            == 1
        )
        assert (
            connection.send_messages(
                [mail.EmailMessage("2", "b", to=["b@example.com"])]
            )
            == 1
        )
    assert backend.connection is None
    assert server.sessions == 1


def test_each_call_on_a_closed_backend_uses_its_own_connection(server):
    backend = backend_for(server)
    backend.send_messages([mail.EmailMessage("1", "b", to=["a@example.com"])])
    backend.send_messages([mail.EmailMessage("2", "b", to=["b@example.com"])])
    assert server.sessions == 2
    assert backend.connection is None


def test_counts_and_empty_inputs(server):
    backend = backend_for(server)
    assert backend.send_messages([]) == 0
    assert server.sessions == 0  # nothing to send: no connection
    assert backend.send_messages([mail.EmailMessage("No one", "b", to=[])]) == 0
    assert server.messages == []
    messages = [
        mail.EmailMessage(str(n), "b", to=[f"u{n}@example.com"]) for n in range(4)
    ]
    assert backend.send_messages(iter(messages)) == 4
    assert len(server.messages) == 4
    generated = (
        mail.EmailMessage(str(n), "b", to=[f"g{n}@example.com"]) for n in range(3)
    )
    assert backend.send_messages(generated) == 3
    assert len(server.messages) == 7


def test_fail_silently_on_a_refused_connection():
    backend = EmailBackend(
        host="127.0.0.1", port=unused_port(), fail_silently=True, retries=0
    )
    assert backend.open() is None
    assert (
        backend.send_messages([mail.EmailMessage("x", "b", to=["a@example.com"])]) == 0
    )
    loud = EmailBackend(host="127.0.0.1", port=unused_port(), retries=0)
    with pytest.raises(ConnectionError):
        loud.open()


def test_errors_are_raised_after_every_message_was_tried(server):
    server.recorder.refuse_rcpt["bad@example.com"] = "550 no such user"
    backend = backend_for(server)
    messages = [
        mail.EmailMessage("1", "b", to=["bad@example.com"]),
        mail.EmailMessage("2", "b", to=["good@example.com"]),
    ]
    with pytest.raises(asyncmail.RecipientsRefusedError) as raised:
        backend.send_messages(messages)
    assert raised.value.sent == 1
    assert [m.rcpt_tos for m in server.messages] == [["good@example.com"]]
    backend.fail_silently = True  # Django code sets the attribute
    server.messages.clear()
    assert backend.send_messages(messages) == 1


def test_invalid_envelope_address_is_a_value_error(server):
    backend = backend_for(server)
    for address in ("to@other.com@example.com", "to\nevil@example.com", "@"):
        with pytest.raises(ValueError, match="Invalid address"):
            backend.send_messages([mail.EmailMessage(bcc=[address])])
    assert server.messages == []


def test_django_kwargs_and_settings_defaults():
    backend = EmailBackend()
    assert (backend.host, backend.port) == ("127.0.0.1", 25)
    assert (backend.username, backend.password) == ("", "")
    assert backend.use_tls is False
    assert backend.use_ssl is False
    assert backend.timeout == 60.0  # asyncmail's default, not Django's "never"
    from django.test import override_settings

    with override_settings(
        EMAIL_HOST="mail.example.com", EMAIL_PORT=2525, EMAIL_TIMEOUT=7
    ):
        backend = EmailBackend()
        assert (backend.host, backend.port, backend.timeout) == (
            "mail.example.com",
            2525,
            7,
        )
        backend = EmailBackend(host="other.example.com", port=587, timeout=3)
        assert (backend.host, backend.port, backend.timeout) == (
            "other.example.com",
            587,
            3,
        )
    with pytest.raises(ValueError, match="mutually exclusive"):
        EmailBackend(use_tls=True, use_ssl=True)


def test_asyncmail_options_pass_through():
    backend = EmailBackend(max_connections=7, rate_limit=100, retries=0)
    assert backend.smtp_backend.limits.max_connections == 7
    assert backend.smtp_backend.retries == 0


def test_starttls_required_and_certificates_verified(server):
    backend = backend_for(server, use_tls=True)
    with pytest.raises(asyncmail.TLSError):
        backend.open()
    assert server.messages == []


# -- messages: every kind Django allows ----------------------------------------------


def test_attachments_of_every_kind(server, tmp_path):
    inner = mail.EmailMessage("Inner", "Forwarded body\n", to=["x@example.com"])
    message = mail.EmailMultiAlternatives(
        gettext_lazy("Lazy subject"),
        "Plain body\n",
        "Sender <sender@example.com>",
        ["Ada <ada@example.com>"],
        cc=["cc@example.com"],
        bcc=["hidden@example.com"],
        reply_to=["reply@example.com"],
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.com>"},
    )
    message.attach_alternative("<p>HTML body</p>", "text/html")
    message.attach("notes.txt", "some text", "text/plain")
    message.attach("data.bin", bytes(range(256)), "application/octet-stream")
    message.attach("fwd.eml", inner, "message/rfc822")
    path = tmp_path / "report.csv"
    path.write_text("a,b\n1,2\n")
    message.attach_file(path)
    part = MIMEText("a MIME part", "plain")
    part.add_header("Content-Disposition", "attachment", filename="part.txt")
    if DJANGO_6:
        from email.message import MIMEPart

        modern = MIMEPart()
        modern.set_content(
            "a modern MIME part", disposition="attachment", filename="modern.txt"
        )
        message.attach(modern)
    else:
        message.attach(part)
    assert backend_for(server).send_messages([message]) == 1
    received = server.messages[0]
    assert received.rcpt_tos == [
        "ada@example.com",
        "cc@example.com",
        "hidden@example.com",
    ]
    assert b"hidden@example.com" not in received.data
    top = parsed(received.data)
    assert top["Subject"] == "Lazy subject"
    assert top["X-Campaign"] == "spring"
    assert top["Reply-To"] == "reply@example.com"
    assert top["Cc"] == "cc@example.com"
    names = [p.get_filename() for p in top.iter_attachments()]
    expected = ["notes.txt", "data.bin", "fwd.eml", "report.csv"]
    expected.append("modern.txt" if DJANGO_6 else "part.txt")
    assert names == expected
    by_name = {p.get_filename(): p for p in top.iter_attachments()}
    assert by_name["data.bin"].get_content() == bytes(range(256))
    assert by_name["report.csv"].get_content() == "a,b\n1,2\n"
    forwarded = by_name["fwd.eml"].get_content()
    assert forwarded["Subject"] == "Inner"
    body = top.get_body(("html",))
    assert body.get_content() == "<p>HTML body</p>\n"


@pytest.mark.skipif(not DJANGO_6, reason="Django 5.2 cannot render such filenames")
def test_rfc2231_filename_goes_through_djangos_serialiser(server):
    message = mail.EmailMessage("Files", "b", to=["a@example.com"])
    message.attach(("utf-8", "", "résumé.txt"), "text", "text/plain")
    assert backend_for(server).send_messages([message]) == 1
    attachment = next(parsed(server.messages[0].data).iter_attachments())
    assert attachment.get_filename() == "résumé.txt"


def test_a_subclass_overriding_message_keeps_djangos_bytes(server):
    class Signed(mail.EmailMessage):
        def message(self, **kwargs):
            msg = super().message(**kwargs)
            msg["X-Signed"] = "yes"
            return msg

    message = Signed("Signed", "Body\n", to=["a@example.com"], headers=FIXED)
    ours = backend_for(server)
    assert ours.send_messages([message]) == 1
    assert b"X-Signed: yes\r\n" in server.messages[0].data
    assert server.messages[0].data == django_smtp_bytes(server, message)


@pytest.mark.parametrize(
    "body",
    ["Plain ASCII.\n", "Zoë's café\n", ".leading dot\n..two\n", "x" * 1200 + "\n"],
)
def test_django_serialiser_is_byte_exact(server, body):
    message = mail.EmailMessage(
        "Ünïcode subject", body, to=["Zoë <zoe@example.com>"], headers=FIXED
    )
    assert backend_for(server, serializer="django").send_messages([message]) == 1
    assert server.messages[0].data == django_smtp_bytes(server, message)


def test_asyncmail_serialiser_is_djangos_message(server):
    message = mail.EmailMessage(
        "Ünïcode subject", "Zoë's café\n", to=["zoe@example.com"], headers=FIXED
    )
    assert backend_for(server).send_messages([message]) == 1
    ours = parsed(server.messages[0].data)
    theirs = parsed(django_smtp_bytes(server, message))
    for header in ("Subject", "From", "To", "Date", "Message-ID", "Content-Type"):
        assert ours[header] == theirs[header], header
    assert ours.get_content() == theirs.get_content()


def test_unknown_serializer_is_refused():
    with pytest.raises(asyncmail.ConfigurationError, match="serializer"):
        EmailBackend(serializer="pickle")


def test_bad_header_fails_that_message_alone(server):
    bad = mail.EmailMessage(
        "Bad", "b", to=["a@example.com"], headers={"X-Evil": "a\r\nBcc: x@example.com"}
    )
    good = mail.EmailMessage("Good", "b", to=["b@example.com"])
    with pytest.raises(ValueError, match="X-Evil"):
        backend_for(server).send_messages([bad, good])
    assert [m.rcpt_tos for m in server.messages] == [["b@example.com"]]


# -- where Django's mail is sent from -------------------------------------------


def test_from_worker_threads_sharing_one_backend(server):
    """Celery-style: task threads share one open backend (one pool)."""
    backend = backend_for(server, max_connections=3)
    with backend, ThreadPoolExecutor(4) as pool:
        counts = list(
            pool.map(
                lambda n: backend.send_messages(
                    [mail.EmailMessage(f"T{n}", "b", to=[f"t{n}@example.com"])]
                ),
                range(12),
            )
        )
    assert counts == [1] * 12
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"t{n}@example.com" for n in range(12)
    )
    assert server.sessions <= 3


def test_from_a_thread_whose_event_loop_is_running(server):
    """Django's sync code called straight from a coroutine still sends."""
    backend = backend_for(server)

    async def handler():
        return mail.EmailMessage(
            "In loop", "b", to=["a@example.com"], connection=backend
        ).send()

    assert asyncio.run(handler()) == 1
    assert server.messages[0].rcpt_tos == ["a@example.com"]


def test_asend_messages_does_not_block_the_loop(server):
    backend = backend_for(server)
    ticks = []

    async def main():
        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        messages = [
            mail.EmailMessage(str(n), "b", to=[f"u{n}@example.com"]) for n in range(20)
        ]
        sent = await asyncmail.django.asend_messages(messages, connection=backend)
        sent += await backend.asend_messages(
            [mail.EmailMessage("x", "b", to=["x@example.com"])]
        )
        assert await backend.aopen() is True
        await backend.aclose()
        own = asyncmail.get_connection(
            "asyncmail.backends.smtp.EmailBackend", host="127.0.0.1", port=server.port
        )
        sent += await asyncmail.django.asend_messages(
            [mail.EmailMessage("own", "b", to=["own@example.com"])], connection=own
        )
        task.cancel()
        return sent

    assert asyncio.run(main()) == 22
    assert len(server.messages) == 22
    assert ticks  # the loop ran while the messages were sent


def test_asend_messages_uses_djangos_default_backend(server):
    from django.test import override_settings

    with override_settings(EMAIL_PORT=server.port):
        sent = asyncio.run(
            asyncmail.django.asend_messages(
                [mail.EmailMessage("D", "b", to=["d@example.com"])]
            )
        )
    assert sent == 1
    assert server.messages[0].rcpt_tos == ["d@example.com"]
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"
    ):
        mail.outbox = []
        sent = asyncio.run(
            asyncmail.django.asend_messages(
                [mail.EmailMessage("L", "b", to=["l@example.com"])]
            )
        )
        assert sent == 1
        assert mail.outbox[0].subject == "L"


def test_mail_admins_and_admin_email_handler(server):
    import logging

    from django.test import override_settings
    from django.utils.log import AdminEmailHandler

    admins = ["ops@example.com"] if DJANGO_6 else [("Ops", "ops@example.com")]
    with override_settings(
        ADMINS=admins, EMAIL_PORT=server.port, SERVER_EMAIL="err@example.com"
    ):
        mail.mail_admins("Disk", "full")
        logger = logging.getLogger("asyncmail.contract")
        logger.addHandler(AdminEmailHandler())
        logger.error("Something broke")
    assert [m.rcpt_tos for m in server.messages] == [["ops@example.com"]] * 2
    assert parsed(server.messages[0].data)["Subject"] == "[Django] Disk"
    assert "Something broke" in parsed(server.messages[1].data)["Subject"]


# -- the trap: an asyncmail backend as Django's EMAIL_BACKEND ----------------------


def test_asyncmail_backend_as_email_backend_fails_loudly(server):
    from django.test import override_settings

    with override_settings(
        EMAIL_BACKEND="asyncmail.backends.smtp.EmailBackend", EMAIL_PORT=server.port
    ):
        with pytest.raises(TypeError, match=r"asyncmail\.django\.EmailBackend"):
            mail.send_mail("Lost?", "b", None, ["a@example.com"])

        async def from_a_coroutine():
            # Django's sync API called straight from async code: a running
            # loop, but Django never awaits.
            mail.send_mail("Lost?", "b", None, ["a@example.com"])

        with pytest.raises(TypeError, match=r"blocking\(\)"):
            asyncio.run(from_a_coroutine())
    assert server.messages == []


# -- settings bridge -------------------------------------------------------------


def test_bridge_follows_override_settings_and_configure_wins():
    from django.test import override_settings

    assert asyncmail.settings.DEFAULT_FROM_EMAIL == "app@example.com"
    assert asyncmail.settings.EMAIL_SUBJECT_PREFIX == ""  # Django's default: not taken
    assert asyncmail.settings.EMAIL_TIMEOUT == 60.0
    with override_settings(
        DEFAULT_FROM_EMAIL="o@example.com", EMAIL_SUBJECT_PREFIX="[x] "
    ):
        assert asyncmail.settings.DEFAULT_FROM_EMAIL == "o@example.com"
        assert asyncmail.settings.EMAIL_SUBJECT_PREFIX == "[x] "
        with asyncmail.settings.override(DEFAULT_FROM_EMAIL="c@example.com"):
            assert asyncmail.settings.DEFAULT_FROM_EMAIL == "c@example.com"
    assert asyncmail.settings.DEFAULT_FROM_EMAIL == "app@example.com"
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend"
    ):
        assert (
            asyncmail.settings.EMAIL_BACKEND == "asyncmail.django.outbox.EmailBackend"
        )
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend"
    ):
        assert (
            asyncmail.settings.EMAIL_BACKEND
            == "asyncmail.backends.console.EmailBackend"
        )
    assert asyncmail.settings.EMAIL_BACKEND == "asyncmail.backends.smtp.EmailBackend"


def test_bridge_reads_every_mail_setting():
    from django.test import override_settings

    admins = ["a1@example.com", "Ops <a2@example.com>"]
    project = {
        "EMAIL_HOST": "mx.example.com",
        "EMAIL_PORT": 2526,
        "EMAIL_HOST_USER": "user",
        "EMAIL_HOST_PASSWORD": "secret",
        "EMAIL_USE_TLS": True,
        "EMAIL_SSL_CERTFILE": "/etc/ssl/client.pem",
        "EMAIL_SSL_KEYFILE": "/etc/ssl/client.key",
        "EMAIL_TIMEOUT": 5,
        "EMAIL_USE_LOCALTIME": True,
        "EMAIL_SUBJECT_PREFIX": "[p] ",
        "DEFAULT_FROM_EMAIL": gettext_lazy("lazy@example.com"),
        "SERVER_EMAIL": "server@example.com",
        "ADMINS": admins,
        "MANAGERS": ["m@example.com"],
        "EMAIL_FILE_PATH": "/tmp/mail",
        "DEFAULT_CHARSET": "iso-8859-1",
    }
    expected = {
        **project,
        "EMAIL_TIMEOUT": 5.0,
        "DEFAULT_FROM_EMAIL": "lazy@example.com",
        "ADMINS": tuple(admins),
        "MANAGERS": ("m@example.com",),
    }
    with override_settings(**project):
        for name, value in expected.items():
            assert getattr(asyncmail.settings, name) == value, name
    with override_settings(EMAIL_USE_SSL=True):
        assert asyncmail.settings.EMAIL_USE_SSL is True
    assert asyncmail.settings.EMAIL_HOST == "127.0.0.1"
    assert asyncmail.settings.DEFAULT_CHARSET == "utf-8"


def test_django_send_mass_mail_and_fail_silently(server):
    from django.test import override_settings

    with override_settings(EMAIL_PORT=server.port):
        sent = mail.send_mass_mail(
            [
                ("One", "b", None, ["one@example.com"]),
                ("Two", "b", None, ["two@example.com"]),
            ]
        )
        assert sent == 2
        assert server.sessions == 1  # one connection for the batch
    with override_settings(EMAIL_PORT=unused_port()):
        message = mail.EmailMessage("Down", "b", to=["x@example.com"])
        assert message.send(fail_silently=True) == 0


def test_bridge_reports_what_it_cannot_use():
    from django.test import override_settings

    with (
        override_settings(EMAIL_BACKEND="anymail.backends.mailgun.EmailBackend"),
        pytest.raises(asyncmail.ConfigurationError, match="anymail"),
    ):
        asyncmail.get_connection()
    with (
        override_settings(EMAIL_PORT="twenty-five"),
        pytest.raises(asyncmail.ConfigurationError, match="EMAIL_PORT"),
    ):
        _ = asyncmail.settings.EMAIL_PORT


def test_bridge_reads_without_deprecation_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "Directly creating EmailBackend")
        assert asyncmail.settings.EMAIL_HOST == "127.0.0.1"
        assert EmailBackend().host == "127.0.0.1"


def test_bridge_takes_mailers(server):
    from django.test import override_settings

    mailers = {
        "default": {
            "BACKEND": "asyncmail.django.EmailBackend",
            "OPTIONS": {
                "host": "127.0.0.1",
                "port": server.port,
                "serializer": "django",
                "max_connections": 2,
            },
        }
    }
    with override_settings(MAILERS=mailers):
        assert asyncmail.settings.MAILERS["default"] == {
            "BACKEND": "asyncmail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": server.port, "max_connections": 2},
        }
        if django.VERSION >= (6, 1):  # Django hides EMAIL_* under MAILERS
            assert asyncmail.settings.EMAIL_HOST == "localhost"
        assert asyncmail.send_mail("M", "b", None, ["m@example.com"]) == 1
    assert server.messages[0].rcpt_tos == ["m@example.com"]


def test_asyncmail_api_sends_with_djangos_settings(server):
    from django.test import override_settings

    with override_settings(EMAIL_PORT=server.port):
        assert asyncmail.send_mail("API", "b", None, ["a@example.com"]) == 1

        async def main():
            return await asyncmail.asend_mail("Async API", "b", None, ["b@example.com"])

        assert asyncio.run(main()) == 1
    assert [m.mail_from for m in server.messages] == ["app@example.com"] * 2
    assert threading.active_count() >= 1


# -- Django's serialiser under asyncmail's header checks ------------------------


class Overridden(mail.EmailMessage):
    """A message() override (signing, stamping...): sent through Django's
    own serialiser, byte for byte."""

    def message(self, **kwargs):
        return super().message(**kwargs)


#: What Django's serialiser would write into a header as given (it refuses
#: only CR and LF in values, and checks no header name).
HOSTILE = {
    "a header name holding a line break": {
        "headers": {"X-Order: 1\nReply-To": "attacker@evil.example"}
    },
    "a vertical tab in the subject": {
        "subject": "Order\x0bReply-To : attacker@evil.example"
    },
    "a form feed in a header value": {
        "headers": {"X-Note": "a\x0cReply-To: attacker@evil.example"}
    },
    "a line separator in the subject": {
        "subject": "Order\u2028Reply-To: attacker@evil.example"
    },
    "an escape in the subject": {"subject": "Order \x1b[31m red"},
    "a vertical tab in reply_to": {
        "reply_to": ["a@example.com\x0bBcc: x@evil.example"]
    },
    "a vertical tab in an RFC 2231 filename": {
        "attach": (("utf-8", "", "a\x0bContent-Type: text/html"), "x", "text/plain")
    },
}


def hostile(cls, case):
    options = dict(HOSTILE[case])
    subject = options.pop("subject", "Order")
    attachment = options.pop("attach", None)
    message = cls(subject, "b", "shop@example.com", ["ada@example.com"], **options)
    if attachment is not None:
        message.attach(*attachment)
    return message


@pytest.mark.parametrize("case", HOSTILE)
@pytest.mark.parametrize("route", ["message() override", "serializer=django"])
def test_djangos_serialiser_gets_asyncmails_header_checks(server, case, route):
    cls = Overridden if route == "message() override" else mail.EmailMessage
    options = {} if route == "message() override" else {"serializer": "django"}
    with pytest.raises(asyncmail.BadHeaderError):
        backend_for(server, **options).send_messages([hostile(cls, case)])
    assert server.messages == []


def test_djangos_serialiser_sends_the_rest_and_fail_silently_holds(server):
    bad = hostile(mail.EmailMessage, "a vertical tab in the subject")
    good = mail.EmailMessage("Fine", "b", "shop@example.com", ["bob@example.com"])
    backend = backend_for(server, serializer="django", fail_silently=True)
    assert backend.send_messages([bad, good]) == 1
    assert [m.rcpt_tos for m in server.messages] == [["bob@example.com"]]


def test_the_outboxs_django_backend_gets_the_same_checks(server, tmp_path):
    from asyncmail.queue import open_store
    from asyncmail.queue.django_backend import EmailBackend as QueueBackend

    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    for case in HOSTILE:
        with pytest.raises(asyncmail.BadHeaderError):
            QueueBackend(url=url).send_messages([hostile(Overridden, case)])
    assert (
        QueueBackend(url=url, fail_silently=True).send_messages(
            [hostile(mail.EmailMessage, "a vertical tab in the subject")]
        )
        == 0
    )
    assert sum(asyncio.run(open_store(url).counts()).values()) == 0


@pytest.mark.parametrize("serializer", ["asyncmail", "django"])
def test_lazy_strings_are_rendered_in_the_callers_language(server, serializer):
    """Rendered where asyncmail renders (its loop's thread, a worker
    thread), in the language active where the message was handed over, as
    Django's own backend renders them in the caller's thread."""
    from django.utils import translation

    text = gettext_lazy("Enter a valid email address.")
    with translation.override("de"):
        german = str(text)
    with translation.override("fr"):
        french = str(text)
    assert german != french

    def made(to):
        return mail.EmailMessage(text, text, "shop@example.com", [to])

    backend = backend_for(server, serializer=serializer)
    with translation.override("de"):
        assert backend.send_messages([made("a@example.com")]) == 1
        assert backend.send_messages(made(to) for to in ["b@example.com"]) == 1

    async def send():
        with translation.override("fr"):
            return await backend.asend_messages([made("c@example.com")])

    assert asyncio.run(send()) == 1
    subjects = [str(parsed(m.data)["Subject"]) for m in server.messages]
    assert subjects == [german, german, french]
    assert parsed(server.messages[0].data).get_content().strip() == german
