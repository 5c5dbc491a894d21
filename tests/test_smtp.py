"""The SMTP backend against a real aiosmtpd server on 127.0.0.1.

Every test checks what the server received: the envelope, the message bytes
(byte for byte where the message is deterministic: Date and Message-ID are
pinned), and the raw bytes each client sent, in clear text or under TLS.
TLS uses trustme certificates; the default verifying context is made to trust
the test CA through ``SSL_CERT_FILE`` (OpenSSL's default verify paths read
it when each backend builds its context).
"""

from __future__ import annotations

import email.policy
import re
import ssl
from collections.abc import Iterator
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import trustme

import asyncmail
from asyncmail import (
    ConfigurationError,
    DeliveryUnknownError,
    EmailMessage,
    EmailMultiAlternatives,
    InsecureAuthError,
    MailError,
    MessageStatus,
    Outcome,
    RawMessage,
    RecipientsRefusedError,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPNotSupportedError,
    SMTPTimeoutError,
    TLSError,
    get_connection,
)
from asyncmail.backends.smtp import EmailBackend
from asyncmail.smtp import session as smtp
from asyncmail.smtp.wire import wire_payload
from helpers import unused_port
from smtpserver import SilentServer, SMTPServer
from wire import dot_stuff

pytestmark = pytest.mark.anyio

FROM = "sender@example.com"
PINNED = {"Date": "Tue, 02 Jan 2024 03:04:05 +0000", "Message-ID": "<pin@example.com>"}
EHLO_NAME = "client.example"


def backend_for(port: int, **options: Any) -> EmailBackend:
    """An SMTP backend for the test server: no retries unless asked."""
    options.setdefault("timeout", 10)
    options.setdefault("retries", 0)
    options.setdefault("local_hostname", EHLO_NAME)
    return EmailBackend(host="127.0.0.1", port=port, **options)


def pinned(subject: str = "Hello", body: str = "Body", **kwargs: Any) -> EmailMessage:
    kwargs.setdefault("to", ["to@example.com"])
    headers = {**PINNED, **kwargs.pop("headers", {})}
    return EmailMessage(subject, body, FROM, headers=headers, **kwargs)


def data_on_the_wire(raw: bytes | bytearray) -> bytes:
    """What one session sent after its first DATA command, QUIT removed."""
    after = bytes(raw).split(b"DATA\r\n", 1)[1]
    assert after.endswith(b"QUIT\r\n")
    return after.removesuffix(b"QUIT\r\n")


def same_boundaries(rendered: bytes, received: bytes) -> bytes:
    """*rendered* with the MIME boundaries of *received* (they are random)."""
    pattern = re.compile(rb'boundary="([^"]+)"')
    ours, theirs = pattern.findall(rendered), pattern.findall(received)
    assert len(ours) == len(theirs) > 0
    for old, new in zip(ours, theirs, strict=True):
        rendered = rendered.replace(old, new)
    return rendered


