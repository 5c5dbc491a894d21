"""Cross-message pipelining (RFC 2920): the next message's MAIL, RCPT and
DATA follow a message's end of data on the same connection, before its
reply; every reply still answers its own command.

The proof of "one round trip per message" is a server that withholds the
reply to each end of data until the next message's DATA has arrived: a
client that waits for that reply first is caught stalling (the server waits
out its patience and logs it). The same server with ``pipeline_depth=1``
must stall, so the check can fail.

Then the interleavings with a scripted server: a refused envelope behind a
message in flight, DATA accepted with every RCPT refused (the empty data),
421 and a dropped connection after an end of data with the next envelope
already written (the first is settled or unknown, the second retried once,
never sent twice), cancellation, servers without PIPELINING, and the
ordered reads of the reply stream itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncmail import ConfigurationError, Outcome
from asyncmail.exceptions import (
    DeliveryUnknownError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPReadTimeoutError,
)
from asyncmail.smtp.stream import ReplyStream
from helpers import make_backend, message, result_of, scripted
from scriptserver import reply

pytestmark = pytest.mark.anyio

FINAL_OK = "250 2.0.0 queued"


class Lockstep:
    """An SMTP server on 127.0.0.1 that holds back the reply to message k's
    end of data (and everything after it) until message k+1's DATA command
    has arrived, or *patience* seconds passed (logged as a stall)."""

    def __init__(
        self, messages: int, *, pipelining: bool = True, patience: float = 1.0
    ) -> None:
        self.messages = messages  # the last one's reply is not held back
        self.pipelining = pipelining
        self.patience = patience
        self.events: list[str] = []  # "> line" received, "< reply" sent
        self.stalls = 0
        self.bodies: list[bytes] = []
        self.sessions = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Lockstep:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sessions += 1
        held: list[str] = []  # replies owed after a withheld final reply
        holding = False

        def send(*lines: str) -> None:
            if holding:
                held.extend(lines)
                return
            for line in lines:
                self.events.append(f"< {line}")
                writer.write(line.encode() + b"\r\n")

        send("220 lockstep.example ESMTP")
        try:
            while True:
                if holding:
                    try:
                        line = await asyncio.wait_for(reader.readline(), self.patience)
                    except TimeoutError:
                        self.stalls += 1
                        self.events.append("! stalled")
                        holding = False
                        send(*held)
                        held.clear()
                        continue
                else:
                    line = await reader.readline()
                if not line:
                    return
                command = line.decode().rstrip("\r\n")
                self.events.append(f"> {command}")
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    extensions = ["PIPELINING"] if self.pipelining else []
                    lines = ["lockstep.example", *extensions, "8BITMIME"]
                    send(*[f"250-{x}" for x in lines[:-1]], f"250 {lines[-1]}")
                elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                    send("250 2.0.0 OK")
                elif verb == "DATA":
                    send("354 go ahead")
                    if holding:  # the next message's DATA: release the final
                        holding = False
                        send(*held)
                        held.clear()
                    self.events.append("< (flushed)")
                    await writer.drain()
                    body = await reader.readuntil(b"\r\n.\r\n")
                    self.bodies.append(body)
                    self.events.append("> <data>")
                    holding = len(self.bodies) < self.messages
                    send(FINAL_OK)
                elif verb == "QUIT":
                    holding = False
                    send(*held, "221 bye")
                    await writer.drain()
                    return
                else:
                    send("500 what")
                if not holding:
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


def _backend(port: int, **options: Any) -> Any:
    from asyncmail.backends.smtp import EmailBackend

    options.setdefault("timeout", 10)
    options.setdefault("retries", 0)
    options.setdefault("local_hostname", "client.example")
    return EmailBackend(host="127.0.0.1", port=port, **options)


async def test_each_envelope_follows_the_previous_end_of_data() -> None:
    messages = [message(n) for n in range(1, 6)]
    async with Lockstep(5) as server, _backend(server.port) as backend:
        sent = await backend.send_messages(messages)
    assert sent == 5
    assert server.stalls == 0, server.events
    assert server.sessions == 1
    assert len(server.bodies) == 5
    # Message k+1's MAIL came before the reply to message k's end of data.
    received = [e for e in server.events if e.startswith(">")]
    mails = [i for i, e in enumerate(server.events) if e.startswith("> MAIL")]
    finals = [i for i, e in enumerate(server.events) if e == f"< {FINAL_OK}"]
    for k in range(4):
        assert mails[k + 1] < finals[k]
    # Nothing else in between: no RSET, no NOOP, one envelope per message.
    verbs = [e.split()[1] for e in received]
    assert verbs == ["EHLO", *["MAIL", "RCPT", "DATA", "<data>"] * 5, "QUIT"]
    for n, msg in enumerate(messages, 1):
        assert result_of(msg).reply == FINAL_OK
        assert result_of(msg).recipients[f"rcpt{n}@example.com"].outcome is (
            Outcome.ACCEPTED
        )


async def test_depth_one_waits_for_each_reply() -> None:
    """The check above can fail: without pipelining across messages the
    client waits for each reply, and the server sees it stall."""
    messages = [message(n) for n in range(1, 4)]
    async with (
        Lockstep(3, patience=0.3) as server,
        _backend(server.port, pipeline_depth=1) as backend,
    ):
        assert await backend.send_messages(messages) == 3
    assert server.stalls == 2


async def test_a_server_without_pipelining_gets_one_message_at_a_time() -> None:
    messages = [message(n) for n in range(1, 4)]
    async with (
        Lockstep(3, pipelining=False, patience=0.3) as server,
        _backend(server.port) as backend,
    ):
        assert await backend.send_messages(messages) == 3
    assert server.stalls == 2
    assert server.sessions == 1


async def test_concurrent_sends_share_a_connection_in_order() -> None:
    """Separate send() calls (as from request handlers) pipeline too."""
    messages = [message(n) for n in range(1, 5)]
    async with Lockstep(4) as server, _backend(server.port) as backend:
        await asyncio.gather(*(backend.send_messages([m]) for m in messages))
    assert server.sessions == 1
    assert server.stalls <= 1  # the first sends may not have overlapped
    bodies = b"".join(server.bodies)
    for msg in messages:
        assert result_of(msg).error is None
        assert msg.extra_headers["Message-ID"].encode() in bodies


@pytest.mark.parametrize("depth", [0, -1, 1.5, True, "2"])
def test_pipeline_depth_is_checked(depth: object) -> None:
    with pytest.raises(ConfigurationError, match="pipeline_depth"):
        _backend(25, pipeline_depth=depth)


# -- interleavings, on the scripted server ----------------------------------


async def test_refused_envelope_behind_a_message_in_flight() -> None:
    """Message 2's recipient is refused while message 1 awaits its reply:
    message 2 is reset (its DATA refused), message 3 follows, all settled."""
    with scripted() as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="rcpt2@")
        server.on(".", reply(FINAL_OK, delay=0.2), match="rcpt1@")
        messages = [message(n) for n in range(1, 4)]
        async with make_backend(server) as backend:
            sent = await backend.send_messages(messages, fail_silently=True)
    assert sent == 2
    assert result_of(messages[0]).error is None
    refused = result_of(messages[1]).recipients["rcpt2@example.com"]
    assert (refused.outcome, refused.code) == (Outcome.PERMANENT, 550)
    assert result_of(messages[2]).error is None
    assert len(server.sessions) == 1
    verbs = server.sessions[0].verbs()
    # Message 2's envelope went out before message 1's reply came back, and
    # only message 2 (refused before its data) was reset.
    assert verbs.count("RSET") == 1
    assert verbs.index("RSET") > verbs.index("DATA")
    assert [a.mail_from for a in server.accepted] == [
        "sender1@example.com",
        "sender3@example.com",
    ]


async def test_data_accepted_with_every_rcpt_refused_is_ended_empty() -> None:
    """RFC 2920: a pipelined DATA answered 354 although its only RCPT was
    refused gets an empty data (a lone dot), never the message; the server's
    reply to it ends the transaction, and the next message follows."""
    with scripted() as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="rcpt2@")
        server.on("DATA", reply("354 go"), match="sender2@")
        server.on(".", reply("554 5.5.1 No valid recipients"), match="sender2@")
        messages = [message(n) for n in range(1, 4)]
        async with make_backend(server) as backend:
            sent = await backend.send_messages(messages, fail_silently=True)
    assert sent == 2
    assert result_of(messages[1]).recipients["rcpt2@example.com"].code == 550
    assert server.count("RSET") == 0
    assert b"Body of message 2" not in b"".join(server.data)
    assert [a.mail_from for a in server.accepted] == [
        "sender1@example.com",
        "sender3@example.com",
    ]


async def test_421_after_an_end_of_data_retries_the_next_message_once() -> None:
    """Message 1's end of data gets 421 while message 2's envelope is
    already written: message 1 is refused (its data was written: never
    resent), message 2 goes on a new connection, once, although the backend
    makes no retries: it had no reply of its own, so nothing of it was tried.
    (The scripted server records only the commands it got to, so message 2's
    first envelope shows in no record; the lock-step tests above prove it
    was written.)"""
    with scripted() as server:
        server.on(
            ".",
            reply("421 4.3.2 Shutting down", delay=0.1, close=True),
            match="rcpt1@",
        )
        messages = [message(n) for n in range(1, 4)]
        async with make_backend(server) as backend:
            sent = await backend.send_messages(messages, fail_silently=True)
    first = result_of(messages[0]).recipients["rcpt1@example.com"]
    assert (first.outcome, first.code) == (Outcome.TEMPORARY, 421)
    assert sent == 2
    assert sorted(a.mail_from for a in server.accepted) == [
        "sender2@example.com",
        "sender3@example.com",
    ]
    assert len(server.sessions) == 2
    assert result_of(messages[1]).attempts == 1


async def test_drop_after_an_end_of_data_leaves_it_unknown_and_resends_nothing() -> (
    None
):
    with scripted() as server:
        server.on(".", reply(delay=0.1, close=True), match="rcpt1@")
        messages = [message(n) for n in range(1, 4)]
        async with make_backend(server) as backend:
            sent = await backend.send_messages(messages, fail_silently=True)
    assert result_of(messages[0]).recipients["rcpt1@example.com"].outcome is (
        Outcome.UNKNOWN
    )
    assert sent == 2
    mail_froms = [c for c in server.commands if c.startswith("MAIL FROM")]
    assert sum("sender1@" in c for c in mail_froms) == 1  # never resent
    assert sum("sender2@" in c for c in mail_froms) == 1
    assert result_of(messages[1]).attempts == 1
    assert sorted(a.mail_from for a in server.accepted) == [
        "sender2@example.com",
        "sender3@example.com",
    ]


async def test_a_failure_of_the_next_message_itself_is_not_retried_for_free() -> None:
    """The free retry is only for a message that got no reply of its own:
    one whose own MAIL was answered 421 is a normal failed try."""
    with scripted() as server:
        server.on(".", reply(FINAL_OK, delay=0.1), match="rcpt1@")
        server.on("MAIL", reply("421 4.3.2 Go away", close=True), match="sender2@")
        messages = [message(n) for n in range(1, 3)]
        async with make_backend(server) as backend:
            sent = await backend.send_messages(messages, fail_silently=True)
    assert sent == 1
    second = result_of(messages[1])
    assert second.recipients["rcpt2@example.com"].code == 421
    assert sum("sender2@" in c for c in server.commands) == 1


async def test_cancelled_batch_reports_each_message_in_flight() -> None:
    """Cancelled with message 1 awaiting its reply and message 2's envelope
    written: 1 is unknown (its end of data was written), 2 is temporary."""
    with scripted() as server:
        server.on(".", reply(FINAL_OK, delay=5), match="rcpt1@")
        messages = [message(n) for n in range(1, 3)]
        async with make_backend(server) as backend:

            async def source() -> AsyncIterator[Any]:
                for msg in messages:
                    yield msg

            task = asyncio.ensure_future(backend.send_messages(source()))
            for _ in range(200):
                await asyncio.sleep(0.01)
                if server.count("MAIL") == 2:
                    break
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert result_of(messages[0]).recipients["rcpt1@example.com"].outcome is (
        Outcome.UNKNOWN
    )
    assert result_of(messages[1]).recipients["rcpt2@example.com"].outcome is (
        Outcome.TEMPORARY
    )


async def test_many_messages_over_a_few_pipelined_connections() -> None:
    """Every message delivered exactly once, over at most max_connections
    sessions, each reply matched to its own message."""
    with scripted() as server:
        server.on("RCPT", reply("550 5.1.1 No"), match="rcpt7@", times=None)
        server.on(".", reply("554 5.6.0 Rejected"), match="rcpt11@", times=None)
        messages = [message(n) for n in range(1, 41)]
        async with make_backend(server, max_connections=3, pipeline_depth=3) as b:
            sent = await b.send_messages(messages, fail_silently=True)
    assert sent == 38
    assert server.max_live <= 3
    assert sorted(a.mail_from for a in server.accepted) == sorted(
        f"sender{n}@example.com" for n in range(1, 41) if n not in (7, 11)
    )
    assert result_of(messages[6]).recipients["rcpt7@example.com"].code == 550
    assert result_of(messages[10]).recipients["rcpt11@example.com"].code == 554
    for n, msg in enumerate(messages, 1):
        if n not in (7, 11):
            assert result_of(msg).error is None, n


# -- the reply stream's ordered reads ------------------------------------------


class _Transport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        pass


async def test_readers_get_their_own_replies_in_wire_order() -> None:
    stream = ReplyStream(_Transport(), asyncio.get_running_loop())
    first = stream.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n", 2)
    second = stream.send(b"NOOP\r\n", 1)
    assert (first, second) == (0, 2)
    later = asyncio.ensure_future(stream.read(second))  # waits for the others
    await asyncio.sleep(0)
    stream.data_received(b"250 one\r\n250 two\r\n250 three\r\n")
    await asyncio.sleep(0)
    assert not later.done()  # replies 0 and 1 are not read yet
    assert (await stream.read(first)).text == "one"
    assert (await stream.read(first + 1)).text == "two"
    assert (await later).text == "three"


async def test_abandoned_replies_are_dropped_and_the_rest_stay_in_step() -> None:
    from collections import deque

    stream = ReplyStream(_Transport(), asyncio.get_running_loop())
    gone = stream.send(b".\r\n", 1)
    mine = stream.send(b"NOOP\r\n", 1)
    waiting = asyncio.ensure_future(stream.read(mine))
    stream.abandon(deque([gone]))
    stream.data_received(b"250 for the abandoned\r\n")
    await asyncio.sleep(0)
    assert not waiting.done()
    stream.data_received(b"250 mine\r\n")
    assert (await waiting).text == "mine"
    assert stream.outstanding == 0


async def test_the_earliest_limit_in_flight_binds_until_its_owner_leaves() -> None:
    """Two transactions in flight: the later one's limit never extends the
    earlier one's; once the earlier leaves, only the later one's counts."""
    loop = asyncio.get_running_loop()
    stream = ReplyStream(_Transport(), loop)
    ahead, behind = object(), object()
    stream.set_deadline(ahead, loop.time() + 0.2, SMTPDeadlineExceededError)
    stream.set_deadline(behind, loop.time() + 30)  # handed the connection later
    ticket = stream.send(b".\r\n", 1)
    started = loop.time()
    with pytest.raises(SMTPDeadlineExceededError):
        await stream.read(ticket)
    assert loop.time() - started < 5  # the earlier limit, not 30 s

    stream = ReplyStream(_Transport(), loop)
    stream.set_deadline(ahead, loop.time() + 0.05)
    stream.set_deadline(behind, loop.time() + 30)
    stream.release(ahead)  # its reply was read: its limit is gone
    ticket = stream.send(b"NOOP\r\n", 1)
    waiting = asyncio.ensure_future(stream.read(ticket))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # well past the released limit
    stream.data_received(b"250 fine\r\n")
    assert (await waiting).text == "fine"


async def test_a_message_handed_the_connection_later_does_not_extend_a_deadline() -> (
    None
):
    """Message 1's final reply never comes; message 2, sent 1.8 s later by
    another caller, pipelines behind it on the same connection with a later
    deadline of its own. Message 1 still fails at its own deadline (2 s),
    not at message 2's (3.8 s); message 2 is retried on a new session."""
    with scripted() as server:
        server.on(".", reply(FINAL_OK, delay=8.0), match="rcpt1@")
        first, second = message(1), message(2)
        options: dict[str, Any] = {"deadline": 2.0, "max_connections": 1}
        async with make_backend(server, **options) as backend:
            loop = asyncio.get_running_loop()
            started = loop.time()
            one = asyncio.ensure_future(
                backend.send_messages([first], fail_silently=True)
            )
            await asyncio.sleep(1.8)
            two = asyncio.ensure_future(
                backend.send_messages([second], fail_silently=True)
            )
            await one
            took = loop.time() - started
            assert await two == 1
    assert 1.9 < took < 3.3  # 3.8 if message 2 had moved its deadline
    assert isinstance(result_of(first).error, DeliveryUnknownError)
    assert "deadline" in str(result_of(first).error)
    assert result_of(second).error is None
    # (Before the fix, message 1 took message 2's deadline: its envelope,
    # written behind message 1's end of data, had moved the connection's.)
    assert len(server.sessions) == 2
    # The server did take message 1 (hence "unknown", never resent); message 2
    # once, on the second session.
    assert sorted(a.mail_from for a in server.accepted) == [
        "sender1@example.com",
        "sender2@example.com",
    ]


