"""The envelope: what MAIL FROM and RCPT TO carry, and a send with nobody
to send to.

An address only the envelope holds (a Bcc, a sender that differs from the
From header) decides SMTPUTF8 as much as the headers do, and a send with
no recipient at all records a SKIPPED result instead of returning early.
"""

from __future__ import annotations

import pytest

import asyncmail
import asyncmail.dnsname
from asyncmail import (
    EmailMessage,
    MessageStatus,
    Outcome,
    SMTPNotSupportedError,
)
from helpers import (
    mail_commands,
    make_backend,
    message,
    outcomes,
    result_of,
    scripted,
)

pytestmark = pytest.mark.anyio

TEMPORARY, PERMANENT = Outcome.TEMPORARY, Outcome.PERMANENT


# -- SMTPUTF8 from the envelope ---------------------------------------------

UTF8_CASES = pytest.mark.parametrize(
    "where", ["bcc", "hidden-from"], ids=["non-ascii-bcc", "non-ascii-envelope-from"]
)


def utf8_message(where: str) -> EmailMessage:
    """Only the envelope has a non-ASCII local part: the headers are ASCII."""
    if where == "bcc":
        return message(1, bcc=["jörg@example.com"])
    return message(1, from_email="jörg@example.com", headers={"From": "a@example.com"})


@UTF8_CASES
async def test_non_ascii_envelope_address_uses_smtputf8(where: str) -> None:
    with scripted() as server:
        msg = utf8_message(where)
        assert msg.as_bytes().isascii()  # nothing in the headers needs it

        assert await make_backend(server).send_messages([msg]) == 1

    (command,) = mail_commands(server)
    assert command.endswith(" SMTPUTF8")
    (accepted,) = server.accepted
    if where == "bcc":
        assert accepted.rcpt_tos == ("rcpt1@example.com", "jörg@example.com")
        assert "jörg".encode() not in accepted.data  # Bcc stays hidden
    else:
        assert accepted.mail_from == "jörg@example.com"
        assert b"From: a@example.com\r\n" in accepted.data
    assert result_of(msg).status is MessageStatus.SENT


@UTF8_CASES
async def test_non_ascii_envelope_address_without_smtputf8(where: str) -> None:
    with scripted(smtputf8=False) as server:
        msg = utf8_message(where)
        backend = make_backend(server, retries=2)

        with pytest.raises(SMTPNotSupportedError, match="SMTPUTF8") as info:
            await backend.send_messages([msg])
        assert not isinstance(info.value, UnicodeError)
        assert await backend.send_messages([msg], fail_silently=True) == 0

    assert info.value.sent == 0
    assert server.count("MAIL") == 0  # refused before anything was sent
    assert server.accepted == []
    result = result_of(msg)
    assert isinstance(result.error, SMTPNotSupportedError)
    assert set(outcomes(msg).values()) == {PERMANENT}
    assert result.attempts == 1


# -- nobody to send to ---------------------------------------------------------


async def test_a_send_with_nobody_to_send_to_records_skipped() -> None:
    """asend() and asend_mail() returned 0 early and left no (or a stale)
    result, though every send records one."""
    asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")
    mail = message(1)
    assert await mail.asend() == 1
    assert result_of(mail).status is MessageStatus.SENT
    mail.to = []
    assert await mail.asend() == 0
    assert result_of(mail).status is MessageStatus.SKIPPED

    with asyncmail.collect_results() as collected:
        assert await asyncmail.asend_mail("s", "b", "from@example.com", []) == 0
    assert [r.status for r in collected] == [MessageStatus.SKIPPED]
