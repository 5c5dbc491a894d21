"""TLS handshake failures (issue #8, class 6): a server that resets the
connection during the handshake, or that speaks only an old TLS version,
with STARTTLS and with implicit TLS. The error is asyncmail's TLSError with
the reason, never an empty SMTPConnectError; it is not transient, so the
backend does not retry it (the server sees one connection), and nothing of
the message is sent. A client certificate file that does not exist is a
ConfigurationError before any connection. (The STARTTLS step's faults, a
dropped or stalled handshake, are rows of the fault table in
test_faults.py.)"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
import trustme

from asyncmail import (
    ConfigurationError,
    EmailMessage,
    Outcome,
    SMTPConnectError,
    TLSError,
)
from asyncmail.backends.base import BackendState
from asyncmail.backends.smtp import EmailBackend
from asyncmail.exceptions import is_transient
from helpers import (
    backend_for,
    make_backend,
    message,
    outcomes,
    result_of,
    unused_port,
)
from hostile import FROM, TO
from scriptserver import DEFAULT_EXTENSIONS, ScriptServer

pytestmark = pytest.mark.anyio

PERMANENT = Outcome.PERMANENT


class HandshakeBreaker:
    """A TCP server on 127.0.0.1 that breaks every TLS handshake.

    *mode* "starttls" first plays plain SMTP up to the 220 reply to STARTTLS;
    "implicit" starts the handshake at once. *how* "reset" reads the
    ClientHello and resets the connection (RST); "old-tls" runs a real TLS
    server that allows only TLS 1.0 and 1.1.
    """

    def __init__(self, mode: str, how: str, ca: trustme.CA) -> None:
        self.mode = mode
        self.how = how
        self.connections = 0
        self.commands: list[bytes] = []
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._context)
        with warnings.catch_warnings():
            # Old TLS on purpose: that is the server under test.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._context.minimum_version = ssl.TLSVersion.TLSv1
            self._context.maximum_version = ssl.TLSVersion.TLSv1_1
        self._context.set_ciphers("ALL:@SECLEVEL=0")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                self._handle(connection)
            except (OSError, ssl.SSLError):
                pass
            finally:
                connection.close()

    def _handle(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        if self.mode == "starttls":
            connection.sendall(b"220 breaker ESMTP\r\n")
            reader = connection.makefile("rb")
            while True:
                line = reader.readline()
                if not line:
                    return
                self.commands.append(line)
                verb = line[:8].upper()
                if verb.startswith((b"EHLO", b"HELO")):
                    connection.sendall(b"250-breaker\r\n250 STARTTLS\r\n")
                elif verb.startswith(b"STARTTLS"):
                    connection.sendall(b"220 2.0.0 go ahead\r\n")
                    break
                else:
                    connection.sendall(b"503 5.5.1 TLS first\r\n")
        if self.how == "reset":
            connection.recv(4096)  # the ClientHello
            # SO_LINGER with a zero timeout: close() sends RST, not FIN.
            connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            return
        with self._context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(1)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() up
        self._listener.close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trust_ca(ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))


def options(mode: str) -> dict[str, Any]:
    return {"use_tls": True} if mode == "starttls" else {"use_ssl": True}


@pytest.mark.usefixtures("trust_ca")
@pytest.mark.parametrize("how", ["reset", "old-tls"])
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_a_broken_handshake_is_a_tls_error_never_retried(
    ca: trustme.CA, mode: str, how: str
) -> None:
    server = HandshakeBreaker(mode, how, ca)
    try:
        backend = backend_for(server.port, retries=3, **options(mode))
        message = EmailMessage("s", "secret body", FROM, [TO])
        with pytest.raises(TLSError) as info:
            await backend.send_messages([message])
        await backend.close()
    finally:
        server.close()
    error = info.value
    assert "TLS failed" in str(error)
    reason = str(error).split("TLS failed:", 1)[1].strip()
    assert len(reason) > 10  # a reason, not an empty message
    assert not is_transient(error)
    assert server.connections == 1  # not retried
    assert message.result is not None
    assert message.result.error is error or isinstance(message.result.error, TLSError)
    assert not any(c.upper().startswith(b"MAIL") for c in server.commands)


async def test_a_refused_connection_is_still_a_transient_connect_error() -> None:
    """The implicit-TLS mapping only takes failures inside the handshake."""
    backend = backend_for(unused_port(), use_ssl=True)
    with pytest.raises(SMTPConnectError) as info:
        await backend.open()
    assert not isinstance(info.value, TLSError)
    assert is_transient(info.value)


# -- a missing ssl_certfile --------------------------------------------------

TLS_MODES = pytest.mark.parametrize("mode", ["use_tls", "use_ssl"])


def tls_backend(
    server: ScriptServer, mode: str, tmp_path: Path, **options: Any
) -> EmailBackend:
    return make_backend(
        server, ssl_certfile=str(tmp_path / "missing.pem"), **{mode: True}, **options
    )


@TLS_MODES
async def test_missing_certfile_is_a_configuration_error(
    mode: str, tmp_path: Path
) -> None:
    with ScriptServer((*DEFAULT_EXTENSIONS, "STARTTLS")) as server:
        backend = tls_backend(server, mode, tmp_path)
        msg = message(1)

        with pytest.raises(ConfigurationError, match="ssl_certfile") as info:
            await backend.send_messages([msg])
        assert not isinstance(info.value, OSError)
        assert backend.pool is None
        assert backend.state is BackendState.CLOSED
        assert backend.open_error is None  # raised: the caller has it
        # Not stuck half-open: opening again tries again, and fails again.
        with pytest.raises(ConfigurationError):
            await backend.open()
        assert backend.pool is None

    assert server.sessions == []  # the context fails before connecting
    assert info.value.sent == 0
    assert result_of(msg).error is info.value
    assert outcomes(msg) == {"rcpt1@example.com": PERMANENT}


@TLS_MODES
async def test_missing_certfile_fails_silently(mode: str, tmp_path: Path) -> None:
    with ScriptServer((*DEFAULT_EXTENSIONS, "STARTTLS")) as server:
        backend = tls_backend(server, mode, tmp_path, fail_silently=True)
        msg = message(1)

        assert await backend.send_messages([msg]) == 0
        error = result_of(msg).error  # send_messages connects per message
        assert isinstance(error, ConfigurationError)
        assert backend.pool is None
        assert await backend.open() is None  # tried again, failed again
        assert isinstance(backend.open_error, ConfigurationError)
        assert backend.pool is None

    assert server.sessions == []
    assert result_of(msg).error is error
    assert outcomes(msg) == {"rcpt1@example.com": PERMANENT}
