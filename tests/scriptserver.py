"""A scripted SMTP server for fault injection: 127.0.0.1, port 0.

Written from scratch on asyncio streams; it runs its own event loop in a
thread, so async tests (on any loop) and blocking tests can both use it.

A test scripts it with rules: ``server.on(VERB, act, match=..., times=...,
skip=...)``. When a command arrives, the first rule for its verb whose *match*
is part of the command line (past its *skip* first matches, and with uses
left) says what to do; otherwise the server answers like a small,
well-behaved MTA. Two pseudo-verbs exist:
``CONNECT`` (the greeting) and ``"."`` (the end of the data: the reply to the
final dot). For ``DATA`` and ``"."`` *match* is looked up in the
transaction's envelope (its MAIL and RCPT lines), so a rule can target one
message of a batch.

``ScriptServer(starttls=True)`` offers STARTTLS with a certificate for
127.0.0.1 from a throw-away trustme CA (``client_context`` trusts it): after
its 220 the session continues encrypted (EHLO again, no STARTTLS offered),
and rules apply inside TLS as before. An Act for STARTTLS with
``handshake=False`` stalls the handshake instead (reads and says nothing).

With ``CHUNKING`` among its extensions (``ScriptServer(chunking=True)``)
the server takes BDAT (RFC 3030): ``BDAT <size> [LAST]`` with the size in
digits only (anything else: 501 and the connection closed, as the chunk
cannot be skipped), then exactly that many octets, read before the reply.
Rules for ``BDAT`` match the command line and the envelope (``match="LAST"``
targets the last chunk, ``match="rcpt3@"`` a message); *body_bytes* on one
makes the server read that many octets of the chunk and hang up. With no
recipient the chunk is refused (554; 503 with no MAIL); after a refused
chunk every later one is refused (503) and so is MAIL until RSET (RFC 3030:
the state is indeterminate); after a LAST chunk answered 2xx the
transaction is over. Every chunk's size and LAST flag is recorded.

Commands sent together (pipelining) are answered one by one, in order. The
server records, per session, every command line, the raw DATA bytes (before
un-stuffing; for BDAT the chunks' octets joined, at the LAST one) and the
messages it accepted (answered 2xx to the final dot or the LAST chunk).
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio

DEFAULT_EXTENSIONS = ("PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 10485760")
ENDLESS_LIMIT = 20 * 1024 * 1024  # an "endless" reply stops after this many bytes
_BDAT = re.compile(r"BDAT ([0-9]{1,15})( LAST)?", re.IGNORECASE)

T = TypeVar("T")


@dataclass(frozen=True)
class Act:
    """What the server does in answer to one command.

    In order: call *hook* (in the server's thread, e.g. to change a file at
    an exact point of the exchange); wait *delay* seconds; send the *before*
    lines (unsolicited), the reply *lines* and the *after* lines
    (unsolicited), in one write or one byte every *trickle* seconds; then, if
    *endless*, send "250-" lines without end; then close the connection if
    *close*. An Act with no lines sends nothing (silence: the server just
    reads on). For ``"."`` only, *body_bytes* makes the server read that many
    bytes of the body and close mid-body. For ``STARTTLS`` only, a 220 with
    *handshake* False does not start TLS: the server reads what comes and
    answers nothing, so the client's handshake can only time out.
    """

    lines: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    delay: float = 0.0
    trickle: float = 0.0
    endless: bool = False
    close: bool = False
    body_bytes: int | None = None
    hook: Callable[[], object] | None = None
    handshake: bool = True

    @property
    def code(self) -> int | None:
        return int(self.lines[-1][:3]) if self.lines else None


def reply(*lines: str, **options: Any) -> Act:
    """An Act that answers with *lines* (each with its code: "250 OK")."""
    return Act(lines=lines, **options)


CLOSE = Act(close=True)  # close the connection without a reply
SILENCE = Act()  # say nothing, keep the connection open


@dataclass
class Rule:
    verb: str
    act: Act
    match: str = ""
    times: int | None = 1  # None: every time
    skip: int = 0  # let this many matching commands through first


@dataclass(frozen=True)
class Accepted:
    """A message the server answered 2xx at the final dot."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # raw, as on the wire (still dot-stuffed)


@dataclass
class Session:
    commands: list[str] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)  # each DATA body received
    accepted: list[Accepted] = field(default_factory=list)
    tls: bool = False  # STARTTLS completed: what followed was encrypted
    chunks: list[tuple[int, bool]] = field(default_factory=list)  # BDAT (size, LAST)

    def verbs(self) -> list[str]:
        return [command.split(" ", 1)[0].upper() for command in self.commands]


