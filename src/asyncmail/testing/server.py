"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, in a thread of its own.

Unlike :class:`asyncmail.server.DebugServer` (which runs on the caller's
event loop and prints), this one runs its own loop in a daemon thread, so
blocking tests, async tests on any loop, and the library's own loop can all
talk to it. It records every envelope with the bytes received (after
dot-unstuffing) and the message parsed back, whether the session was
encrypted, and who logged in.

Options: ``tls=True`` offers STARTTLS (and requires it) with a certificate
for 127.0.0.1 and localhost from a throw-away trustme CA
(:attr:`SMTPTestServer.client_context` trusts it); ``implicit_tls=True``
speaks TLS from the first byte instead (port 465 style);
``credentials=("user", "password")`` offers AUTH and requires it before MAIL;
``refuse={"bad@example.com": "550 5.1.1 No such user"}`` refuses recipients.
:meth:`SMTPTestServer.settings` gives the asyncmail settings that point
sends at it (the ``smtp_server`` fixture applies them for the test).
"""

from __future__ import annotations

import asyncio
import email.message
import email.policy
import ssl
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiosmtpd.smtp import SMTP as SMTPProtocol  # noqa: N811 - a class
    from aiosmtpd.smtp import AuthResult, Envelope, Session

    from ..backends.smtp import EmailBackend as SMTPBackend

__all__ = ["ReceivedMail", "SMTPTestServer"]

_START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # as received, CRLF line endings, dot-unstuffed
    mail_options: tuple[str, ...]
    tls: bool  # the session was encrypted (STARTTLS or implicit) for the data
    login: str | None  # the user name it authenticated as, if any
    message: email.message.EmailMessage = field(repr=False, compare=False)

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))


class _Handler:
    def __init__(self, server: SMTPTestServer) -> None:
        self.server = server

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        smtp: SMTPProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # AUTH required when credentials are set (not aiosmtpd's auth_required,
        # which warns when TLS is not required too).
        if self.server.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        smtp: SMTPProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.server.refuse.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, smtp: SMTPProtocol, session: Session, envelope: Envelope
    ) -> str:
        from aiosmtpd.smtp import LoginPassword

        data = envelope.original_content or b""
        parsed = BytesParser(
            email.message.EmailMessage, policy=email.policy.default
        ).parsebytes(data.replace(b"\r\n", b"\n"))
        assert isinstance(parsed, email.message.EmailMessage)
        auth = session.auth_data
        received = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
            mail_options=tuple(envelope.mail_options),
            tls=session.ssl is not None
            or (
                smtp.transport is not None
                and smtp.transport.get_extra_info("ssl_object") is not None
            ),
            login=auth.login.decode("utf-8", "replace")
            if session.authenticated and isinstance(auth, LoginPassword)
            else None,
            message=parsed,
        )
        with self.server._lock:
            self.server.messages.append(received)
        return "250 2.0.0 OK: queued by the asyncmail test server"


class SMTPTestServer:
    """aiosmtpd on 127.0.0.1 (a free port), started by :meth:`start` or
    ``with``; see the module docstring for the options."""

    def __init__(
        self,
        *,
        tls: bool = False,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
        refuse: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = 0
        if tls and implicit_tls:
            raise ValueError("tls (STARTTLS) and implicit_tls are exclusive")
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.credentials = credentials
        self.refuse: dict[str, str] = dict(refuse or {})
        self.messages: list[ReceivedMail] = []
        #: How many SMTP sessions (connections) clients opened.
        self.sessions = 0
        #: With TLS: an SSL context that trusts the server's CA.
        self.client_context: ssl.SSLContext | None = None
        self._server_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._live: set[SMTPProtocol] = set()

    # -- what it received ------------------------------------------------------------

    @property
    def envelopes(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(mail_from, rcpt_tos)`` of every message, in order."""
        with self._lock:
            return [(m.mail_from, m.rcpt_tos) for m in self.messages]

    def clear(self) -> None:
        """Forget what was received."""
        with self._lock:
            self.messages.clear()

    # -- pointing asyncmail at it ----------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The asyncmail settings that send through this server (for
        ``asyncmail.settings.override(**server.settings())``).

        Every named mailer configured now (``MAILERS``) is pointed at this
        server too, so that ``using="bulk"`` cannot reach a real one; with
        TLS, the mailers carry an ``ssl_context`` that trusts the test CA
        (there is no setting for a CA file).
        """
        from ..settings import settings as current

        # A mailer does not inherit the EMAIL_* settings (Django 6.1's MAILERS
        # rules): each one is given the whole connection.
        options = self._connection_options()
        mailers = {
            alias: {
                "BACKEND": "asyncmail.backends.smtp.EmailBackend",
                "OPTIONS": options,
            }
            for alias in current.MAILERS
        }
        if self.client_context is not None:
            mailers["default"] = {
                "BACKEND": "asyncmail.backends.smtp.EmailBackend",
                "OPTIONS": options,
            }
        values: dict[str, Any] = {
            "EMAIL_BACKEND": "asyncmail.backends.smtp.EmailBackend",
            "EMAIL_HOST": self.host,
            "EMAIL_PORT": self.port,
            "EMAIL_USE_TLS": self.tls,
            "EMAIL_USE_SSL": self.implicit_tls,
            "EMAIL_HOST_USER": self.credentials[0] if self.credentials else "",
            "EMAIL_HOST_PASSWORD": self.credentials[1] if self.credentials else "",
            "MAILERS": mailers,
        }
        return values

    def connection(self, **options: Any) -> SMTPBackend:
        """An SMTP backend for this server (*options* win over its settings)."""
        from ..backends.smtp import EmailBackend

        return EmailBackend(**{**self._connection_options(), **options})

    def _connection_options(self) -> dict[str, Any]:
        """The SMTP backend options that reach this server."""
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "use_tls": self.tls,
            "use_ssl": self.implicit_tls,
            "username": self.credentials[0] if self.credentials else "",
            "password": self.credentials[1] if self.credentials else "",
        }
        if self.client_context is not None:
            options["ssl_context"] = self.client_context
        return options

    # -- lifecycle -------------------------------------------------------------------

    def _make_tls(self) -> None:
        try:
            import trustme
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "SMTPTestServer(tls=True) needs trustme: pip install trustme"
            ) from None
        authority = trustme.CA()
        certificate = authority.issue_cert("127.0.0.1", "localhost", "::1")
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(server_context)
        client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        authority.configure_trust(client_context)
        self._server_context = server_context
        self.client_context = client_context

    def _protocol(self) -> SMTPProtocol:
        """One aiosmtpd protocol per connection (the server's factory)."""
        protocol_class = self._protocol_class()
        protocol: SMTPProtocol = protocol_class(self._handler(), **self._smtp_options())
        return protocol

    def _protocol_class(self) -> type[SMTPProtocol]:
        """aiosmtpd's SMTP protocol, counting sessions and tracking the live
        ones (so that :meth:`stop` can close even a stalled one)."""
        from aiosmtpd.smtp import SMTP

        owner = self

        class Protocol(SMTP):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                if not getattr(self, "_counted", False):  # STARTTLS calls it again
                    self._counted = True
                    with owner._lock:
                        owner.sessions += 1
                    owner._live.add(self)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                owner._live.discard(self)
                super().connection_lost(exc)

        return Protocol

    def _handler(self) -> object:
        """The aiosmtpd handler: what the server answers and records."""
        return _Handler(self)

    def _smtp_options(self) -> dict[str, Any]:
        """aiosmtpd's SMTP options for this server's TLS and AUTH settings."""
        options: dict[str, Any] = {
            "hostname": "asyncmail-test-server",
            "ident": "asyncmail test server",
            "enable_SMTPUTF8": True,
            "tls_context": None if self.implicit_tls else self._server_context,
            "require_starttls": self.tls,
            "auth_require_tls": self.tls,  # implicit TLS: encrypted already
        }
        authenticator = self._authenticator()
        if authenticator is not None:
            options["authenticator"] = authenticator
        return options

    def _authenticator(self) -> Callable[..., AuthResult] | None:
        """Checks AUTH PLAIN/LOGIN against :attr:`credentials` (None: no AUTH)."""
        if self.credentials is None:
            return None
        from aiosmtpd.smtp import AuthResult, LoginPassword

        user, password = self.credentials

        def check(
            server: SMTPProtocol,
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

    def start(self) -> Self:
        """Start listening (returns once the port is bound)."""
        try:
            import aiosmtpd  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(
                'The test SMTP server needs aiosmtpd: pip install "asyncmail[server]"'
            ) from None
        if self._thread is not None:
            return self
        if (self.tls or self.implicit_tls) and self._server_context is None:
            self._make_tls()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(
                        self._protocol,
                        host=self.host,
                        port=0,
                        ssl=self._server_context if self.implicit_tls else None,
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(
            target=run, name="asyncmail-test-smtp-server", daemon=True
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT):
            raise RuntimeError("The test SMTP server did not start")
        if failure:
            self._thread = None
            raise RuntimeError(f"The test SMTP server could not start: {failure[0]}")
        return self

    def stop(self) -> None:
        """Close every session and stop the server's thread."""
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None or server is None:
            return
        self._loop = self._thread = self._server = None

        async def shut_down() -> None:
            server.close()
            for protocol in list(self._live):
                transport = protocol.transport
                if isinstance(transport, asyncio.WriteTransport):
                    transport.abort()
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut_down(), loop).result(_START_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "listening" if self._thread is not None else "stopped"
        extras = "".join(
            flag
            for flag, on in (
                (" STARTTLS", self.tls),
                (" TLS", self.implicit_tls),
                (" AUTH", self.credentials),
            )
            if on
        )
        return (
            f"<SMTPTestServer {self.host}:{self.port}{extras} {state}, "
            f"{len(self.messages)} received>"
        )
