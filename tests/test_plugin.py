"""The pytest plugin (``mailoutbox``, ``smtp_server``) and the outbox's
assertions: run as a user's project would run them (pytester), on plain
sync tests, anyio's plugin and pytest-asyncio, and directly."""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from pathlib import Path
from typing import Any

import pytest

import asyncmail
from asyncmail import EmailMessage, EmailMultiAlternatives
from asyncmail.testing import AmbiguousCaptureError, Outbox, capture_mail, routing

pytest_plugins = ["pytester"]

# A project whose settings point at a port where nothing listens: any send
# that escapes the capture fails loudly with a connection error.
CONFTEST = """
import socket
import pytest
import asyncmail

def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT=_closed_port(), EMAIL_TIMEOUT=5)
# Built at import, before any test: must be captured too.
PREBUILT = asyncmail.get_connection()

@pytest.fixture
def prebuilt():
    return PREBUILT
"""


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_project=source)
    # pytest-django (in the test environment) has a mailoutbox of its own.
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:django", *args
    )


# -- mailoutbox in a project --------------------------------------------------------


def test_sync_tests_capture_every_send_and_reset_per_test(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
import asyncmail
from asyncmail import EmailMessage, send_mail, send_mass_mail

def test_first(mailoutbox, prebuilt):
    assert send_mail("Hi", "Body", "app@example.com", ["ada@example.com"]) == 1
    send_mass_mail(
        [("A", "a", None, ["b@example.com"]), ("B", "b", None, ["c@example.com"])]
    )
    with prebuilt as connection:  # a blocking with-block on a backend built earlier
        connection.send_messages([EmailMessage("Pre", "p", None, ["d@example.com"])])
    EmailMessage("Own", "o", None, ["e@example.com"]).send()
    mailoutbox.assert_sent(count=5)
    mailoutbox.assert_sent(count=1, to="ada@example.com", subject="Hi")
    assert asyncmail.outbox is mailoutbox
    assert [m.subject for m in mailoutbox] == ["Hi", "A", "B", "Pre", "Own"]

def test_second_starts_empty(mailoutbox):
    mailoutbox.assert_nothing_sent()
    assert len(asyncmail.outbox) == 0

def test_the_unambiguous_name(asyncmail_outbox):
    send_mail("Hi", "Body", None, ["ada@example.com"])
    asyncmail_outbox.assert_sent(count=1)
""",
    )
    result.assert_outcomes(passed=3)


def test_anyio_tests_capture_async_sends(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest
import asyncmail
from asyncmail import EmailMessage, asend_mail

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_async(mailoutbox, prebuilt):
    await asend_mail("Hi", "Body", "app@example.com", ["ada@example.com"])
    async with asyncmail.get_connection(max_connections=4) as backend:
        await backend.send_messages(
            [EmailMessage(f"n{i}", "x", None, [f"u{i}@example.com"]) for i in range(6)]
        )
    await prebuilt.send_messages([EmailMessage("Pre", "p", None, ["p@example.com"])])
    await EmailMessage("Own", "o", None, ["o@example.com"]).asend()
    mailoutbox.assert_sent(count=9)
    mailoutbox.assert_sent(count=1, to="u5@example.com", subject="n5")

@pytest.mark.anyio
async def test_async_blocking_from_a_thread(mailoutbox):
    import anyio
    await anyio.to_thread.run_sync(
        asyncmail.send_mail, "T", "t", None, ["t@example.com"]
    )
    mailoutbox.assert_sent(count=1, subject="T")
""",
    )
    result.assert_outcomes(passed=2)


