"""A local SMTP server that prints what it receives, for development.

The modern replacement for ``python -m smtpd -n -c DebuggingServer`` (the
``smtpd`` module left Python in 3.12): point your application at it and every
message it accepts is printed with its envelope, and kept in
:attr:`DebugServer.messages`. Nothing is relayed anywhere.

From the command line: ``asyncmail debug-server --port 1025``. In code::

    async with DebugServer(port=0) as server:   # port 0: any free port
        await asend_mail("Hi", "Body", "a@example.com", ["b@example.com"],
                         connection=get_connection(host=server.host,
                                                   port=server.port))
    print(server.messages[0].data)

Built on aiosmtpd, the ``server`` extra: ``pip install "asyncmail[server]"``.

What it prints comes from the network, so control characters in it (terminal
escape sequences, bare CR, bidi overrides) are shown escaped (``\x1b``),
always: also when the output goes to a pipe or a file, which a terminal may
display later. :attr:`ReceivedMessage.data` keeps the raw bytes.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP as SMTPProtocol  # noqa: N811 - a class
    from aiosmtpd.smtp import Envelope, Session

__all__ = ["DebugServer", "ReceivedMessage", "escape_controls"]

# Controls a terminal may act on: C0 (but tab and newline), DEL, C1, and the
# Unicode format characters that reorder or hide text (bidi overrides and
# isolates, zero-width and line/paragraph separators). A translate() table:
# one pass in C, linear whatever the input.
_ESCAPED = (
    *range(0x09),
    *range(0x0B, 0x20),
    *range(0x7F, 0xA0),
    *range(0x200B, 0x2010),
    *range(0x2028, 0x202F),
    *range(0x2066, 0x206A),
    0xFEFF,
)
_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" for code in _ESCAPED
}


def escape_controls(text: str) -> str:
    """*text* with every character a terminal could act on shown as an escape
    (``\x1b``, ``\u202e``); tabs and newlines stay. For printing text that
    came from the network (message data, server replies)."""
    return text.translate(_ESCAPES)


BANNER = "---------- MESSAGE FOLLOWS ----------"
FOOTER = "------------ END MESSAGE ------------"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message the debug server accepted: its envelope and raw bytes."""

    peer: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]
    data: bytes

    def format(self) -> str:
        """The message as the server prints it (control characters escaped;
        see :func:`escape_controls`)."""
        text = self.data.decode("utf-8", "replace").replace("\r\n", "\n")
        options = (
            f"X-MailOptions: {' '.join(self.mail_options)}\n"
            if self.mail_options
            else ""
        )
        shown = (
            f"{BANNER}\n"
            f"X-Peer: {self.peer}\n"
            f"X-MailFrom: {self.mail_from}\n"
            f"X-RcptTo: {', '.join(self.rcpt_tos)}\n"
            f"{options}\n"
            f"{text.rstrip(chr(10))}\n"
            f"{FOOTER}\n"
        )
        return escape_controls(shown)


class _Handler:
    def __init__(self, server: DebugServer) -> None:
        self.server = server

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, smtp: SMTPProtocol, session: Session, envelope: Envelope
    ) -> str:
        peer = session.peer
        message = ReceivedMessage(
            peer=str(peer[0]) if isinstance(peer, tuple) else str(peer),
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            mail_options=tuple(envelope.mail_options),
            data=envelope.original_content or b"",
        )
        self.server.record(message)
        return "250 2.0.0 OK: printed by the asyncmail debug server"


class DebugServer:
    """A printing SMTP server on *host*:*port* (port 0 picks a free port).

    :param stream: where messages are printed (default: stdout; None with
        ``quiet=True`` prints nothing).
    :param quiet: keep messages in :attr:`messages` without printing them.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1025,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.stream = stream
        self.quiet = quiet
        self.messages: list[ReceivedMessage] = []
        self._server: asyncio.AbstractServer | None = None
        self._sessions: weakref.WeakSet[SMTPProtocol] = weakref.WeakSet()

    def record(self, message: ReceivedMessage) -> None:
        """Keep (and print) a received message."""
        self.messages.append(message)
        if not self.quiet:
            stream = self.stream or sys.stdout
            stream.write(message.format())
            stream.flush()

    def _protocol(self) -> SMTPProtocol:
        from aiosmtpd.smtp import SMTP

        session = SMTP(
            _Handler(self),
            hostname="asyncmail-debug-server",
            ident="asyncmail debug server",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
        )
        self._sessions.add(session)
        return session

    async def start(self) -> None:
        """Start listening (returns once the port is bound)."""
        try:
            import aiosmtpd  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(
                'The debug server needs aiosmtpd: pip install "asyncmail[server]"'
            ) from None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close open sessions."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            # Python 3.12+ waits for open sessions in wait_closed(): end them
            # ourselves (close_clients() only exists from 3.13).
            for session in list(self._sessions):
                transport = getattr(session, "transport", None)
                if transport is not None:
                    transport.close()
            await server.wait_closed()

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

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
        state = "listening" if self._server is not None else "stopped"
        return f"<DebugServer {self.host}:{self.port} {state}>"
