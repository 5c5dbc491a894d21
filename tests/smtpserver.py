"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, port 0.

It runs its own event loop in a thread, so async tests (on any loop) and
blocking tests can both talk to it. It records what it received: every
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
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


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
    sessions: int = 0
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


class _RecordingSMTP(SMTP):
    recorder: Recorder
    live: set[_RecordingSMTP]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not getattr(self, "_counted", False):  # STARTTLS calls it again
            self._counted = True
            self.recorder.sessions += 1
            self._raw = bytearray()
            self.recorder.raw.append(self._raw)
            self._plaintext = bytearray()
            self.recorder.plaintext.append(self._plaintext)
            self.live.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._raw += data
        transport = self.transport
        if transport is not None and transport.get_extra_info("ssl_object") is None:
            self._plaintext += data
        super().data_received(data)


class SMTPServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context)."""

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
        self.recorder = Recorder()
        self.hostname = hostname
        self.port = 0
        self._starttls_context = starttls_context
        self._implicit_tls_context = implicit_tls_context
        self._require_starttls = require_starttls
        self._credentials = credentials
        self._auth_require_tls = auth_require_tls
        self._smtp_options = smtp_options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._live: set[_RecordingSMTP] = set()
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @property
    def sessions(self) -> int:
        return self.recorder.sessions

    def _authenticator(self) -> Callable[..., AuthResult] | None:
        if self._credentials is None:
            return None
        user, password = self._credentials

        def check(
            server: SMTP,
            session: Session,
            envelope: Envelope,
            mechanism: str,
            data: Any,
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == user
                and data.password.decode() == password
            )
            return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

        return check

    def _factory(self) -> SMTP:
        recorder = self.recorder

        class Protocol(_RecordingSMTP):
            pass

        Protocol.recorder = recorder
        Protocol.live = self._live
        options: dict[str, Any] = {
            "hostname": "test.example",
            "ident": "asyncmail test server",
            "tls_context": self._starttls_context,
            "require_starttls": self._require_starttls,
            "auth_require_tls": self._auth_require_tls,
            "enable_SMTPUTF8": True,
        }
        authenticator = self._authenticator()
        if authenticator is not None:
            options["authenticator"] = authenticator
        options.update(self._smtp_options)
        return Protocol(_Handler(recorder), **options)

    def start(self) -> SMTPServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(
                loop.create_server(
                    self._factory,
                    host=self.hostname,
                    port=0,
                    ssl=self._implicit_tls_context,
                )
            )
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(
            target=run, name="test-smtp-server", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Close every session (even a stalled one) and stop the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def shut_down() -> None:
            assert self._server is not None
            self._server.close()
            for protocol in list(self._live):
                transport = protocol.transport
                if isinstance(transport, asyncio.WriteTransport):
                    transport.abort()
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unused_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


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