def test_pytest_asyncio_tests_capture_async_sends(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    result = run(
        pytester,
        """
import pytest
import pytest_asyncio
import asyncmail
from asyncmail import asend_mail

@pytest_asyncio.fixture
async def welcomed():
    await asend_mail("Setup", "from an async fixture", None, ["f@example.com"])

@pytest.mark.asyncio
async def test_async(mailoutbox, welcomed, prebuilt):
    await asend_mail("Hi", "Body", "app@example.com", ["ada@example.com"])
    async with prebuilt as backend:
        message = asyncmail.EmailMessage("P", "p", None, ["p@example.com"])
        await backend.send_messages([message])
    mailoutbox.assert_sent(count=3)
    mailoutbox.assert_sent(subject="Setup", body="async fixture")

@pytest.mark.asyncio
async def test_empty_again(mailoutbox):
    mailoutbox.assert_nothing_sent()
""",
        "--strict-config",
    )
    result.assert_outcomes(passed=2)


def test_plugin_is_inert_without_its_fixtures(pytester: pytest.Pytester) -> None:
    # Without mailoutbox, sends go where the settings say: here, a port with
    # nothing listening, so the send fails instead of being captured.
    result = run(
        pytester,
        """
import pytest
import asyncmail
from asyncmail.testing import routing

def test_real_send_is_not_captured():
    assert routing.active_outbox() is None
    with pytest.raises(asyncmail.SMTPConnectError):
        asyncmail.send_mail("Hi", "Body", None, ["ada@example.com"])

def test_locmem_still_fills_asyncmail_outbox():
    asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")
    asyncmail.send_mail("Hi", "Body", None, ["ada@example.com"])
    assert type(asyncmail.outbox) is list and len(asyncmail.outbox) == 1
""",
    )
    result.assert_outcomes(passed=2)


def test_failed_assertion_lists_what_was_sent(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import asyncmail

def test_wrong_recipient(mailoutbox):
    asyncmail.send_mail("Welcome", "Click to activate.", None, ["ada@example.com"])
    asyncmail.send_mail("Receipt", "Paid.", None, ["bob@example.com"])
    mailoutbox.assert_sent(to="carol@example.com", subject="Welcome")
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r".*Expected at least one message matching to='carol@example.com', "
            r"subject='Welcome' to be sent; 0 matched\.",
            r".*2 sent:",
            r".*#1: 'Welcome' from webmaster@localhost to ada@example\.com",
            r".*- to lacks carol@example\.com \(has \['ada@example\.com'\]\)",
            r".*#2: 'Receipt' from webmaster@localhost to bob@example\.com",
            r".*- subject is 'Receipt', not 'Welcome'",
        ]
    )


# -- smtp_server --------------------------------------------------------------------