async def test_a_turn_starts_the_phase_clock_of_those_behind_only() -> None:
    """Releasing an owner restarts the phase limits of the owners that came
    after it (capped by their own deadline), and of no one ahead of it."""
    loop = asyncio.get_running_loop()
    stream = ReplyStream(_Transport(), loop)
    ahead, middle, behind, last = object(), object(), object(), object()
    now = loop.time()
    stream.set_deadline(ahead, now + 0.1)
    stream.set_deadline(middle, now + 0.2)
    stream.set_deadline(behind, now + 0.3, cap=now + 0.5)
    stream.set_deadline(last, now + 0.4, SMTPDeadlineExceededError)
    stream.release(middle, 1.0)
    later = loop.time()
    limits = stream._limits
    assert limits[ahead] == (now + 0.1, SMTPReadTimeoutError, None)  # ahead
    assert limits[behind] == (now + 0.5, SMTPDeadlineExceededError, now + 0.5)
    assert limits[last] == (now + 0.4, SMTPDeadlineExceededError, None)
    stream.release(ahead, 0.25)
    assert limits[behind][0] == now + 0.5  # never moved earlier
    stream.set_deadline(ahead, now + 0.1)  # came on after the others now
    stream.release(behind, 5.0)
    assert limits[ahead][0] >= later + 5.0
    # Without a phase nothing moves.
    before = limits[ahead]
    stream.set_deadline(last, now + 0.4)
    stream.release(behind_of := object())  # not an owner: nothing happens
    stream.set_deadline(behind_of, now + 0.1)
    stream.release(last)
    assert limits[ahead] == before
    assert limits[behind_of][0] == now + 0.1


