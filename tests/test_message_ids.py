"""Message-IDs and MIME boundaries: unguessable, and named after this host.

They come from the secure random source (seeding ``random`` changes
nothing), and the host's FQDN in them is looked up off the event loop.
"""

from __future__ import annotations

import random
import re
import socket
import threading

import pytest

import asyncmail
import asyncmail.dnsname
from asyncmail import (
    EmailMessage,
    MessageStatus,
    Outcome,
)
from asyncmail.testing import Outbox

pytestmark = pytest.mark.anyio

TEMPORARY, PERMANENT = Outcome.TEMPORARY, Outcome.PERMANENT


# -- the FQDN is looked up off the event loop --------------------------------


async def test_fqdn_is_looked_up_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, mailoutbox: Outbox
) -> None:
    callers: list[threading.Thread] = []

    def getfqdn(name: str = "") -> str:
        callers.append(threading.current_thread())
        return "host.regressions.example"

    monkeypatch.setattr(asyncmail.dnsname, "_fqdn", None)
    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    with asyncmail.collect_results() as results:
        assert await asyncmail.asend_mail(
            "Subject", "Body", "sender@example.com", ["rcpt@example.com"]
        )

    assert callers, "socket.getfqdn was not called"
    assert threading.current_thread() not in callers
    [sent] = mailoutbox.assert_sent(count=1, to="rcpt@example.com")
    (result,) = results
    assert result.status is MessageStatus.SENT
    assert result.message_id is not None
    assert result.message_id.endswith("@host.regressions.example>")
    assert mailoutbox.parsed(sent)["Message-ID"] == result.message_id
    assert result.message_id.endswith("@host.regressions.example>")


# -- boundaries and Message-IDs from the secure random source ---------------

BOUNDARY = re.compile(rb'boundary="===([0-9a-f]+)==="')


def test_boundaries_and_message_ids_do_not_come_from_random() -> None:
    msg = EmailMessage("Subject", "Body\n", "sender@example.com", ["rcpt@example.com"])
    msg.attach("notes.txt", "some notes\n", "text/plain")
    state = random.getstate()
    try:
        random.seed(0)
        first = msg.render()
        random.seed(0)
        second = msg.render()
    finally:
        random.setstate(state)

    boundaries = [BOUNDARY.findall(r.data) for r in (first, second)]
    assert all(len(found) == 1 for found in boundaries)
    (one,), (two,) = boundaries
    assert len(one) == len(two) == 32
    assert one != two
    # <time.pid.random@domain>: the random parts differ too.
    assert first.message_id is not None
    assert second.message_id is not None
    left = [
        m.strip("<>").split("@")[0].split(".")
        for m in (first.message_id, second.message_id)
    ]
    assert left[0][2] != left[1][2]