def test_smtp_server_fixture_receives_real_mail(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest
import asyncmail

def test_plain(smtp_server):
    asyncmail.send_mail("Hi", "Body", "app@example.com", ["ada@example.com"])
    [received] = smtp_server.messages
    assert received.mail_from == "app@example.com"
    assert received.rcpt_tos == ("ada@example.com",)
    assert received.subject == "Hi" and not received.tls and received.login is None

@pytest.mark.parametrize(
    "smtp_server", [{"tls": True, "credentials": ("user", "s3cret")}], indirect=True
)
def test_tls_and_auth(smtp_server):
    message = asyncmail.EmailMessage("Secure", "Body", None, ["ada@example.com"],
                                     bcc=["audit@example.com"])
    message.send()
    [received] = smtp_server.messages
    assert received.tls and received.login == "user"
    assert received.rcpt_tos == ("ada@example.com", "audit@example.com")
    assert b"audit@" not in received.data

@pytest.fixture
def anyio_backend():
    return "asyncio"

@pytest.mark.anyio
async def test_async_and_factory(smtp_server, smtp_server_factory):
    other = smtp_server_factory(refuse={"bad@example.com": "550 5.1.1 No such user"})
    await asyncmail.asend_mail("A", "a", None, ["ada@example.com"])
    backend = other.connection()
    to = ["bad@example.com", "ok@example.com"]
    message = asyncmail.EmailMessage("B", "b", None, to)
    assert await backend.send_messages([message], fail_silently=True) == 1
    assert message.result.refused["bad@example.com"].code == 550
    assert [m.subject for m in smtp_server.messages] == ["A"]
    assert other.envelopes == [("webmaster@localhost", ("ok@example.com",))]
""",
    )
    result.assert_outcomes(passed=3)


def test_smtp_server_rejects_non_dict_parameters(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest

@pytest.mark.parametrize("smtp_server", [True], indirect=True)
def test_bad(smtp_server):
    pass
""",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Parametrise smtp_server with a dict*"])


# -- the fixtures in this suite -----------------------------------------------------


def test_mailoutbox_here_captures_the_default_smtp_backend(
    mailoutbox: Outbox,
) -> None:
    # asyncmail's default backend is SMTP on localhost:25: nothing is there.
    assert asyncmail.send_mail("Hi", "Body", None, ["ada@example.com"]) == 1
    mailoutbox.assert_sent(count=1, to="ada@example.com")
    assert mailoutbox.results[0].status.value == "sent"


def test_smtp_server_here(smtp_server: asyncmail.testing.SMTPTestServer) -> None:
    asyncmail.send_mail("Hi", "Body", None, ["ada@example.com"])
    assert smtp_server.messages[0].message.get_content() == "Body\n"


# -- capture scoping ----------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_captures_in_one_loop_are_isolated() -> None:
    async def scenario(name: str, count: int) -> Outbox:
        with capture_mail() as outbox:
            for number in range(count):
                await asyncio.sleep(0)  # interleave with the other task
                await asyncmail.asend_mail(
                    f"{name} {number}", "x", None, [f"{name}@example.com"]
                )
        return outbox

    first, second = await asyncio.gather(scenario("ada", 3), scenario("bob", 5))
    first.assert_sent(count=3, to="ada@example.com")
    first.assert_not_sent(to="bob@example.com")
    second.assert_sent(count=5, to="bob@example.com")
    assert routing._active == []


def test_a_send_outside_every_context_is_refused_when_ambiguous() -> None:
    errors: list[BaseException] = []

    def send() -> None:  # a plain thread: it does not carry the context
        try:
            asyncmail.send_mail("Hi", "Body", None, ["ada@example.com"])
        except BaseException as exc:
            errors.append(exc)

    with capture_mail() as one:
        thread = threading.Thread(target=send)
        thread.start()
        thread.join()
        assert not errors
        one.assert_sent(count=1)  # the only capture: the thread's mail is its
        other = Outbox()
        second_test = other.capturing()
        context = contextvars.Context()  # as a second test's own context
        context.run(second_test.__enter__)
        try:
            thread = threading.Thread(target=send)
            thread.start()
            thread.join()
        finally:
            context.run(second_test.__exit__, None, None, None)
    assert len(errors) == 1
    assert isinstance(errors[0], AmbiguousCaptureError)
    assert "cannot be attributed" in str(errors[0])
    assert len(one) == 1
    assert len(other) == 0


def test_capture_ends_with_the_block() -> None:
    asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")
    with capture_mail() as outbox:
        asyncmail.send_mail("In", "x", None, ["a@example.com"])
    asyncmail.send_mail("Out", "x", None, ["a@example.com"])
    assert [m.subject for m in outbox] == ["In"]
    assert [m.subject for m in asyncmail.outbox] == ["Out"]


def test_a_bad_message_fails_as_it_would_on_the_wire(mailoutbox: Outbox) -> None:
    message = EmailMessage("Hi\nBcc: x@example.com", "x", None, ["a@example.com"])
    with pytest.raises(asyncmail.BadHeaderError):
        message.send()
    mailoutbox.assert_nothing_sent()
    assert message.send(fail_silently=True) == 0


# -- the assertions -----------------------------------------------------------------


@pytest.fixture
def sent(mailoutbox: Outbox) -> Outbox:
    welcome = EmailMultiAlternatives(
        "Welcome, Ada",
        "Hello Ada,\nactivate: https://example.com/a/123\n",
        "App <app@example.com>",
        ["Ada Lovelace <ada@Example.COM>"],
        cc=["team@example.com"],
        bcc=["audit@example.com"],
        headers={"X-Campaign": "signup-7"},
    )
    welcome.attach_alternative("<p>Hello <b>Ada</b> &amp; friends</p>", "text/html")
    welcome.attach("terms.pdf", b"%PDF-1.4 terms", "application/pdf")
    welcome.send()
    EmailMessage(
        "Receipt", "Paid 10 EUR.", "billing@example.com", ["bob@example.com"]
    ).send()
    return mailoutbox


def test_assert_sent_criteria(sent: Outbox) -> None:
    [welcome] = sent.assert_sent(to="ada@example.com", subject="Welcome, Ada")
    assert welcome is sent[0]
    sent.assert_sent(count=1, to=["ada@example.com"], cc="team@example.com")
    sent.assert_sent(count=1, bcc="audit@example.com", recipients="audit@example.com")
    sent.assert_sent(count=1, from_email="app@example.com")
    sent.assert_sent(count=1, subject=re.compile(r"^Welcome"))
    sent.assert_sent(count=1, subject=lambda s: s.endswith("Ada"))
    sent.assert_sent(count=1, body="activate: https://example.com/a/123")
    sent.assert_sent(count=1, body="Paid 10")
    sent.assert_sent(count=1, html="<b>Ada</b> &amp; friends")  # as rendered
    sent.assert_sent(count=1, body=re.compile(r"a/\d+"))
    sent.assert_sent(count=1, attachment="terms.pdf")
    sent.assert_sent(count=1, attachment=("terms.pdf", "application/pdf"))
    sent.assert_sent(
        count=1, attachment=lambda name, data, kind: data.startswith(b"%PDF")
    )
    sent.assert_sent(count=1, headers={"X-Campaign": "signup-7"})
    sent.assert_sent(count=1, where=lambda m: m.extra_headers.get("X-Campaign"))
    sent.assert_sent(count=2)
    sent.assert_sent(count=0, to="nobody@example.com")
    assert sent.filter(subject="Receipt") == [sent[1]]
    assert sent.last is sent[1]


def test_assert_sent_failures_say_why(sent: Outbox) -> None:
    with pytest.raises(AssertionError) as failure:
        sent.assert_sent(count=2, html="Ada")
    text = str(failure.value)
    assert "Expected 2 messages matching html='Ada' to be sent; 1 matched." in text
    assert "#2: 'Receipt' from billing@example.com to bob@example.com" in text
    assert "- there is no HTML part" in text
    assert "#1: 'Welcome, Ada'" in text
    assert "- matches" in text

    with pytest.raises(
        AssertionError,
        match=r"no attachment 'invoice\.pdf' \(has 'terms\.pdf' \(application/pdf\)\)",
    ):
        sent.assert_sent(attachment="invoice.pdf")
    with pytest.raises(
        AssertionError,
        match=r"body does not contain 'refund' \(text/plain: 'Paid 10 EUR\.'\)",
    ):
        sent.assert_sent(subject="Receipt", body="refund")
    with pytest.raises(
        AssertionError, match=r"X-Campaign is 'signup-7', not 'signup-8'"
    ):
        sent.assert_sent(headers={"X-Campaign": "signup-8"})
    with pytest.raises(
        AssertionError,
        match=r"Expected no message matching to='bob@example.com'; "
        r"1 did:\n  #2: 'Receipt'",
    ):
        sent.assert_not_sent(to="bob@example.com")
    with pytest.raises(
        AssertionError,
        match=r"Expected no e-mail to be sent; 2 were:\n  #1: 'Welcome, Ada' "
        r"from app@example.com to ada@example.com cc team@example.com "
        r"bcc audit@example.com\n  #2",
    ):
        sent.assert_nothing_sent()


def test_local_parts_compare_exactly(sent: Outbox) -> None:
    sent.assert_sent(count=1, to="ada@example.com")  # the domain: any case
    sent.assert_sent(count=0, to="ADA@example.com")


def test_assertion_misuse_is_an_error(mailoutbox: Outbox) -> None:
    with pytest.raises(TypeError, match="Unknown criteria"):
        mailoutbox.assert_sent(subjet="typo")
    with pytest.raises(TypeError, match="needs criteria"):
        mailoutbox.assert_not_sent()
    with pytest.raises(AssertionError, match="No e-mail was sent at all"):
        mailoutbox.assert_sent()
    with pytest.raises(AssertionError, match="No e-mail was sent"):
        _ = mailoutbox.last


def test_outbox_keeps_copies_and_the_sent_bytes(mailoutbox: Outbox) -> None:
    message = EmailMessage(
        "Hi", "Body", None, ["ada@example.com"], bcc=["x@example.com"]
    )
    message.send()
    message.subject = "changed later"
    assert mailoutbox[0].subject == "Hi"
    data = mailoutbox.sent_bytes(mailoutbox[0])
    assert b"Subject: Hi\r\n" in data
    assert b"x@example.com" not in data
    assert mailoutbox.parsed(mailoutbox[0])["To"] == "ada@example.com"
    mailoutbox.clear()
    assert len(mailoutbox) == 0
    assert mailoutbox.results == []


def test_the_testing_pages_examples_pass_as_a_project(
    pytester: pytest.Pytester,
) -> None:
    # docs/pages/testing.md, every python block, as one test module of a
    # user's project: the documented tests run under the installed plugin.
    page = Path(__file__).resolve().parent.parent / "docs" / "pages" / "testing.md"
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text("utf-8"), re.M | re.S)
    pytester.makepyfile(test_page="\n\n".join(blocks))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:django", "-v"
    )
    result.assert_outcomes(passed=6)


