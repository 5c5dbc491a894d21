"""The unreachable-server breaker and back-pressure from a busy server.

The rule (backends/retry.py, docs/pages/backends.md): only consecutive
*connect* failures, across messages, open the breaker; it half-opens after a
cooldown within the same call; a 421 greeting while other connections are
open is back-pressure for the pool, never "unreachable". Everything is
checked on what the scripted server saw.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asyncmail import EmailMessage, MessageStatus, Outcome
from asyncmail.backends.smtp import EmailBackend
from scriptserver import Act, ScriptServer, reply

pytestmark = pytest.mark.anyio

GOING_AWAY = reply("421 4.3.2 Going away", close=True)


def message(n: int) -> EmailMessage:
    return EmailMessage(
        f"Message {n}",
        f"Body {n}.\n",
        f"sender{n}@example.com",
        [f"rcpt{n}@example.com"],
        headers={"Message-ID": f"<{uuid.uuid4().hex}.{n}@breaker.example>"},
    )


def make_backend(server: ScriptServer, **options: Any) -> EmailBackend:
    settings: dict[str, Any] = {
        "timeout": 10.0,
        "retries": 0,
        "retry_backoff": 0.01,
        "local_hostname": "client.example",
    }
    settings.update(options)
    return EmailBackend(host=server.host, port=server.port, **settings)


def senders(server: ScriptServer) -> Counter[str]:
    return Counter(item.mail_from for item in server.accepted)


def greeted(server: ScriptServer) -> int:
    """Sessions that got past the greeting (said EHLO)."""
    return sum(1 for session in server.sessions if session.commands)


async def test_one_messages_bad_luck_does_not_fail_the_batch() -> None:
    """The reported case: message 1 meets a 4xx at RCPT (the server closes),
    then a 421 greeting on its retry, its last attempt. That is one connect
    failure, not an unreachable server: the other nine are sent."""
    with ScriptServer() as server:
        server.on("RCPT", reply("421 4.7.0 Try again later", close=True))
        server.on("CONNECT", GOING_AWAY, skip=1)  # the retry's greeting
        backend = make_backend(server, retries=1)
        messages = [message(n) for n in range(1, 11)]

        sent = await backend.send_messages(messages, fail_silently=True)

    assert sent == 9
    assert senders(server) == {f"sender{n}@example.com": 1 for n in range(2, 11)}
    first = messages[0].result
    assert first is not None
    assert first.status is MessageStatus.FAILED
    assert first.attempts == 2
    assert {r.outcome for r in first.recipients.values()} == {Outcome.TEMPORARY}
    assert all(m.result is not None and m.result.ok for m in messages[1:])


async def test_consecutive_connect_failures_open_it() -> None:
    with ScriptServer() as server:
        server.on("CONNECT", GOING_AWAY, times=None)  # never takes a session
        backend = make_backend(server, breaker_threshold=3)
        messages = [message(n) for n in range(1, 11)]

        assert await backend.send_messages(messages, fail_silently=True) == 0

    assert len(server.sessions) == 3  # then it opened: no more tries
    for msg in messages:
        assert msg.result is not None
        assert msg.result.attempts == 1
        (result,) = msg.result.recipients.values()
        assert result.outcome is Outcome.TEMPORARY
        assert result.code == 421
    # The messages failed fast share the error that opened the breaker.
    assert len({id(m.result.error) for m in messages[3:]}) == 1  # type: ignore[union-attr]


async def test_failures_between_successes_never_open_it() -> None:
    """Every other connection is refused: never three in a row, so every
    message gets through on its retry."""
    with ScriptServer() as server:
        for skip in range(0, 40, 2):
            server.on("CONNECT", GOING_AWAY, skip=skip)  # sessions 1, 3, 5...
        backend = make_backend(
            server, retries=1, breaker_threshold=2, max_messages_per_connection=1
        )
        messages = [message(n) for n in range(1, 9)]

        assert await backend.send_messages(messages) == 8

    assert senders(server) == {f"sender{n}@example.com": 1 for n in range(1, 9)}


async def test_a_permanent_refusal_is_not_unreachable() -> None:
    """554 at the greeting: the server is there and refuses us; each message
    is refused permanently (no retries), none is failed by the breaker."""
    with ScriptServer() as server:
        server.on("CONNECT", reply("554 5.7.1 Go away", close=True), times=None)
        backend = make_backend(server, retries=2, breaker_threshold=1)
        messages = [message(n) for n in range(1, 6)]

        assert await backend.send_messages(messages, fail_silently=True) == 0

    assert len(server.sessions) == 5
    for msg in messages:
        (result,) = msg.result.recipients.values()  # type: ignore[union-attr]
        assert result.outcome is Outcome.PERMANENT
        assert result.code == 554


async def paced(count: int, pause: float) -> AsyncIterator[EmailMessage]:
    for n in range(1, count + 1):
        yield message(n)
        await anyio.sleep(pause)


@pytest.mark.parametrize("down_for", [3, 4], ids=["probe-succeeds", "probe-fails"])
async def test_half_open_probe_within_the_same_call(down_for: int) -> None:
    """The server refuses its first *down_for* sessions. Three failures open
    the breaker; the messages that follow fail fast without a session; after
    the cooldown one message probes. With 3 refusals the probe connects and
    the rest are sent; with 4 the probe fails, the breaker stays open for
    another cooldown, and the next probe connects."""
    cooldown = 0.3
    with ScriptServer() as server:
        server.on("CONNECT", GOING_AWAY, times=down_for)
        backend = make_backend(server, breaker_threshold=3, breaker_cooldown=cooldown)
        results = []

        await backend.send_messages(
            paced(40, 0.05), fail_silently=True, on_result=results.append
        )

    assert len(results) == 40
    statuses = [result.status for result in results]
    failed = statuses.count(MessageStatus.FAILED)
    # Sessions: the refused ones, then exactly one that carried the rest.
    assert len(server.sessions) == down_for + 1
    assert greeted(server) == 1
    assert len(server.accepted) == statuses.count(MessageStatus.SENT) == 40 - failed
    # Failed fast meanwhile: more messages failed than connections refused.
    assert failed > down_for
    # Once one was sent, all the later ones were too (in order: one worker).
    first_sent = statuses.index(MessageStatus.SENT)
    assert set(statuses[first_sent:]) == {MessageStatus.SENT}
    assert set(statuses[:first_sent]) == {MessageStatus.FAILED}


class LimitedServer(ScriptServer):
    """A server that takes at most *limit* sessions at once: one more is
    answered 421 at the greeting (as Postfix's smtpd_client_connection_count_limit)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.refused = 0
        self.max_taken = 0

    def _pick(self, verb: str, subject: str, default: Act) -> Act:
        if verb == "CONNECT":
            if self.live > self.limit:
                self.refused += 1
                return reply("421 4.7.0 Too many connections from you", close=True)
            self.max_taken = max(self.max_taken, self.live)
        return super()._pick(verb, subject, default)


async def test_a_busy_server_is_back_pressure_not_unreachable() -> None:
    """Five connections wanted, the server takes two: the 421s make the pool
    stop growing and wait for its open connections. No retry is spent on
    them (retries=0) and the breaker never opens: everything is sent."""
    with LimitedServer(limit=2) as server:
        server.on(".", reply("250 2.0.0 OK", delay=0.02), times=None)
        backend = make_backend(server, max_connections=5, breaker_threshold=1)
        messages = [message(n) for n in range(1, 41)]

        assert await backend.send_messages(messages) == 40

    assert senders(server) == {f"sender{n}@example.com": 1 for n in range(1, 41)}
    assert server.refused >= 1  # the limit was hit...
    assert server.max_taken <= 2
    assert all(m.result is not None and m.result.attempts == 1 for m in messages)
