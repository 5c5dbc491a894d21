"""A web inbox for development: the debug SMTP server keeps what it receives
and shows it in a browser (``asyncmail debug-server --web``).

Needs the ``web`` extra (``pip install "asyncmail[web]"``: Starlette and
uvicorn, plus aiosmtpd). Both servers listen on 127.0.0.1 by default and run
on one event loop; mail is kept in a bounded :class:`~.store.MemoryStore`,
or in a SQLite file (:class:`~.store.SQLiteStore`) that survives restarts.
The app and its JSON API are described in :mod:`asyncmail.webinbox.app`.

In code (tests, development tools)::

    async with WebInbox(smtp_port=0, web_port=0) as inbox:
        ...  # send to inbox.smtp_port; browse or GET inbox.url + "api/messages"
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio

from ..server import DebugServer, ReceivedMessage, _Handler
from .store import MemoryStore, SQLiteStore, Store, StoredMessage

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP as SMTPProtocol  # noqa: N811 - a class
    from aiosmtpd.smtp import Envelope, Session
    from starlette.applications import Starlette

__all__ = [
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoredMessage",
    "WebInbox",
    "run_from_cli",
]


class _StoringServer(DebugServer):
    """The debug SMTP server, keeping messages in a store instead of a list;
    a message is stored before the server says 250 for it."""

    def __init__(self, store: Store, host: str, port: int, quiet: bool) -> None:
        super().__init__(host, port, quiet=quiet)
        self.store = store
        self._received: list[ReceivedMessage] = []

    def record(self, message: ReceivedMessage) -> None:
        if not self.quiet:
            super().record(message)  # prints it
            self.messages.clear()  # the store keeps messages, bounded
        self._received.append(message)

    async def keep(self) -> None:
        while self._received:
            message = self._received.pop(0)
            await self.store.add(
                message.peer, message.mail_from, message.rcpt_tos, message.data
            )

    def _protocol(self) -> SMTPProtocol:
        from aiosmtpd.smtp import SMTP

        session = SMTP(
            _StoringHandler(self),
            hostname="asyncmail-web-inbox",
            ident="asyncmail web inbox",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
        )
        self._sessions.add(session)
        return session


class _StoringHandler(_Handler):
    server: _StoringServer

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, smtp: SMTPProtocol, session: Session, envelope: Envelope
    ) -> str:
        await super().handle_DATA(smtp, session, envelope)
        await self.server.keep()
        return "250 2.0.0 OK: kept by the asyncmail web inbox"


class WebInbox:
    """The debug SMTP server and the inbox web app, together.

    :param host: where both listen (default 127.0.0.1; the app refuses
        requests whose Host is not a loopback name).
    :param smtp_port: the SMTP port (0: any free one).
    :param web_port: the HTTP port (0: any free one).
    :param store: where mail is kept (default: a MemoryStore).
    :param quiet: do not also print each message.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        smtp_port: int = 1025,
        web_port: int = 8025,
        store: Store | None = None,
        quiet: bool = True,
    ) -> None:
        self.host = host
        self.store = store if store is not None else MemoryStore()
        self.smtp = _StoringServer(self.store, host, smtp_port, quiet)
        self.web_port = web_port
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._listener: socket.socket | None = None

    @property
    def smtp_port(self) -> int:
        return self.smtp.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.web_port}/"

    def app(self) -> Starlette:
        from .app import create_app

        return create_app(self.store)

    async def start(self) -> None:
        try:
            import uvicorn
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "The web inbox needs Starlette and uvicorn: "
                'pip install "asyncmail[web]"'
            ) from None
        # The HTTP socket is bound here, so that a port in use is an OSError
        # saying so (uvicorn would exit the process), before anything starts.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.web_port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        try:
            await self.smtp.start()
        except BaseException:
            listener.close()
            raise
        self.web_port = listener.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the caller's job
        self._listener = listener
        # A task that outlives this call (stop() ends it): asyncio's, as
        # anyio has no unstructured tasks.
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[listener])
        )
        while not self._server.started:
            if self._task.done():
                await self.smtp.stop()
                listener.close()
                self._task.result()  # raises why it could not start
                raise RuntimeError("the web inbox could not start")
            await anyio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        await self.smtp.stop()
        if isinstance(self.store, SQLiteStore):
            self.store.close()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await anyio.sleep_forever()
        finally:
            await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<WebInbox smtp {self.host}:{self.smtp_port} web {self.url}>"


async def run_from_cli(args: Any) -> int:
    """``asyncmail debug-server --web``: serve until interrupted."""
    if args.max_messages < 1:
        print("--max-messages must be 1 or more", file=sys.stderr)
        return 2
    store: Store = (
        SQLiteStore(args.store, max_messages=args.max_messages)
        if args.store
        else MemoryStore(max_messages=args.max_messages)
    )
    inbox = WebInbox(
        host=args.host,
        smtp_port=args.port,
        web_port=args.web_port,
        store=store,
        quiet=True,
    )
    await inbox.start()
    print(
        f"asyncmail debug server listening on {inbox.host}:{inbox.smtp_port}; "
        f"web inbox at {inbox.url} (Ctrl-C stops)"
    )
    sys.stdout.flush()
    try:
        await anyio.sleep_forever()
    finally:
        await inbox.stop()
    return 0