@pytest.fixture
def bulk_mailer() -> None:
    # A named mailer configured by the application, pointing elsewhere.
    asyncmail.configure(
        MAILERS={
            "bulk": {
                "BACKEND": "asyncmail.backends.smtp.EmailBackend",
                "OPTIONS": {"host": "mail.invalid", "port": 2525},
            }
        }
    )


@pytest.mark.parametrize("smtp_server", [{}, {"tls": True}], indirect=True)
def test_smtp_server_takes_over_named_mailers(
    bulk_mailer: None, smtp_server: asyncmail.testing.SMTPTestServer
) -> None:
    asyncmail.send_mail("Bulk", "x", None, ["ada@example.com"], using="bulk")
    asyncmail.send_mail("Default", "x", None, ["bob@example.com"])
    assert [m.subject for m in smtp_server.messages] == ["Bulk", "Default"]
    assert all(m.tls is smtp_server.tls for m in smtp_server.messages)


def test_smtp_server_requires_auth_when_it_has_credentials(
    smtp_server_factory: Any,
) -> None:
    server = smtp_server_factory(credentials=("user", "pw"))
    anonymous = server.connection(username="", password="", retries=0)
    message = EmailMessage("Hi", "x", None, ["ada@example.com"])
    with pytest.raises(asyncmail.SendError) as failure:
        anonymous.blocking().send_messages([message])
    assert "530" in str(failure.value)
    assert server.messages == []


@pytest.mark.parametrize(
    "smtp_server", [{"implicit_tls": True, "credentials": ("u", "pw")}], indirect=True
)
def test_smtp_server_with_implicit_tls(
    smtp_server: asyncmail.testing.SMTPTestServer,
) -> None:
    asyncmail.send_mail("Hi", "x", None, ["ada@example.com"])
    [received] = smtp_server.messages
    assert received.tls
    assert received.login == "u"
    assert "TLS" in repr(smtp_server)
    with pytest.raises(ValueError, match="exclusive"):
        asyncmail.testing.SMTPTestServer(tls=True, implicit_tls=True)