def chain(error: BaseException) -> list[BaseException]:
    """The error and its causes (``raise ... from``) or contexts."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def only_crlf(data: bytes) -> bool:
    return re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    with SMTPServer() as running:
        yield running


# -- what the server receives ------------------------------------------------------


async def test_server_receives_the_rendered_bytes(server: SMTPServer) -> None:
    mail = EmailMultiAlternatives(
        "Quarterly report",
        "See the attachment.\n",
        "Reports <reports@example.com>",
        ["Ada <ada@example.com>", "bob@example.com"],
        cc=["carol@example.com"],
        bcc=["dave@example.com"],
        reply_to=["replies@example.com"],
        headers=PINNED,
    )
    mail.attach_alternative("<p>See the attachment.</p>", "text/html")
    mail.attach("report.bin", bytes(range(256)), "application/octet-stream")

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert received.mail_from == "reports@example.com"
    assert received.rcpt_tos == [
        "ada@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    assert received.data == same_boundaries(mail.as_bytes(), received.data)
    (raw,) = server.recorder.raw
    assert data_on_the_wire(raw) == dot_stuff(received.data)
    assert raw.startswith(f"EHLO {EHLO_NAME}\r\n".encode())
    assert "MAIL FROM:<reports@example.com> SIZE=" in raw.decode()
    assert mail.result is not None
    assert mail.result.message_id == "<pin@example.com>"
    assert mail.result.reply.startswith("250 ")
    assert mail.result.recipients["dave@example.com"].code == 250


async def test_only_crlf_line_endings_on_the_wire(server: SMTPServer) -> None:
    bodies = ["unix\nlines\n", "mac\rlines\r", "dos\r\nlines\r\n", "mixed\r\n\n\r"]
    messages = [pinned(f"m{n}", body) for n, body in enumerate(bodies)]
    messages.append(pinned("no final newline", "end"))

    assert await backend_for(server.port).send_messages(messages) == len(messages)

    assert only_crlf(server.recorder.wire)
    for received in server.messages:
        assert only_crlf(received.data)
        assert received.data.endswith(b"\r\n")


HAZARDS = [
    ".leading dot",
    "a\n.\nb",
    "a\r.\rb",
    "a\n.\r\nb",
    "a\r\n.\r\nb",
    ".\r\n",
    "..two dots",
    "\n.",
    ".\n.\n.",
    "bare\rCR and bare\nLF",
    "end\r\n.",
]


@pytest.mark.parametrize("body", HAZARDS)
async def test_dot_stuffing(server: SMTPServer, body: str) -> None:
    mail = pinned("hazard", body)

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages  # exactly one message, however lenient
    assert received.data == mail.as_bytes()
    parsed = BytesParser(policy=email.policy.default).parsebytes(
        received.data.replace(b"\r\n", b"\n")
    )
    expected = body.replace("\r\n", "\n").replace("\r", "\n")
    assert parsed.get_content() == expected.removesuffix("\n") + "\n"
    wire = data_on_the_wire(server.recorder.raw[0])
    assert only_crlf(wire)
    assert_stuffed(wire)


def assert_stuffed(wire: bytes) -> None:
    """Every line starting with a dot is doubled; a line of just "." occurs
    only at the end, even for a server that splits on bare CR or LF."""
    assert wire.endswith(b"\r\n.\r\n")
    lines = wire[: -len(b".\r\n")].split(b"\r\n")
    assert all(line.startswith(b"..") for line in lines if line.startswith(b"."))
    lenient = re.split(rb"\r\n|\r|\n", wire)
    assert lenient[-2:] == [b".", b""]
    assert b"." not in lenient[:-2]


@pytest.mark.parametrize(
    "data",
    [
        b".",
        b".\r\n",
        b"a\n.\nb",
        b"a\r.\rb",
        b"a\r\n.\r\nb",
        b"a\n.\r\nb",
        b"a\r.\nb",
        b"\r\n.\r\n",
        b"\n.\n",
        b"x\r",
        b"..\n...",
        b"no newline at all",
    ],
)
def test_foreign_bytes_reach_the_wire_as_crlf_and_stuffed(data: bytes) -> None:
    # asyncmail's serialiser never emits bare CR or LF; bytes it did not make
    # (a raw message here; also a subclass's message() or a MIMEPart) are
    # normalised on the way in, then dot-stuffed for the DATA phase.
    head = b"Subject: s\r\n\r\n"
    stuffed = wire_payload(
        RawMessage(head + data, "f@example.com", ["t@x.com"]).render()
    )
    assert isinstance(stuffed, bytes)
    assert stuffed.startswith(head)
    stuffed = stuffed[len(head) :]

    assert only_crlf(stuffed)
    assert_stuffed(stuffed)
    # A server's un-stuffing restores the data with CRLF line endings.
    lines = stuffed[: -len(b".\r\n")].split(b"\r\n")
    restored = b"\r\n".join(
        line[1:] if line.startswith(b".") else line for line in lines
    )
    crlf = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    assert restored == crlf if crlf.endswith(b"\r\n") else crlf + b"\r\n"


async def test_bcc_only_in_the_envelope(server: SMTPServer) -> None:
    mail = pinned(bcc=["secret@example.com", "Hidden <hidden@example.com>"])

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert received.rcpt_tos == [
        "to@example.com",
        "secret@example.com",
        "hidden@example.com",
    ]
    assert b"secret" not in received.data
    assert b"Hidden" not in received.data
    assert b"bcc" not in received.data.lower()
    wire = server.recorder.wire
    assert wire.count(b"secret@example.com") == 1
    assert b"RCPT TO:<secret@example.com>\r\n" in wire
    assert b"Hidden" not in wire


async def test_idna_domains_in_the_envelope(server: SMTPServer) -> None:
    mail = EmailMessage(
        "IDNA", "body", "news@exämple.com", ["user@bücher.example"], headers=PINNED
    )

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert received.mail_from == "news@xn--exmple-cua.com"
    assert received.rcpt_tos == ["user@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in received.mail_options
    assert server.recorder.wire.isascii()
    assert b"To: user@xn--bcher-kva.example\r\n" in received.data


async def test_smtputf8_for_a_non_ascii_local_part(server: SMTPServer) -> None:
    mail = pinned(to=["jörg@example.com", "plain@example.com"])

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert "SMTPUTF8" in received.mail_options
    assert received.rcpt_tos == ["jörg@example.com", "plain@example.com"]
    assert "RCPT TO:<jörg@example.com>\r\n".encode() in server.recorder.wire
    assert received.data == mail.as_bytes()
    assert "jörg@example.com".encode() in received.data


async def test_smtputf8_not_offered() -> None:
    with SMTPServer(enable_SMTPUTF8=False) as server:
        backend = backend_for(server.port)
        needs_utf8 = pinned(to=["jörg@example.com"])
        ascii_only = pinned("fine")

        async with backend:
            with pytest.raises(SMTPNotSupportedError, match="SMTPUTF8") as info:
                await backend.send_messages([needs_utf8])
            # Refused before a byte was written: the connection stays usable.
            assert await backend.send_messages([ascii_only]) == 1

    assert info.value.sent == 0
    assert needs_utf8.result is not None
    assert needs_utf8.result.status is MessageStatus.FAILED
    assert needs_utf8.result.recipients["jörg@example.com"].outcome is Outcome.PERMANENT
    assert server.sessions == 1
    assert [received.data for received in server.messages] == [ascii_only.as_bytes()]
    assert server.recorder.wire.count(b"MAIL FROM") == 1
    assert "jörg".encode() not in server.recorder.wire


async def test_8bit_body_uses_8bitmime(server: SMTPServer) -> None:
    mail = pinned(body="Grüße aus Köln\n")

    assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert "BODY=8BITMIME" in received.mail_options
    assert received.data == mail.as_bytes()
    assert "Grüße aus Köln".encode() in received.data


async def test_8bit_body_without_8bitmime_is_sent_as_7bit() -> None:
    mail = pinned(body="Grüße aus Köln\n")
    with SMTPServer(decode_data=True) as server:  # aiosmtpd: no 8BITMIME then
        assert await backend_for(server.port).send_messages([mail]) == 1

    (received,) = server.messages
    assert "BODY=8BITMIME" not in received.mail_options
    assert received.data.isascii()
    assert received.data == mail.render(allow_8bit=False).data
    parsed = BytesParser(policy=email.policy.default).parsebytes(
        received.data.replace(b"\r\n", b"\n")
    )
    # (text in base64 keeps its canonical CRLF line breaks: RFC 2046 4.1.1)
    assert parsed.get_content().replace("\r\n", "\n") == "Grüße aus Köln\n"


async def test_connection_reuse_and_retirement(server: SMTPServer) -> None:
    backend = backend_for(server.port, max_messages_per_connection=2)

    async with backend:
        for number in range(5):
            assert await backend.send_messages([pinned(f"m{number}")]) == 1

    assert len(server.messages) == 5
    assert server.sessions == 3  # 2 + 2 + 1 messages
    assert all(raw.endswith(b"QUIT\r\n") for raw in server.recorder.raw)


# -- refused recipients --------------------------------------------------------------


async def test_one_recipient_refused(server: SMTPServer) -> None:
    server.recorder.refuse_rcpt["bad@example.com"] = "550 5.1.1 No such user"
    mail = pinned(to=["ok@example.com", "bad@example.com"])

    with pytest.raises(RecipientsRefusedError, match=r"bad@example\.com") as info:
        await backend_for(server.port).send_messages([mail])

    error = info.value
    assert error.sent == 1  # Django counts a message accepted for anyone
    assert list(error.refused) == ["bad@example.com"]
    result = mail.result
    assert result is not None
    assert result.status is MessageStatus.PARTIAL
    assert result.accepted == ["ok@example.com"]
    refused = result.refused["bad@example.com"]
    assert (refused.outcome, refused.code, refused.enhanced_status) == (
        Outcome.PERMANENT,
        550,
        "5.1.1",
    )
    assert "No such user" in refused.text
    (received,) = server.messages
    assert received.rcpt_tos == ["ok@example.com"]
    assert received.data == mail.as_bytes()


async def test_every_recipient_refused(server: SMTPServer) -> None:
    server.recorder.refuse_rcpt["a@example.com"] = "550 5.1.1 No"
    server.recorder.refuse_rcpt["b@example.com"] = "553 5.1.3 Bad"
    mail = pinned(to=["a@example.com", "b@example.com"])

    with pytest.raises(RecipientsRefusedError) as info:
        await backend_for(server.port).send_messages([mail])

    assert info.value.sent == 0
    assert mail.result is not None
    assert mail.result.status is MessageStatus.FAILED
    assert {a: r.code for a, r in mail.result.refused.items()} == {
        "a@example.com": 550,
        "b@example.com": 553,
    }
    assert server.messages == []
    assert b"Subject:" not in server.recorder.wire


async def test_temporary_refusal_is_retried_for_that_recipient_only(
    server: SMTPServer,
) -> None:
    server.recorder.refuse_rcpt["busy@example.com"] = "450 4.2.1 Try later"
    mail = pinned(to=["ok@example.com", "busy@example.com"])
    backend = backend_for(server.port, retries=1, retry_backoff=0.01)

    assert await backend.send_messages([mail], fail_silently=True) == 1

    result = mail.result
    assert result is not None
    assert result.attempts == 2
    assert result.status is MessageStatus.PARTIAL
    busy = result.recipients["busy@example.com"]
    assert (busy.outcome, busy.code) == (Outcome.TEMPORARY, 450)
    wire = server.recorder.wire
    assert wire.count(b"RCPT TO:<busy@example.com>") == 2
    assert wire.count(b"RCPT TO:<ok@example.com>") == 1
    assert [received.rcpt_tos for received in server.messages] == [["ok@example.com"]]


async def test_count_over_several_messages(server: SMTPServer) -> None:
    server.recorder.refuse_rcpt["bad@example.com"] = "550 5.1.1 No"
    partial = pinned("partial", to=["ok@example.com", "bad@example.com"])
    full = pinned("full")
    refused = pinned("refused", to=["bad@example.com"])
    backend = backend_for(server.port)

    with pytest.raises(RecipientsRefusedError) as info:
        await backend.send_messages([partial, full, refused])

    # The first message's error is raised, after every message was tried.
    assert partial.result is not None
    assert info.value is partial.result.error
    assert info.value.sent == 2
    assert [r.status for r in info.value.results] == [
        MessageStatus.PARTIAL,
        MessageStatus.SENT,
        MessageStatus.FAILED,
    ]
    assert (
        await backend.send_messages([partial, full, refused], fail_silently=True) == 2
    )


# -- TLS -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def trust_test_ca(monkeypatch: pytest.MonkeyPatch, ca_file: Path) -> None:
    """Make the default verifying context trust the test CA (and only it)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))