@dataclass
class _Transaction:
    mail_from: str | None = None
    rcpt_tos: list[str] = field(default_factory=list)
    envelope: list[str] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)  # BDAT chunks so far
    failed: bool = False  # a BDAT chunk was refused: RSET first
    over: bool = False  # a LAST chunk was accepted


def _address(command: str) -> str:
    start, end = command.find("<"), command.find(">")
    return command[start + 1 : end] if 0 <= start < end else ""


@functools.cache
def _test_tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and a client context
    trusting its CA (one throw-away CA for the whole run)."""
    import trustme

    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    authority.configure_trust(client)
    return server, client


class ScriptServer:
    """The scripted server. Use as a context manager (starts and stops it)."""

    def __init__(
        self,
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
        *,
        starttls: bool = False,
        chunking: bool = False,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.extensions = list(extensions)
        if chunking:
            self.extensions.append("CHUNKING")
        #: With starttls: the server's TLS context, and one that trusts it.
        self.server_context: ssl.SSLContext | None = None
        self.client_context: ssl.SSLContext | None = None
        if starttls:
            self.server_context, self.client_context = _test_tls()
        self.rules: list[Rule] = []
        self.sessions: list[Session] = []
        self.live = 0  # sessions open right now
        self.max_live = 0  # the most sessions ever open at once
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    # -- scripting and records -------------------------------------------------

    def on(
        self,
        verb: str,
        act: Act,
        *,
        match: str = "",
        times: int | None = 1,
        skip: int = 0,
    ) -> Self:
        self.rules.append(Rule(verb.upper(), act, match, times, skip))
        return self

    @property
    def accepted(self) -> list[Accepted]:
        return [item for session in self.sessions for item in session.accepted]

    @property
    def commands(self) -> list[str]:
        return [command for session in self.sessions for command in session.commands]

    def count(self, verb: str) -> int:
        """How many times a command with this verb was received, all sessions."""
        return sum(session.verbs().count(verb.upper()) for session in self.sessions)

    @property
    def data(self) -> list[bytes]:
        return [body for session in self.sessions for body in session.data]

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = self._call(
            asyncio.start_server(self._session, self.host, 0, limit=1 << 20)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    # -- the SMTP session ----------------------------------------------------------

    def _pick(self, verb: str, subject: str, default: Act) -> Act:
        for rule in self.rules:
            if rule.verb == verb and rule.match in subject and rule.times != 0:
                if rule.skip:
                    rule.skip -= 1
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule.act
        return default

    def _ehlo(self, session: Session) -> Act:
        lines = ["scripted.example", *self.extensions]
        if self.server_context is not None and not session.tls:
            lines.append("STARTTLS")
        return reply(*(f"250-{line}" for line in lines[:-1]), f"250 {lines[-1]}")

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session()
        self.sessions.append(session)
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        try:
            await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # shutting down (asyncio 3.11 logs a cancelled handler task)
        finally:
            # Over once the client said QUIT or hung up (or we closed it).
            self.live -= 1
            self._tasks.discard(task)
            writer.close()  # flushes what is buffered, unless the peer stalls
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (Exception, asyncio.CancelledError):
                writer.transport.abort()

    async def _converse(
        self,
        session: Session,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        greeting = self._pick("CONNECT", "", reply("220 scripted.example ESMTP"))
        if not await self._perform(writer, greeting):
            return
        txn = _Transaction()
        while line := await reader.readline():
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            session.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            subject = command
            if verb == "EHLO":
                default = self._ehlo(session)
            elif verb == "STARTTLS":
                offered = self.server_context is not None and not session.tls
                default = reply(
                    "220 2.0.0 Ready to start TLS"
                    if offered
                    else "454 4.7.0 TLS not available"
                )
            elif verb in ("HELO", "NOOP"):
                default = reply("250 2.0.0 OK")
            elif verb == "AUTH":
                default = reply("235 2.7.0 Authentication successful")
            elif verb == "BDAT" and "CHUNKING" in self.extensions:
                if not await self._chunk(session, txn, command, reader, writer):
                    return
                if txn.over:
                    txn = _Transaction()
                continue
            elif verb == "MAIL":
                default = reply(
                    "503 5.5.1 RSET first: a BDAT failed"
                    if txn.failed
                    else "250 2.1.0 Sender OK"
                )
            elif verb == "RCPT":
                ok = txn.mail_from is not None
                default = reply(
                    "250 2.1.5 Recipient OK" if ok else "503 5.5.1 MAIL first"
                )
            elif verb == "DATA":
                subject = "\n".join(txn.envelope)
                ok = bool(txn.rcpt_tos)
                default = reply(
                    "354 End data with ." if ok else "554 5.5.1 No recipients"
                )
            elif verb == "RSET":
                default = reply("250 2.0.0 Reset")
            elif verb == "QUIT":
                default = reply("221 2.0.0 Bye", close=True)
            else:
                default = reply("500 5.5.2 Command unrecognised")
            act = self._pick(verb, subject, default)
            ok = act.code is not None and 200 <= act.code < 300
            if verb == "MAIL" and ok:
                txn = _Transaction(_address(command), [], [command])
            elif verb == "RCPT" and ok and txn.mail_from is not None:
                txn.rcpt_tos.append(_address(command))
                txn.envelope.append(command)
            elif verb == "RSET":
                txn = _Transaction()
            if not await self._perform(writer, act):
                return
            if verb == "STARTTLS" and act.code == 220:
                if not act.handshake or self.server_context is None:
                    while await reader.read(1 << 16):  # a stalled handshake
                        pass
                    return
                await writer.start_tls(self.server_context)
                session.tls = True
                txn = _Transaction()  # RFC 3207: the client starts over
            if verb == "DATA" and act.code == 354:
                if not await self._receive(session, txn, reader, writer):
                    return
                txn = _Transaction()

    async def _receive(
        self,
        session: Session,
        txn: _Transaction,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Read one message body and answer the final dot."""
        default = (
            reply(f"250 2.0.0 OK queued as Q{len(self.accepted) + 1}")
            if txn.rcpt_tos
            else reply("554 5.5.1 No valid recipients")
        )
        act = self._pick(".", "\n".join(txn.envelope), default)
        if act.body_bytes is not None:
            await reader.read(act.body_bytes)  # part of the body, then hang up
            return False
        body = bytearray()
        while (line := await reader.readline()) != b".\r\n":
            if not line:
                return False
            body += line
        session.data.append(bytes(body))
        if act.code is not None and 200 <= act.code < 300 and txn.mail_from:
            session.accepted.append(
                Accepted(txn.mail_from, tuple(txn.rcpt_tos), bytes(body))
            )
        return await self._perform(writer, act)

    async def _chunk(
        self,
        session: Session,
        txn: _Transaction,
        command: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Read one BDAT chunk (exactly its size) and answer it."""
        match = _BDAT.fullmatch(command)
        if match is None:
            await self._perform(
                writer, reply("501 5.5.4 Syntax: BDAT size [LAST]", close=True)
            )
            return False
        size, last = int(match.group(1)), match.group(2) is not None
        if txn.failed:
            default = reply("503 5.5.1 An earlier chunk failed: RSET first")
        elif txn.mail_from is None:
            default = reply("503 5.5.1 MAIL first")
        elif not txn.rcpt_tos:
            default = reply("554 5.5.1 No valid recipients")
        elif last:
            default = reply(f"250 2.0.0 OK queued as Q{len(self.accepted) + 1}")
        else:
            default = reply(f"250 2.0.0 {size} octets received")
        act = self._pick("BDAT", "\n".join([command, *txn.envelope]), default)
        if act.body_bytes is not None:
            await reader.readexactly(min(act.body_bytes, size))
            return False  # part of the chunk, then hang up
        data = await reader.readexactly(size)
        session.chunks.append((size, last))
        txn.body += data
        ok = act.code is not None and 200 <= act.code < 300
        if last:
            session.data.append(bytes(txn.body))
            if ok and not txn.failed and txn.mail_from and txn.rcpt_tos:
                session.accepted.append(
                    Accepted(txn.mail_from, tuple(txn.rcpt_tos), bytes(txn.body))
                )
        if not ok:
            txn.failed = True
        elif last and not txn.failed:
            txn.over = True
        return await self._perform(writer, act)

    async def _perform(self, writer: asyncio.StreamWriter, act: Act) -> bool:
        """Carry out *act*; False when the connection is closed."""
        if act.hook is not None:
            act.hook()
        if act.delay:
            await asyncio.sleep(act.delay)
        payload = "".join(
            f"{line}\r\n" for line in (*act.before, *act.lines, *act.after)
        )
        if act.trickle:
            for byte in payload.encode():
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(act.trickle)
        elif payload:
            writer.write(payload.encode())
            await writer.drain()
        if act.endless:
            chunk = b"250-an endless reply\r\n" * 1000
            for _ in range(ENDLESS_LIMIT // len(chunk)):
                writer.write(chunk)
                await writer.drain()
        if act.close:
            writer.close()
            return False
        return True


async def settle(done: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll *done* from a test's loop (the server's records change in its own
    thread); True once it holds, False if it still does not after *seconds*."""
    for _ in range(int(seconds / 0.01)):
        if done():
            return True
        await anyio.sleep(0.01)
    return done()
