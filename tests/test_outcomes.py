"""What a lost connection leaves behind: replies already received stand,
and only data whose end was written counts as unknown."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from asyncmail import EmailMessage, Outcome
from asyncmail.backends.smtp import EmailBackend
from scriptserver import CLOSE, Act, ScriptServer, reply

pytestmark = pytest.mark.anyio

PIPELINING = pytest.mark.parametrize(
    "pipelining", [True, False], ids=["pipelined", "sequential"]
)


def server_with(pipelining: bool, size: int = 10485760) -> ScriptServer:
    extensions = ["8BITMIME", "SMTPUTF8", f"SIZE {size}"]
    if pipelining:
        extensions.insert(0, "PIPELINING")
    return ScriptServer(tuple(extensions))


def make_backend(server: ScriptServer, **options: Any) -> EmailBackend:
    settings: dict[str, Any] = {
        "timeout": 20.0,
        "retries": 1,
        "retry_backoff": 0.01,
        "local_hostname": "client.example",
    }
    settings.update(options)
    return EmailBackend(host=server.host, port=server.port, **settings)


def message(to: list[str], body: str = "Body.\n") -> EmailMessage:
    return EmailMessage(
        "Subject",
        body,
        "sender@example.com",
        to,
        headers={"Message-ID": f"<{uuid.uuid4().hex}@outcomes.example>"},
    )


def rcpt_count(server: ScriptServer, address: str) -> int:
    return sum(1 for c in server.commands if c.lower() == f"rcpt to:<{address}>")


@PIPELINING
@pytest.mark.parametrize("lost_at", ["RCPT", "DATA"])
async def test_a_550_received_before_the_connection_was_lost_is_final(
    pipelining: bool, lost_at: str
) -> None:
    """a@ is refused 550, b@ accepted, then the connection drops (at c@'s
    RCPT, or at DATA). a@ is reported permanent with its 550 and never tried
    again; the others are retried and delivered."""
    with server_with(pipelining) as server:
        server.on("RCPT", reply("550 5.1.1 No such user"), match="<a@")
        if lost_at == "RCPT":
            server.on("RCPT", CLOSE, match="<c@")
        else:
            server.on("DATA", CLOSE)
        backend = make_backend(server)
        mail = message(["a@example.com", "b@example.com", "c@example.com"])

        assert await backend.send_messages([mail], fail_silently=True) == 1

    result = mail.result
    assert result is not None
    refused = result.recipients["a@example.com"]
    assert refused.outcome is Outcome.PERMANENT
    assert refused.code == 550
    assert refused.enhanced_status == "5.1.1"
    assert result.recipients["b@example.com"].outcome is Outcome.ACCEPTED
    assert result.recipients["c@example.com"].outcome is Outcome.ACCEPTED
    assert rcpt_count(server, "a@example.com") == 1  # never retried
    assert [item.rcpt_tos for item in server.accepted] == [
        ("b@example.com", "c@example.com")
    ]
    assert result.attempts == 2


@PIPELINING
async def test_a_4xx_received_before_the_loss_is_retried(pipelining: bool) -> None:
    with server_with(pipelining) as server:
        server.on("RCPT", reply("451 4.3.0 Try later"), match="<a@")
        server.on("DATA", CLOSE)
        backend = make_backend(server)
        mail = message(["a@example.com", "b@example.com"])

        assert await backend.send_messages([mail]) == 1

    assert mail.result is not None
    assert mail.result.ok
    assert rcpt_count(server, "a@example.com") == 2


BIG = 19 * 1024 * 1024


@pytest.mark.parametrize("retries", [0, 1])
async def test_large_body_dropped_mid_data_is_retryable(retries: int) -> None:
    """A 19 MB body; the server reads 64 KB of it and hangs up. Its end of
    data never left the client: the message is temporary (safe to retry),
    not unknown, and with a retry it is delivered once."""
    body = ("x" * 76 + "\n") * (BIG // 77)
    with server_with(pipelining=True, size=64 * 1024 * 1024) as server:
        server.on(".", Act(body_bytes=64 * 1024))
        backend = make_backend(server, retries=retries, deadline=60)
        mail = message(["rcpt@example.com"], body)

        sent = await backend.send_messages([mail], fail_silently=True)

    result = mail.result
    assert result is not None
    (outcome,) = result.recipients.values()
    if retries:
        assert sent == 1
        assert outcome.outcome is Outcome.ACCEPTED
        assert len(server.accepted) == 1
        assert len(server.accepted[0].data) > BIG
    else:
        assert sent == 0
        assert outcome.outcome is Outcome.TEMPORARY
        assert server.accepted == []


async def test_connection_lost_after_the_whole_body_is_unknown() -> None:
    """The counterpart: the server read everything, dot included, and hung
    up without a reply: unknown, and never resent."""
    with server_with(pipelining=True) as server:
        server.on(".", CLOSE)
        backend = make_backend(server, retries=2)
        mail = message(["rcpt@example.com"], "Small body.\n")

        assert await backend.send_messages([mail], fail_silently=True) == 0

    (outcome,) = mail.result.recipients.values()  # type: ignore[union-attr]
    assert outcome.outcome is Outcome.UNKNOWN
    assert server.count("DATA") == 1
