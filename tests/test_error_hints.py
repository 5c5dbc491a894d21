"""The errors users hit most say what to check, against real servers on
127.0.0.1: nothing listening, implicit TLS against a plain server, a server
that wants AUTH when no credentials were given."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme

import asyncmail
from asyncmail import (
    MessageRefusedError,
    SMTPConnectError,
    SMTPTimeoutError,
    TLSError,
    get_connection,
    send_mail,
)
from asyncmail.cli import main
from helpers import unused_port
from scriptserver import ScriptServer, reply
from smtpserver import SilentServer, SMTPServer


def _send(**options: object) -> asyncmail.MailError:
    backend = get_connection(
        "asyncmail.backends.smtp.EmailBackend",
        retries=0,
        timeout=5,
        **options,  # type: ignore[arg-type]
    )
    with pytest.raises(asyncmail.MailError) as caught:
        send_mail("Hi", "Body", "app@example.com", ["ada@example.com"],
                  connection=backend)  # fmt: skip
    return caught.value


def test_connection_refused_asks_whether_a_server_listens_there() -> None:
    port = unused_port()
    error = _send(host="127.0.0.1", port=port)
    assert isinstance(error, SMTPConnectError)
    assert f"Is an SMTP server listening on 127.0.0.1:{port}?" in str(error)
    assert "Check EMAIL_HOST and EMAIL_PORT" in str(error)
    assert str(error).startswith(f"SMTP 127.0.0.1:{port}: ")  # the cause, first


def test_connection_refused_from_the_settings_and_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = unused_port()
    monkeypatch.setenv("EMAIL_HOST", "127.0.0.1")
    monkeypatch.setenv("EMAIL_PORT", str(port))
    asyncmail.settings.reload_environment()
    status = main(["send", "--to", "ada@example.com", "--text", "x", "--timeout", "5"])
    assert status == 1
    err = capsys.readouterr().err
    assert f"Is an SMTP server listening on 127.0.0.1:{port}?" in err
    assert "EMAIL_HOST and EMAIL_PORT" in err


def test_the_hint_keeps_the_errors_type_attributes_and_pickling() -> None:
    import pickle

    error = _send(host="127.0.0.1", port=unused_port())
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert isinstance(error, ConnectionError)


def test_implicit_tls_against_a_plain_server_suggests_starttls() -> None:
    with SMTPServer() as server:
        error = _send(host="127.0.0.1", port=server.port, use_ssl=True)
    assert isinstance(error, TLSError)
    text = str(error)
    assert f"The server on port {server.port} answered without TLS" in text
    assert "use_tls (EMAIL_USE_TLS)" in text
    assert "587" in text
    assert server.messages == []


def test_implicit_tls_against_a_starttls_server_suggests_starttls() -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SMTPServer(starttls_context=context) as server:
        error = _send(host="127.0.0.1", port=server.port, use_ssl=True)
    assert isinstance(error, TLSError)
    assert "for STARTTLS set use_tls" in str(error)


def test_a_certificate_failure_gets_no_wrong_kind_of_tls_hint() -> None:
    # The server speaks implicit TLS, with a certificate nobody trusts: the
    # error is about the certificate, not about use_ssl vs use_tls.
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SMTPServer(implicit_tls_context=context) as server:
        error = _send(host="127.0.0.1", port=server.port, use_ssl=True)
    assert isinstance(error, TLSError)
    assert "answered without TLS" not in str(error)
    assert "certificate" in str(error).lower()


@pytest.fixture
def port_465() -> Iterator[SilentServer]:
    """A silent server on 127.0.0.1:465, if that port is free here."""
    server = SilentServer.__new__(SilentServer)
    server._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server._socket.bind(("127.0.0.1", 465))
    except OSError:
        server._socket.close()
        pytest.skip("127.0.0.1:465 is not free (or needs privileges) here")
    server._socket.listen(8)
    server.port = 465
    with server:
        yield server


def test_plain_smtp_timing_out_on_port_465_suggests_implicit_tls(
    port_465: SilentServer,
) -> None:
    backend = get_connection(
        "asyncmail.backends.smtp.EmailBackend",
        host="127.0.0.1",
        port=465,
        retries=0,
        timeout=0.5,
    )
    with pytest.raises(SMTPTimeoutError) as caught:
        send_mail("Hi", "Body", "app@example.com", ["ada@example.com"],
                  connection=backend)  # fmt: skip
    assert "Port 465 usually expects implicit TLS: set use_ssl" in str(caught.value)


@pytest.mark.parametrize(
    "refusal",
    [
        "530 5.7.0 Authentication required",
        "530 Authentication required",
        "550 5.7.1 Client was not authenticated",
    ],
)
def test_a_server_that_wants_auth_says_which_settings_to_set(refusal: str) -> None:
    with ScriptServer() as server:
        server.on("MAIL", reply(refusal))
        error = _send(host="127.0.0.1", port=server.port)
    assert isinstance(error, MessageRefusedError)
    text = str(error)
    assert refusal in text  # the server's words, then the hint
    assert "The server requires authentication (AUTH)" in text
    assert "EMAIL_HOST_USER and EMAIL_HOST_PASSWORD" in text
    assert error.code == int(refusal[:3])
    result = error.results[0]
    assert result.recipients["ada@example.com"].text == refusal[4:]


def test_other_sender_refusals_get_no_auth_hint() -> None:
    with ScriptServer() as server:
        server.on("MAIL", reply("550 5.7.1 Sender rejected by policy"))
        error = _send(host="127.0.0.1", port=server.port)
    assert isinstance(error, MessageRefusedError)
    assert "authentication" not in str(error).lower()