async def test_a_message_behind_a_slow_one_gets_its_phase_from_its_turn() -> None:
    """Timeout 1 s (each wait), deadline 5 s (each message). The server
    takes 0.8 s to accept message 1, then 0.6 s
    to answer message 2's MAIL, whose envelope went on the wire right behind
    message 1's end of data: every reply came within its phase of the one
    before, so both are delivered on one session. (Before, message 2's clock
    started at its write: it timed out at 1 s, its MAIL answered at 1.4.)"""
    with scripted() as server:
        server.on(".", reply(FINAL_OK, delay=0.8), match="rcpt1@")
        server.on("MAIL", reply("250 2.1.0 OK", delay=0.6), match="sender2@")
        first, second = message(1), message(2)
        options: dict[str, Any] = {"timeout": 1.0, "deadline": 5.0}
        async with make_backend(server, max_connections=1, **options) as backend:
            loop = asyncio.get_running_loop()
            started = loop.time()
            sent = await backend.send_messages([first, second], fail_silently=True)
            took = loop.time() - started
    assert result_of(second).error is None, result_of(second).error
    assert sent == 2
    assert took > 1.3  # message 2's MAIL was answered after its write's 1 s
    assert len(server.sessions) == 1
    assert [a.mail_from for a in server.accepted] == [
        "sender1@example.com",
        "sender2@example.com",
    ]


