"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, port 0.

It is the library's :class:`asyncmail.testing.SMTPTestServer` (its own event
loop in a thread, so async tests on any loop and blocking tests can both
talk to it), with what only the tests need on top. It records: every
envelope with the raw message bytes (as the server saw them after
dot-unstuffing), every session, and every byte a client sent (all of it, and
separately what arrived before TLS was up, i.e. in clear text on the wire).

Tests can make it refuse recipients (``recorder.refuse_rcpt``) and stall
before answering RCPT or DATA (``recorder.stall``), to provoke timeouts.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, LoginPassword, Session

from asyncmail.testing import SMTPTestServer


@dataclass
class Received:
    """One message as the server got it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    session_id: int
    tls: bool
    authenticated: str | None = None


@dataclass
class Recorder:
    """What the server saw, shared with the test."""

    messages: list[Received] = field(default_factory=list)
    #: Raw bytes the server read, per session (decrypted after STARTTLS).
    raw: list[bytearray] = field(default_factory=list)
    #: The part of ``raw`` that travelled unencrypted, per session.
    plaintext: list[bytearray] = field(default_factory=list)
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    #: Seconds to wait before answering "RCPT" or "DATA" (the end of data).
    stall: dict[str, float] = field(default_factory=dict)

    @property
    def wire(self) -> bytes:
        """Everything every client sent, sessions concatenated."""
        return b"".join(self.raw)


class _Handler:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        await asyncio.sleep(self.recorder.stall.get("RCPT", 0))
        refusal = self.recorder.refuse_rcpt.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        await asyncio.sleep(self.recorder.stall.get("DATA", 0))
        assert envelope.mail_from is not None
        data = envelope.original_content or b""
        self.recorder.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                data,
                list(envelope.mail_options),
                id(session),
                # STARTTLS sets session.ssl; implicit TLS shows on the transport.
                session.ssl is not None
                or (
                    server.transport is not None
                    and server.transport.get_extra_info("ssl_object") is not None
                ),
                session.auth_data.login.decode()
                if session.authenticated
                and isinstance(session.auth_data, LoginPassword)
                else None,
            )
        )
        return "250 2.0.0 Ok: queued"


class SMTPServer(SMTPTestServer):
    """The library's test server (its thread, loop, session count, AUTH
    check and shutdown), recording what the tests look at beyond it: every
    byte each session sent, clear and encrypted, and the stalls and
    refusals of :class:`Recorder`. TLS contexts come from the test (its own
    CA and names); credentials only offer AUTH (they do not require it,
    unlike ``SMTPTestServer``); other keyword options go to aiosmtpd."""

    def __init__(
        self,
        *,
        starttls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        credentials: tuple[str, str] | None = None,
        auth_require_tls: bool = False,
        hostname: str = "127.0.0.1",
        **smtp_options: Any,
    ) -> None:
        super().__init__(
            implicit_tls=implicit_tls_context is not None,
            credentials=credentials,
            host=hostname,
        )
        self._server_context = implicit_tls_context or starttls_context
        self._require_starttls = require_starttls
        self._auth_require_tls = auth_require_tls
        self._options = smtp_options

    @property
    def hostname(self) -> str:
        return self.host

    # The messages are the recorder's (tests' Received records, which a test
    # may replace with a list of its own): SMTPTestServer's attribute is
    # this property here, and its constructor sets up the recorder.
    @property  # type: ignore[override]
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @messages.setter
    def messages(self, value: list[Received]) -> None:
        if hasattr(self, "recorder"):
            self.recorder.messages = value
        else:
            self.recorder = Recorder(messages=value)

    def _protocol(self) -> SMTP:
        return self._factory()

    def _factory(self) -> SMTP:
        """One protocol per connection: the hook a test's server subclass
        overrides to change it (test_oauth2.py's mechanisms)."""
        return super()._protocol()

    def _handler(self) -> object:
        return _Handler(self.recorder)

    def _smtp_options(self) -> dict[str, Any]:
        options = super()._smtp_options()
        options.update(
            hostname="test.example",
            tls_context=None if self.implicit_tls else self._server_context,
            require_starttls=self._require_starttls,
            auth_require_tls=self._auth_require_tls,
        )
        options.update(self._options)
        return options

    def _protocol_class(self) -> type[SMTP]:
        recorder = self.recorder
        base = super()._protocol_class()

        class Recording(base):  # type: ignore[valid-type,misc]
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if not hasattr(self, "_raw"):  # STARTTLS calls it again
                    self._raw = bytearray()
                    recorder.raw.append(self._raw)
                    self._plaintext = bytearray()
                    recorder.plaintext.append(self._plaintext)
                super().connection_made(transport)

            def data_received(self, data: bytes) -> None:
                self._raw += data
                transport = self.transport
                if (
                    transport is not None
                    and transport.get_extra_info("ssl_object") is None
                ):
                    self._plaintext += data
                super().data_received(data)

        return Recording


class SilentServer:
    """Accepts TCP connections (the kernel's backlog does) and never says a
    word: a client waiting for the greeting must time out."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self.port: int = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
