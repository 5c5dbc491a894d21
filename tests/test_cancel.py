"""Cancelling a send leaves every message it took with a true result.

A batch goes to the scripted server, which answers each end of data after
a random delay, and the send is cancelled at a random moment (seeded). Then
the results are reconciled with what the server recorded: accepted only if
the server accepted it; a message the server accepted is accepted or
unknown, never "not sent"; every message that reached the wire has a
result, published through on_result before the cancellation propagated,
and the cancellation propagates promptly.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

import anyio
import pytest

from asyncmail import EmailMessage, MessageResult, Outcome
from asyncmail.backends.smtp import EmailBackend
from scriptserver import ScriptServer, reply, settle

pytestmark = pytest.mark.anyio


def message(n: int) -> EmailMessage:
    return EmailMessage(
        f"Message {n}",
        f"Body {n}.\n" * (1 + n % 7) * 200,  # a few KB, some larger
        f"sender{n}@example.com",
        [f"rcpt{n}@example.com", f"copy{n}@example.com"],
        headers={"Message-ID": f"<{uuid.uuid4().hex}.{n}@cancel.example>"},
    )


def on_the_wire(server: ScriptServer) -> set[str]:
    """Senders whose MAIL FROM the server received."""
    found = set()
    for command in server.commands:
        if command.upper().startswith("MAIL FROM:<"):
            found.add(command[11 : command.index(">")])
    return found


SEEDS = range(10)


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("seed", SEEDS)
async def test_cancel_at_a_random_moment(seed: int, connections: int) -> None:
    chance = random.Random(seed * 7 + connections)
    with ScriptServer() as server:
        for _ in range(60):  # a random delay before each 250 at the end of data
            server.on(".", reply("250 2.0.0 OK", delay=chance.uniform(0, 0.04)))
        backend = EmailBackend(
            host=server.host,
            port=server.port,
            timeout=10,
            local_hostname="client.example",
            max_connections=connections,
            retries=0,
        )
        messages = [message(n) for n in range(1, 41)]
        published: list[MessageResult] = []

        cancel_after = chance.uniform(0.02, 0.5)
        with anyio.move_on_after(cancel_after) as scope:
            await backend.send_messages(
                messages, fail_silently=True, on_result=published.append
            )
        ended = anyio.current_time()
        cancelled_at = scope.deadline
        # Let the server finish whatever it received before the cancel.
        await settle(lambda: server.live == 0)

    assert scope.cancelled_caught or len(published) == len(messages)
    # Prompt: the handlers only record what is known, no waiting on the wire.
    assert ended - cancelled_at < 5.0

    # on_result once per message at most, and the same result as message.result.
    assert len({id(r) for r in published}) == len(published)
    assert Counter(id(r.message) for r in published).most_common(1)[0][1] == 1
    by_sender = {r.message.from_email: r for r in published}  # type: ignore[union-attr]
    for result in published:
        assert result.message is not None
        assert result.message.result is result

    accepted_by_server = Counter(item.mail_from for item in server.accepted)
    assert all(count == 1 for count in accepted_by_server.values())  # no duplicates
    wire = on_the_wire(server)
    for msg in messages:
        sender = msg.from_email
        result = by_sender.get(sender)
        if sender in wire:
            assert result is not None, f"{sender} reached the wire but has no result"
        if result is None:
            assert sender not in accepted_by_server
            continue
        outcomes = {r.outcome for r in result.recipients.values()}
        assert len(result.recipients) == 2
        assert len(outcomes) == 1  # both recipients share the message's fate
        (outcome,) = outcomes
        if sender in accepted_by_server:
            assert outcome in (Outcome.ACCEPTED, Outcome.UNKNOWN), (sender, result)
        else:
            assert outcome in (Outcome.TEMPORARY, Outcome.UNKNOWN), (sender, result)
        if outcome is Outcome.ACCEPTED:
            assert sender in accepted_by_server
        if outcome is Outcome.TEMPORARY:
            assert sender not in accepted_by_server
            if sender not in wire:
                assert "interrupted" in result.recipients[f"rcpt{sender[6:]}"].text


async def test_result_when_cancelled_waiting_for_the_final_reply() -> None:
    """Cancelled while the server holds its reply to the end of data: the
    message is unknown (it may be delivered), and the server did accept it."""
    with ScriptServer() as server:
        server.on(".", reply("250 2.0.0 OK", delay=0.5))
        backend = EmailBackend(
            host=server.host, port=server.port, local_hostname="client.example"
        )
        msg = message(1)
        published: list[MessageResult] = []
        with anyio.move_on_after(0.25):
            await backend.send_messages([msg], on_result=published.append)
        await settle(lambda: len(server.accepted) == 1)

    assert published == [msg.result]
    assert {r.outcome for r in msg.result.recipients.values()} == {  # type: ignore[union-attr]
        Outcome.UNKNOWN
    }
    assert len(server.accepted) == 1


async def test_result_when_cancelled_before_the_data() -> None:
    """Cancelled while the server holds its reply to RCPT: not sent, and the
    server never got the data."""
    with ScriptServer() as server:
        server.on("RCPT", reply("250 2.1.5 OK", delay=0.5))
        backend = EmailBackend(
            host=server.host, port=server.port, local_hostname="client.example"
        )
        msg = message(2)
        published: list[MessageResult] = []
        with anyio.move_on_after(0.25):
            await backend.send_messages([msg], on_result=published.append)
        await settle(lambda: server.live == 0)

    assert published == [msg.result]
    assert {r.outcome for r in msg.result.recipients.values()} == {  # type: ignore[union-attr]
        Outcome.TEMPORARY
    }
    assert server.accepted == []
    assert server.data == []