async def test_end_of_data_and_the_next_envelope_go_in_one_write() -> None:
    transport = _Transport()
    stream = ReplyStream(transport, asyncio.get_running_loop())
    end = stream.send_together(b"body\r\n.\r\n", 1)
    assert transport.written == []  # held back for the next envelope

    async def next_message() -> None:  # woken by the handoff, one hop later
        stream.send(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n", 3)

    task = asyncio.ensure_future(next_message())
    await stream.flushed(end, len(b"body\r\n.\r\n"))
    await task
    assert transport.written == [
        b"body\r\n.\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n"
    ]
    assert stream.written == 4


async def test_held_back_end_of_data_lost_with_the_connection_is_not_written() -> None:
    """A connection lost before the held-back write went out never carried
    the end of data: flushed() raises, so the message is safe to retry."""
    transport = _Transport()
    stream = ReplyStream(transport, asyncio.get_running_loop())
    end = stream.send_together(b"body\r\n.\r\n", 1)
    stream.connection_lost(ConnectionResetError("reset"))
    with pytest.raises(SMTPError):
        await stream.flushed(end, stream.queued)
    assert transport.written == []


class _Buffering(_Transport):
    """A transport holding its last *buffered* bytes back from the OS."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered


@pytest.mark.parametrize(
    ("behind", "buffered", "written"),
    [
        (0, 0, True),  # all of it left
        (0, 1, False),  # its last byte (the end of data's LF) is still ours
        (100, 100, True),  # only what was sent after it is still buffered
        (100, 101, False),
        (100, 0, True),
    ],
)
async def test_an_end_of_data_left_once_its_own_bytes_did(
    behind: int, buffered: int, written: bool
) -> None:
    """Whether an end of data was written depends on where it is in the
    stream, not on whether the transport's buffer is empty: bytes written
    after it (the next message's envelope, handed the connection) may still
    be buffered when the session breaks, and the end of data is then maybe
    delivered (unknown, never resent), not "not written" (resent: a
    duplicate)."""
    transport = _Buffering()
    stream = ReplyStream(transport, asyncio.get_running_loop())
    ticket = stream.send(b"body\r\n.\r\n", 1)
    end = stream.queued
    if behind:
        stream.send(b"x" * behind, 0)
    transport.buffered = buffered
    assert stream.left(end) is written
    stream.connection_lost(ConnectionResetError("reset"))  # buffer kept as is
    if written:
        await stream.flushed(ticket, end)
    else:
        with pytest.raises(SMTPError):
            await stream.flushed(ticket, end)


class _Client:
    hostname = "relay.example"
    port = 25

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("stuck", "outcome"),
    [
        (0, Outcome.UNKNOWN),  # all of it left: maybe delivered
        (1, Outcome.TEMPORARY),  # its last byte never left: not delivered
        (3, Outcome.TEMPORARY),  # ".\r\n" never left
    ],
)
async def test_a_session_failing_with_the_end_of_data_buffered_did_not_write_it(
    stuck: int, outcome: Outcome
) -> None:
    """The transaction does not wait for its end of data to leave before it
    reads the final reply; when the session then fails (here the timeout),
    what had left by then decides: bytes of it still in the transport's
    buffer (never sent: the transport is aborted at once) mean not
    delivered, safe to retry; otherwise unknown."""
    from asyncmail.smtp.connection import SMTPConnection

    transport = _Buffering()
    connection = SMTPConnection(
        transport, extensions={"pipelining": ""}, client=_Client(), timeout=0.3
    )
    body = b"Subject: x\r\n\r\nbody\r\n.\r\n"
    transaction = connection.transaction(
        "a@example.com", ["b@example.com"], body, eight_bit=False, smtputf8=False
    )
    running = asyncio.ensure_future(connection.run(transaction, deadline=None))
    await asyncio.sleep(0)
    transport.buffered = stuck  # the socket takes all but the last *stuck*
    connection.stream.data_received(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert not await asyncio.wait_for(running, 5)  # the timeout: no reply
    assert transport.written[-1] == body
    (result,) = transaction.recipients.values()
    assert result.outcome is outcome, result
    assert transaction.end_written is (outcome is Outcome.UNKNOWN)


async def test_a_reply_to_the_end_of_data_means_it_left() -> None:
    transport = _Buffering()
    stream = ReplyStream(transport, asyncio.get_running_loop())
    ticket = stream.send(b"body\r\n.\r\n", 1)
    transport.buffered = 3  # the transport says it still holds some
    waiting = asyncio.ensure_future(stream.flushed(ticket, stream.queued))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    stream.data_received(b"250 queued\r\n")
    await asyncio.wait_for(waiting, 5)  # the server has it all


async def test_cancelling_the_message_ahead_leaves_the_one_behind_in_step() -> None:
    """Message 1 is cancelled while it awaits the reply to its end of data,
    with message 2 pipelined behind it: 1 is unknown, its reply is dropped
    on arrival, and 2 gets its own replies and is delivered."""
    with scripted() as server:
        server.on(".", reply(FINAL_OK, delay=0.5), match="rcpt1@")
        async with make_backend(server, timeout=5.0) as backend:
            first, second = message(1), message(2)
            one = asyncio.ensure_future(backend.send_messages([first]))
            for _ in range(200):
                await asyncio.sleep(0.01)
                if server.count("DATA") == 1 and server.sessions[0].data:
                    break
            two = asyncio.ensure_future(backend.send_messages([second]))
            await asyncio.sleep(0.1)
            one.cancel()
            with pytest.raises(asyncio.CancelledError):
                await one
            assert await asyncio.wait_for(two, 10) == 1
    assert result_of(first).recipients["rcpt1@example.com"].outcome is (Outcome.UNKNOWN)
    assert result_of(second).error is None
    assert len(server.sessions) == 1
    assert sorted(a.mail_from for a in server.accepted) == [
        "sender1@example.com",
        "sender2@example.com",
    ]


class _CountingWrites:
    """A transport that counts the writes made through it."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: Any) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def test_an_outbox_worker_pipelines_each_message_after_its_mark(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker sends as the direct path does: message k+1's envelope goes
    in the same write as message k's end of data (one round trip and one
    write a message), and each message was marked in flight, committed,
    before its end of data reached the server."""
    import sqlite3

    from asyncmail.queue import Worker, enqueue, open_store

    writes: list[bytes] = []
    original = ReplyStream.__init__

    def counted(self: ReplyStream, transport: Any, loop: Any) -> None:
        original(self, _CountingWrites(transport, writes), loop)

    monkeypatch.setattr(ReplyStream, "__init__", counted)
    path = tmp_path / "outbox.db"
    store = open_store(f"sqlite:///{path}")
    ids = await enqueue(store, [message(n) for n in range(1, 6)])
    database = sqlite3.connect(path)
    at_end: list[tuple[bytes, str]] = []  # each body, its row's state then

    class Checked(list[bytes]):
        def append(self, body: bytes) -> None:
            n = 1 + len(self)
            assert f"Subject: Message {n}\r\n".encode() in body
            [(state,)] = database.execute(
                "SELECT state FROM asyncmail_outbox WHERE id = ?", (ids[n - 1],)
            ).fetchall()
            at_end.append((body, state))
            super().append(body)

    try:
        async with Lockstep(5) as server:
            server.bodies = Checked()
            backend = _backend(server.port, max_connections=1)
            worker = Worker(store, backend=backend, concurrency=1, batch=5)
            await worker.run(until_idle=True)
    finally:
        database.close()
        store.close()
    assert worker.delivered == 5
    assert server.stalls == 0, server.events
    assert server.sessions == 1
    assert [state for _, state in at_end] == ["inflight"] * 5
    mails = [i for i, e in enumerate(server.events) if e.startswith("> MAIL")]
    finals = [i for i, e in enumerate(server.events) if e == f"< {FINAL_OK}"]
    for k in range(4):
        assert mails[k + 1] < finals[k]
    # After the greeting: the first envelope, then one write a message (its
    # data and end of data, with the next envelope but for the last), QUIT.
    assert writes[0].startswith(b"MAIL FROM:<sender1@")
    assert writes[-1] == b"QUIT\r\n"
    data = writes[1:-1]
    assert len(data) == 5, [w[:40] for w in writes]
    for n, write in enumerate(data, 1):
        assert f"Subject: Message {n}\r\n".encode() in write
        following = f"\r\n.\r\nMAIL FROM:<sender{n + 1}@example.com>\r\n"
        assert write.endswith(b"\r\n.\r\n" if n == 5 else b"DATA\r\n")
        assert (following.encode() in write) is (n < 5)