@pytest.fixture
def trust_another_ca(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:  # the test CA is then unknown
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def tls_server(ca: trustme.CA, mode: str, *names: str, **options: Any) -> SMTPServer:
    context = server_tls(ca, *(names or ("127.0.0.1",)))
    if mode == "starttls":
        return SMTPServer(starttls_context=context, **options)
    return SMTPServer(implicit_tls_context=context, **options)


def tls_options(mode: str) -> dict[str, bool]:
    return {"use_tls": True} if mode == "starttls" else {"use_ssl": True}


TLS_MODES = ["starttls", "implicit"]


@pytest.mark.usefixtures("trust_test_ca")
@pytest.mark.parametrize("mode", TLS_MODES)
async def test_tls_with_a_good_certificate(ca: trustme.CA, mode: str) -> None:
    mail = pinned()
    with tls_server(ca, mode) as server:
        backend = backend_for(server.port, **tls_options(mode))
        assert await backend.send_messages([mail]) == 1

    (received,) = server.messages
    assert received.tls
    assert received.data == mail.as_bytes()
    (clear,) = server.recorder.plaintext
    if mode == "starttls":
        assert bytes(clear) == f"EHLO {EHLO_NAME}\r\nSTARTTLS\r\n".encode()
        assert server.recorder.raw[0].startswith(bytes(clear) + b"EHLO ")
    else:
        assert clear == b""


@pytest.mark.usefixtures("trust_test_ca")
async def test_plaintext_injected_before_starttls_is_discarded(ca: trustme.CA) -> None:
    """SECURITY.md: a reply queued in clear text behind STARTTLS's 220 (here a
    forged refusal of the EHLO that follows TLS) is thrown away, not read as
    the first reply inside TLS."""
    import asyncio

    context = server_tls(ca, "127.0.0.1")
    after_tls: list[str] = []
    body = bytearray()

    async def session(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def command() -> str:
            return (await reader.readline()).decode("ascii")

        writer.write(b"220 fake.example ESMTP\r\n")
        assert (await command()).startswith("EHLO ")
        writer.write(b"250-fake.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        assert await command() == "STARTTLS\r\n"
        writer.write(b"220 2.0.0 Ready\r\n554 5.7.1 injected in clear text\r\n")
        await writer.drain()
        await writer.start_tls(context)
        while line := await command():
            after_tls.append(line)
            verb = line[:4].upper()
            if verb == "EHLO":
                writer.write(b"250-fake.example\r\n250 PIPELINING\r\n")
            elif verb == "DATA":
                writer.write(b"354 Go ahead\r\n")
                while (chunk := await reader.readline()) != b".\r\n":
                    body.extend(chunk)
                writer.write(b"250 2.0.0 Queued as 1\r\n")
            elif verb == "QUIT":
                writer.write(b"221 Bye\r\n")
                break
            else:
                writer.write(b"250 2.1.0 OK\r\n")
        writer.close()

    listener = await asyncio.start_server(session, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    mail = pinned()
    async with listener:
        assert await backend_for(port, use_tls=True).send_messages([mail]) == 1

    assert [line.split(":")[0].split()[0] for line in after_tls] == [
        "EHLO", "MAIL", "RCPT", "DATA", "QUIT",
    ]  # fmt: skip
    assert bytes(body) + b".\r\n" == dot_stuff(mail.as_bytes())
    assert mail.result is not None
    assert mail.result.ok


async def test_default_tls_context_verifies(server: SMTPServer) -> None:
    context = await backend_for(server.port, use_tls=True)._tls()

    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def assert_nothing_sent_in_clear(server: SMTPServer) -> None:
    assert server.messages == []
    for clear in server.recorder.plaintext:
        assert b"MAIL" not in clear
        assert b"RCPT" not in clear
        assert b"AUTH" not in clear
    assert b"MAIL FROM" not in server.recorder.wire


@pytest.mark.usefixtures("trust_another_ca")
@pytest.mark.parametrize("mode", TLS_MODES)
async def test_tls_with_an_unknown_ca(ca: trustme.CA, mode: str) -> None:
    mail = pinned()
    with tls_server(ca, mode) as server:
        backend = backend_for(server.port, **tls_options(mode))
        with pytest.raises(TLSError) as info:
            await backend.send_messages([mail])

    error = info.value
    # Ours (a MailError with the reason), and still an ssl.SSLError for code
    # written for Django; the ssl module's own error is the cause.
    assert isinstance(error, MailError)
    assert isinstance(error, ssl.SSLError)
    assert type(error) is TLSError
    assert "unable to get local issuer certificate" in str(error)
    assert any(
        isinstance(cause, ssl.SSLCertVerificationError) for cause in chain(error)
    )
    assert_nothing_sent_in_clear(server)
    assert mail.result is not None
    assert mail.result.recipients["to@example.com"].outcome is Outcome.PERMANENT


@pytest.mark.usefixtures("trust_test_ca")
@pytest.mark.parametrize("mode", TLS_MODES)
async def test_tls_with_a_certificate_for_another_host(
    ca: trustme.CA, mode: str
) -> None:
    with tls_server(ca, mode, "mail.other.example") as server:
        backend = backend_for(server.port, **tls_options(mode))
        with pytest.raises(TLSError, match=r"mismatch|not valid for '127\.0\.0\.1'"):
            await backend.send_messages([pinned()])

    assert_nothing_sent_in_clear(server)


@pytest.mark.usefixtures("trust_test_ca")
async def test_own_ssl_context_replaces_the_default(ca: trustme.CA) -> None:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with tls_server(ca, "implicit") as server:
        backend = backend_for(server.port, use_ssl=True, ssl_context=client)
        assert await backend.send_messages([pinned()]) == 1
    assert server.messages[0].tls


async def test_starttls_required_but_not_offered(server: SMTPServer) -> None:
    backend = backend_for(server.port, use_tls=True, username="u", password="p")

    for _ in range(2):
        with pytest.raises(TLSError, match="does not offer"):
            await backend.send_messages([pinned()])

    # No MAIL (nor AUTH) in clear text, and the failed connection was not
    # reused: the second send made a new session.
    assert server.sessions == 2
    assert [bytes(raw) for raw in server.recorder.raw] == [
        f"EHLO {EHLO_NAME}\r\n".encode()
    ] * 2
    assert_nothing_sent_in_clear(server)


@pytest.mark.usefixtures("trust_another_ca")
async def test_failed_handshake_is_not_reused(ca: trustme.CA) -> None:
    with tls_server(ca, "starttls") as server:
        backend = backend_for(server.port, use_tls=True)
        for _ in range(2):
            with pytest.raises(TLSError):
                await backend.send_messages([pinned()])
        with pytest.raises(TLSError):
            async with backend:
                pass

    assert server.sessions == 3
    assert backend.pool is None
    assert_nothing_sent_in_clear(server)


# -- AUTH ----------------------------------------------------------------------------

CREDENTIALS = ("mailuser", "s3cret")


@pytest.mark.usefixtures("trust_test_ca")
@pytest.mark.parametrize("mode", TLS_MODES)
async def test_auth_over_tls(ca: trustme.CA, mode: str) -> None:
    # aiosmtpd offers AUTH over implicit TLS only when it does not insist on TLS.
    with tls_server(
        ca, mode, credentials=CREDENTIALS, auth_require_tls=mode == "starttls"
    ) as server:
        backend = backend_for(
            server.port,
            username=CREDENTIALS[0],
            password=CREDENTIALS[1],
            **tls_options(mode),
        )
        assert await backend.send_messages([pinned()]) == 1

    (received,) = server.messages
    assert received.authenticated == "mailuser"
    assert b"AUTH" in server.recorder.wire
    assert b"AUTH" not in server.recorder.plaintext[0]


async def test_auth_in_clear_to_loopback_is_allowed() -> None:
    with SMTPServer(credentials=CREDENTIALS) as server:
        backend = backend_for(server.port, username="mailuser", password="s3cret")
        assert await backend.send_messages([pinned()]) == 1

    assert server.messages[0].authenticated == "mailuser"
    assert b"AUTH PLAIN " in server.recorder.plaintext[0]


async def test_wrong_password() -> None:
    with SMTPServer(credentials=CREDENTIALS) as server:
        backend = backend_for(server.port, username="mailuser", password="wrong")
        backend.retries = 2  # an authentication failure is not retried
        mail = pinned()
        with pytest.raises(SMTPAuthenticationError) as info:
            await backend.send_messages([mail])

    assert (info.value.code, info.value.enhanced_status) == (535, "5.7.8")
    assert server.sessions == 1
    assert server.messages == []
    assert b"MAIL" not in server.recorder.wire
    assert mail.result is not None
    refused = mail.result.recipients["to@example.com"]
    assert (refused.outcome, refused.code) == (Outcome.PERMANENT, 535)


async def test_credentials_but_no_auth_offered() -> None:
    # aiosmtpd offers no AUTH before TLS when it requires TLS for AUTH.
    with SMTPServer(credentials=CREDENTIALS, auth_require_tls=True) as server:
        backend = backend_for(server.port, username="mailuser", password="s3cret")
        with pytest.raises(SMTPAuthenticationError, match="offers no AUTH"):
            await backend.send_messages([pinned()])

    assert server.messages == []
    assert b"MAIL" not in server.recorder.wire


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped, from a dual-stack socket
        ("10.0.0.1", False),
        ("192.0.2.25", False),
        ("2001:db8::25", False),
        ("::ffff:192.0.2.25", False),
        ("fe80::1%eth0", False),
        ("localhost", False),  # a name proves nothing: only peer addresses count
        ("", False),
        ("127.0.0.1.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert smtp._is_loopback(host) is loopback


@pytest.fixture
def remote_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test server is on 127.0.0.1; make the backend see its address as
    not loopback, as it would for a server on another host."""
    monkeypatch.setattr(smtp, "_is_loopback", lambda host: False)


@pytest.mark.usefixtures("remote_peer")
async def test_credentials_refused_in_clear_text_to_a_remote_host() -> None:
    with SMTPServer(credentials=CREDENTIALS) as server:
        backend = backend_for(
            server.port, username="mailuser", password="s3cret", retries=2
        )
        mail = pinned()
        with pytest.raises(InsecureAuthError, match="unencrypted") as info:
            await backend.send_messages([mail])

    assert "dangerously_allow_plaintext_auth" in str(info.value)
    assert server.sessions == 1  # not retried
    assert b"AUTH" not in server.recorder.wire
    assert b"s3cret" not in server.recorder.wire
    assert_nothing_sent_in_clear(server)
    assert mail.result is not None
    assert mail.result.status is MessageStatus.FAILED


@pytest.mark.usefixtures("remote_peer")
async def test_dangerously_allow_plaintext_auth() -> None:
    with SMTPServer(credentials=CREDENTIALS) as server:
        backend = backend_for(
            server.port,
            username="mailuser",
            password="s3cret",
            dangerously_allow_plaintext_auth=True,
        )
        assert await backend.send_messages([pinned()]) == 1

    assert server.messages[0].authenticated == "mailuser"
    assert b"AUTH PLAIN " in server.recorder.plaintext[0]


@pytest.mark.usefixtures("remote_peer", "trust_test_ca")
async def test_credentials_to_a_remote_host_over_tls(ca: trustme.CA) -> None:
    with tls_server(
        ca, "starttls", credentials=CREDENTIALS, auth_require_tls=True
    ) as server:
        backend = backend_for(
            server.port, username="mailuser", password="s3cret", use_tls=True
        )
        assert await backend.send_messages([pinned()]) == 1

    assert server.messages[0].authenticated == "mailuser"


# -- server unreachable --------------------------------------------------------------


async def test_server_down() -> None:
    port = unused_port()
    mail = pinned()

    with pytest.raises(SMTPConnectError, match=str(port)) as info:
        await backend_for(port).send_messages([mail])

    assert isinstance(info.value, ConnectionError)
    assert info.value.sent == 0
    assert mail.result is not None
    assert mail.result.status is MessageStatus.FAILED
    assert mail.result.recipients["to@example.com"].outcome is Outcome.TEMPORARY


@pytest.mark.parametrize("where", ["call", "backend"])
async def test_server_down_fail_silently(where: str) -> None:
    port = unused_port()
    backend = backend_for(port, fail_silently=where == "backend")
    kwargs: dict[str, Any] = {"fail_silently": True} if where == "call" else {}
    mail = pinned()

    assert await backend.send_messages([mail], **kwargs) == 0

    assert mail.result is not None
    assert isinstance(mail.result.error, SMTPConnectError)
    assert str(port) in str(mail.result.error)
    assert mail.result.recipients["to@example.com"].outcome is Outcome.TEMPORARY
    assert backend.pool is None


async def test_open_fail_silently() -> None:
    backend = backend_for(unused_port(), fail_silently=True)

    assert await backend.open() is None

    assert isinstance(backend.open_error, SMTPConnectError)
    assert backend.pool is None


async def test_send_mail_to_a_server_that_is_down() -> None:
    asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT=unused_port())

    with asyncmail.collect_results() as results:
        count = await asyncmail.asend_mail(
            "s", "b", FROM, ["to@example.com"], fail_silently=True
        )

    assert count == 0
    (result,) = results
    assert isinstance(result.error, SMTPConnectError)
    with pytest.raises(SMTPConnectError):
        await asyncmail.asend_mail("s", "b", FROM, ["to@example.com"])


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"use_tls": True, "use_ssl": True}, "mutually exclusive"),
        ({"local_hostname": "client.example\r\nMAIL FROM:<x@y>"}, "local_hostname"),
        ({"local_hostname": "client\nexample"}, "local_hostname"),
        ({"local_hostname": "two words"}, "local_hostname"),
        ({"local_hostname": ""}, "local_hostname"),
        # Fails at once (it once backtracked exponentially: hours at 40 chars).
        ({"local_hostname": "a" * 40 + "!"}, "local_hostname"),
        ({"local_hostname": "x" * 64 + ".example"}, "local_hostname"),
        ({"local_hostname": ("abc." * 64) + "example"}, "local_hostname"),
        ({"local_hostname": 42}, "local_hostname"),
        ({"host": "mail.example\r\nQUIT"}, "host"),
        ({"username": "user\r\nAUTH"}, "username"),
        ({"password": "pass\nword"}, "password"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"timeout": 0}, "timeout"),
        ({"retries": -1}, "retries"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_messages_per_connection": 0}, "max_messages"),
        ({"rate_limit": -5}, "rate"),
        ({"deadline": 0}, "deadline"),
        (
            {"ssl_context": ssl.create_default_context(), "ssl_certfile": "c.pem"},
            "either ssl_context",
        ),
    ],
)
def test_bad_options(options: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        EmailBackend(**options)


@pytest.mark.parametrize(
    "name",
    ["client.example", "localhost", "mx-1.example.", "[192.0.2.1]", "[IPv6:::1]"],
)
def test_good_local_hostnames(name: str) -> None:
    assert EmailBackend(local_hostname=name).local_hostname == name


def test_tls_and_ssl_settings_together() -> None:
    with pytest.raises(ConfigurationError, match="mutually exclusive"):
        asyncmail.configure(EMAIL_USE_TLS=True, EMAIL_USE_SSL=True)
    # Checked on the effective values, whichever call set the first one.
    asyncmail.configure(EMAIL_USE_TLS=True)
    with pytest.raises(ConfigurationError, match="mutually exclusive"):
        asyncmail.configure(EMAIL_USE_SSL=True)
    assert asyncmail.settings.EMAIL_USE_SSL is False
    # Per-call options are checked by the backend.
    with pytest.raises(ConfigurationError, match="mutually exclusive"):
        get_connection(use_ssl=True)
    with pytest.raises(ConfigurationError, match="mutually exclusive"):
        get_connection(use_tls=True, use_ssl=True)


def test_settings_are_the_defaults() -> None:
    asyncmail.configure(
        EMAIL_HOST="smtp.example.com",
        EMAIL_PORT=2525,
        EMAIL_HOST_USER="user",
        EMAIL_HOST_PASSWORD="pass",
        EMAIL_USE_SSL=True,
        EMAIL_TIMEOUT=7,
    )

    backend = EmailBackend()
    assert (backend.host, backend.port) == ("smtp.example.com", 2525)
    assert (backend.username, backend.password) == ("user", "pass")
    assert (backend.use_ssl, backend.use_tls, backend.timeout) == (True, False, 7)
    overridden = EmailBackend(port=25, use_ssl=False, timeout=None)
    assert (overridden.port, overridden.use_ssl, overridden.timeout) == (
        25,
        False,
        None,
    )


async def test_local_hostname_is_the_ehlo_name(server: SMTPServer) -> None:
    backend = backend_for(server.port, local_hostname="[127.0.0.1]")

    assert await backend.send_messages([pinned()]) == 1

    assert server.recorder.raw[0].startswith(b"EHLO [127.0.0.1]\r\n")


# -- timeouts ------------------------------------------------------------------------


async def test_greeting_never_comes() -> None:
    with SilentServer() as silent:
        backend = backend_for(silent.port, timeout=0.5)
        mail = pinned()
        with pytest.raises(SMTPTimeoutError) as info:
            await backend.send_messages([mail])

    assert isinstance(info.value, TimeoutError)
    assert mail.result is not None
    assert mail.result.recipients["to@example.com"].outcome is Outcome.TEMPORARY


async def test_reply_slower_than_the_timeout(server: SMTPServer) -> None:
    server.recorder.stall["RCPT"] = 30
    mail = pinned()

    with pytest.raises(SMTPTimeoutError) as info:
        await backend_for(server.port, timeout=0.5).send_messages([mail])

    assert isinstance(info.value, TimeoutError)
    assert mail.result is not None
    assert mail.result.recipients["to@example.com"].outcome is Outcome.TEMPORARY
    assert server.messages == []


async def test_timeout_after_the_end_of_data_is_never_resent(
    server: SMTPServer,
) -> None:
    server.recorder.stall["DATA"] = 30
    mail = pinned()
    backend = backend_for(server.port, timeout=0.5, retries=2, retry_backoff=0.01)

    with pytest.raises(DeliveryUnknownError, match="not resent") as info:
        await backend.send_messages([mail])

    assert info.value.sent == 0
    assert mail.result is not None
    assert mail.result.status is MessageStatus.UNKNOWN
    assert mail.result.unknown == ["to@example.com"]
    assert server.sessions == 1
    assert server.recorder.wire.count(b"MAIL FROM") == 1
