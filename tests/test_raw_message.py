"""RawMessage is its own kind of message, not an EmailMessage.

Everything an EmailMessage can be told to change (body, subject, headers,
attachments, alternatives, subtypes) is either meaningful on a RawMessage
(the envelope: from_email, to, cc, bcc) or an AttributeError saying what to
do instead: nothing set on it is silently not sent. And every path that sends
or stores messages still takes a RawMessage whole (SMTP, locmem and the test
outbox, the queue's rows, attached as message/rfc822, blocking send()).
"""

from __future__ import annotations

import copy
import pickle
import tracemalloc
from collections import UserString
from collections.abc import Iterator
from typing import Any

import pytest

import asyncmail
from asyncmail import EmailMessage, EmailMultiAlternatives, RawMessage
from asyncmail.backends.locmem import EmailBackend as LocmemBackend
from asyncmail.backends.smtp import EmailBackend as SMTPBackend
from asyncmail.exceptions import BadHeaderError, InvalidMessageError
from asyncmail.message import BaseMessage
from asyncmail.queue import prepare
from asyncmail.testing import capture_mail
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio

DATA = (
    b"From: Author <author@example.com>\r\n"
    b"To: list@example.com\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from\r\n"
    b" the raw side\r\n"
    b"Message-ID: <raw@example.com>\r\n"
    b"\r\n"
    b"Body.\r\n"
)
SUBJECT = "Grüße from the raw side"


def raw(**kwargs: Any) -> RawMessage:
    kwargs.setdefault("to", ["to@example.com"])
    return RawMessage(DATA, "bounce@example.com", **kwargs)


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    with SMTPServer() as running:
        yield running


def smtp(server: SMTPServer) -> SMTPBackend:
    return SMTPBackend(host="127.0.0.1", port=server.port, timeout=10, retries=0)


def model_names() -> set[str]:
    """The public names an EmailMultiAlternatives has beyond a BaseMessage:
    its methods and class attributes, and the attributes of an instance."""
    composed = EmailMultiAlternatives("s", "b", "f@example.com", ["t@example.com"])
    names = {n for n in dir(composed) if not n.startswith("_")}
    names |= {n for n in vars(composed) if not n.startswith("_")}
    base = BaseMessage("f@example.com", ["t@example.com"])
    return names - set(dir(base)) - set(vars(base))


def test_it_is_a_sendable_message_but_not_an_email_message() -> None:
    message = raw()
    assert isinstance(message, BaseMessage)
    assert not isinstance(message, EmailMessage)
    assert issubclass(EmailMessage, BaseMessage)


def test_the_model_names_are_found() -> None:
    # The introspection below is not vacuous: the known mutators are in it.
    assert {
        "attach",
        "attach_file",
        "aattach_file",
        "attach_inline",
        "attach_inline_file",
        "aattach_inline_file",
        "attach_alternative",
        "body",
        "attachments",
        "inline_attachments",
        "alternatives",
        "extra_headers",
        "reply_to",
        "content_subtype",
        "encoding",
        "mixed_subtype",
        "alternative_subtype",
    } <= model_names()


@pytest.mark.parametrize("name", sorted(model_names() - {"subject"}))
def test_every_model_name_is_a_clear_error_to_read(name: str) -> None:
    with pytest.raises(AttributeError, match="EmailMessage") as info:
        getattr(raw(), name)
    assert f"RawMessage has no {name!r}" in str(info.value)
    assert info.value.name == name


@pytest.mark.parametrize("name", sorted(model_names()))
def test_every_model_name_is_a_clear_error_to_set(name: str) -> None:
    message = raw()
    with pytest.raises(AttributeError, match="sent exactly as its data gives it"):
        setattr(message, name, "changed")
    assert message.render().data == DATA


def test_attach_is_refused_before_anything_is_lost() -> None:
    message = raw()
    with pytest.raises(AttributeError, match="build an EmailMessage"):
        message.attach("a.txt", "text", "text/plain")  # type: ignore[attr-defined]
    assert message.as_bytes() == DATA


def test_subject_reads_the_subject_the_bytes_carry() -> None:
    assert raw().subject == SUBJECT
    assert RawMessage(b"X-A: b\r\n\r\nbody\r\n").subject == ""
    assert RawMessage(b"Subject: lf only\n\nbody\n").subject == "lf only"


def test_other_attributes_are_still_ordinary() -> None:
    # Per-message queue options are set as attributes (see prepare()).
    message = raw()
    message.idempotency_key = "key-1"  # type: ignore[attr-defined]
    assert message.idempotency_key == "key-1"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="no attribute 'nothing_like_it'"):
        message.nothing_like_it  # type: ignore[attr-defined]  # noqa: B018


async def test_envelope_changes_are_sent_and_the_bytes_are_not_touched(
    server: SMTPServer,
) -> None:
    message = raw()
    message.from_email = "other-bounce@example.com"
    message.to = ["a@example.com"]
    message.cc = ["c@example.com"]
    message.bcc.append("hidden@example.com")

    assert await smtp(server).send_messages([message]) == 1

    (received,) = server.messages
    assert received.data == DATA
    assert received.mail_from == "other-bounce@example.com"
    assert received.rcpt_tos == ["a@example.com", "c@example.com", "hidden@example.com"]
    assert message.result is not None
    assert message.result.message_id == "<raw@example.com>"


def test_blocking_send_freezes_lazy_addresses(server: SMTPServer) -> None:
    message = raw(to=[UserString("lazy@example.com")])
    message.connection = smtp(server)

    assert message.send() == 1

    (received,) = server.messages
    assert received.rcpt_tos == ["lazy@example.com"]
    assert message.to == ["lazy@example.com"]
    assert type(message.to[0]) is str


async def test_no_recipients_is_a_skipped_result_not_a_send() -> None:
    message = raw(to=[])
    assert await message.asend() == 0
    assert message.result is not None
    assert message.result.recipients == {}


async def test_locmem_keeps_a_copy_in_the_outbox() -> None:
    message = raw()
    asyncmail.outbox.clear()
    try:
        assert await LocmemBackend().send_messages([message]) == 1
        (stored,) = asyncmail.outbox
        assert isinstance(stored, RawMessage)
        assert stored is not message
        assert stored.as_bytes() == DATA
        assert stored.recipients() == ["to@example.com"]
    finally:
        asyncmail.outbox.clear()


async def test_the_test_outbox_matches_a_raw_message() -> None:
    with capture_mail() as outbox:
        assert await raw().asend() == 1
    outbox.assert_sent(to="to@example.com", subject=SUBJECT, body="Body.")
    assert outbox.sent_bytes(outbox.last) == DATA


def test_the_queue_row_holds_the_bytes_and_the_subject() -> None:
    message = raw(bcc=["hidden@example.com"])
    message.idempotency_key = "raw-key"  # type: ignore[attr-defined]
    row = prepare(message)
    assert row.key == "raw-key"
    assert row.data == DATA
    assert row.subject == SUBJECT
    assert row.recipients == ["to@example.com", "hidden@example.com"]


def test_attached_as_a_message_it_is_included_as_given() -> None:
    outer = EmailMessage("Fwd", "see attached", "f@example.com", ["t@example.com"])
    outer.attach("fwd.eml", raw(), "message/rfc822")
    data = outer.as_bytes()
    assert DATA in data
    head = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n"
    assert head in data


def test_message_parses_the_bytes_whatever_the_policy() -> None:
    import email.policy

    assert raw().message()["Subject"] == SUBJECT
    # Raw bytes are never re-encoded: a 7-bit policy still parses them.
    eight_bit = RawMessage(b"Subject: x\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n", "f@x.com")
    parsed = eight_bit.message(policy=email.policy.default.clone(cte_type="7bit"))
    assert parsed.get_payload(decode=True) == "Grüße\n".encode()
    # Header text is shown as the bytes give it, also with SMTPUTF8.
    utf8 = raw().message(policy=email.policy.SMTPUTF8)
    assert "=?utf-8?q?Gr=C3=BC=C3=9Fe?=" in utf8.as_string()


def test_copies_and_pickles_keep_data_and_envelope() -> None:
    message = raw(bcc=["b@example.com"])
    message.connection = LocmemBackend()
    pickled = pickle.loads(pickle.dumps(message))  # noqa: S301 - our own bytes
    for clone in (copy.deepcopy(message), pickled):
        assert isinstance(clone, RawMessage)
        assert clone.data == DATA
        assert clone.recipients() == ["to@example.com", "b@example.com"]
        assert clone.subject == SUBJECT
    assert pickled.connection is None


# -- checked once, at construction ------------------------------------------------
#
# The data and the envelope are checked when the message is made, and a send
# reuses that check; whatever changes afterwards is what is checked and sent.


async def test_data_replaced_after_construction_is_the_data_checked_and_sent(
    server: SMTPServer,
) -> None:
    message = raw()
    message.data = DATA.replace(b"<raw@example.com>", b"<second@example.com>")

    assert await smtp(server).send_messages([message]) == 1

    (received,) = server.messages
    assert received.data == message.data
    assert message.result is not None
    assert message.result.message_id == "<second@example.com>"


async def test_a_bcc_header_added_after_construction_is_refused(
    server: SMTPServer,
) -> None:
    message = raw()
    message.render()  # checked and fine
    message.data = DATA.replace(b"Subject:", b"Bcc: secret@example.com\r\nSubject:")

    with pytest.raises(asyncmail.BadHeaderError):
        message.render()
    with pytest.raises(asyncmail.BadHeaderError):
        await smtp(server).send_messages([message])

    assert server.messages == []
    assert b"secret" not in server.recorder.wire


async def test_an_address_made_invalid_after_construction_is_refused(
    server: SMTPServer,
) -> None:
    message = raw(to=["fine@example.com"])
    assert message.envelope() == ("bounce@example.com", ["fine@example.com"])
    message.to.append("bad\r\nRCPT TO:<injected@example.com>")

    with pytest.raises(asyncmail.InvalidAddressError):
        message.envelope()
    with pytest.raises(asyncmail.InvalidAddressError):
        await smtp(server).send_messages([message])

    assert server.messages == []
    assert b"injected" not in server.recorder.wire


@pytest.mark.parametrize(
    "change",
    [
        lambda m: setattr(m, "from_email", "Other <other@example.com>"),
        lambda m: m.to.insert(0, "first@example.com"),
        lambda m: setattr(m, "cc", ["to@example.com", "cc@example.com"]),
        lambda m: m.bcc.extend(["b@example.com", "B@example.com"]),
        lambda m: m.to.clear(),
    ],
    ids=["from", "to-insert", "cc-set", "bcc-extend", "to-clear"],
)
def test_every_envelope_change_gives_the_envelope_of_a_new_message(
    change: Any,
) -> None:
    message = raw()
    message.envelope()
    change(message)
    fresh = RawMessage(DATA, message.from_email, message.to, bcc=message.bcc)
    fresh.cc = list(message.cc)

    assert message.envelope() == fresh.envelope() == BaseMessage.envelope(fresh)


def test_a_subclass_computing_its_recipients_is_addressed_by_them() -> None:
    class Routed(RawMessage):
        route = "first@example.com"

        def recipients(self) -> list[Any]:
            return [self.route]

    message = Routed(DATA, "bounce@example.com", ["to@example.com"])
    assert message.envelope()[1] == ["first@example.com"]
    message.route = "second@example.com"
    assert message.envelope()[1] == ["second@example.com"]


def test_recipients_replaced_on_the_instance_address_the_message() -> None:
    message = raw()
    assert message.envelope()[1] == ["to@example.com"]
    message.recipients = lambda: ["instead@example.com"]  # type: ignore[method-assign]
    assert message.envelope()[1] == ["instead@example.com"]


def test_the_envelope_returned_is_the_callers_to_change() -> None:
    message = raw()
    message.envelope()[1].append("intruder@example.com")
    assert message.envelope()[1] == ["to@example.com"]


def test_bare_line_feeds_are_normalised_whether_checked_early_or_late() -> None:
    lf = DATA.replace(b"\r\n", b"\n")
    message = RawMessage(lf, "bounce@example.com", ["to@example.com"])
    assert message.render().data == DATA
    message.data = lf.replace(b"Body.", b"Other body.")
    assert message.render().data == DATA.replace(b"Body.", b"Other body.")


def test_a_pickled_copy_is_checked_again_where_it_is_loaded() -> None:
    message = raw()
    clone = pickle.loads(pickle.dumps(message))  # noqa: S301 - our own bytes
    assert clone.render().data == DATA
    assert clone.envelope() == message.envelope()
    clone.data = DATA + b"\0"
    with pytest.raises(asyncmail.InvalidMessageError, match="NUL"):
        clone.render()


def test_data_that_needs_normalising_is_not_held_twice() -> None:
    # 8 MB of bare line feeds: the CRLF copy is made when it is sent, not
    # kept alongside the original from construction on.
    lf = DATA.replace(b"\r\n", b"\n") + b"line of the body\n" * 500_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        message = RawMessage(lf, "bounce@example.com", ["to@example.com"])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, held
    assert message.render().data.count(b"\r\n") == lf.count(b"\n")


class _Archived(BaseMessage):
    """A mixin after RawMessage in the order: its envelope() adds a copy."""

    archive: list[str]

    def envelope(self) -> tuple[str, list[str]]:
        sender, recipients = super().envelope()
        return sender, recipients + list(self.archive)


def test_a_mixins_envelope_is_the_envelope() -> None:
    class Archived(RawMessage, _Archived):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.archive = ["archive@example.com"]  # set after the base's init

    message = Archived(DATA, "bounce@example.com", ["to@example.com"])
    assert message.envelope()[1] == ["to@example.com", "archive@example.com"]
    message.archive = ["other@example.com"]
    assert message.envelope()[1] == ["to@example.com", "other@example.com"]


def test_a_subclass_whose_addresses_are_not_ready_yet_still_constructs() -> None:
    class Team(RawMessage):
        @property  # type: ignore[override]
        def cc(self) -> list[str]:
            return [f"{name}@example.com" for name in self.members]

        @cc.setter
        def cc(self, value: list[str]) -> None:
            pass

        def __init__(self, *args: Any, members: list[str], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # cc read before members exist
            self.members = members

    message = Team(DATA, "bounce@example.com", ["to@example.com"], members=["ann"])
    assert message.envelope()[1] == ["to@example.com", "ann@example.com"]


def test_recipients_patched_on_the_base_class_address_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = raw()
    message.envelope()
    monkeypatch.setattr(
        BaseMessage, "recipients", lambda self: ["redirect@example.com"]
    )
    assert message.envelope()[1] == ["redirect@example.com"]
    monkeypatch.undo()
    assert message.envelope()[1] == ["to@example.com"]


def test_an_iterator_given_as_the_recipients_is_read_once_like_before() -> None:
    message = raw()
    message.to = iter(["other@example.com"])  # type: ignore[assignment]
    assert message.envelope() == ("bounce@example.com", ["other@example.com"])


def test_data_replaced_lets_the_old_bytes_go() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        big = DATA + b"line of the body\r\n" * 500_000  # 9 MB, clean CRLF
        message = RawMessage(big, "bounce@example.com", ["to@example.com"])
        message.render()
        message.data = DATA
        del big
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, held
    assert message.render().data == DATA


def test_big_data_is_checked_when_sent_and_refused_then() -> None:
    # Over the size checked on the event loop: the constructor leaves the
    # check to render() (run in a thread by the backends).
    data = DATA + b"line of the body\r\n" * 20_000 + b"\0\r\n"
    message = RawMessage(data, "bounce@example.com", ["to@example.com"])
    with pytest.raises(asyncmail.InvalidMessageError, match="NUL"):
        message.render()
    message.data = data.replace(b"\0", b"")
    assert message.render().data == message.data


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: Hi\r\nMessage-ID: <a@example.com>\r\n\r\nBody\r\n",
        b"Subject: Hi\nMessage-ID: <b@example.com>\n\nBare\nfeeds\n",
        b"Subject: caf\xc3\xa9\r\n\r\ncaf\xc3\xa9\r\n",
    ],
)
def test_render_raw_renders_bytes_as_a_raw_message_does(data: bytes) -> None:
    """render_raw (bytes with no message made of them, e.g. Django's
    serialisation) gives what RawMessage.render gives, refusals included."""
    from asyncmail.message.raw import render_raw

    expected = RawMessage(data, "a@example.com", ["b@example.com"]).render()
    got = render_raw(data)
    assert (got.data, got.eight_bit, got.smtputf8, got.message_id) == (
        expected.data,
        expected.eight_bit,
        expected.smtputf8,
        expected.message_id,
    )
    if expected.eight_bit:
        with pytest.raises(InvalidMessageError, match="8-bit"):
            render_raw(data, allow_8bit=False)
    else:
        assert render_raw(data, allow_8bit=False).data == expected.data


def test_render_raw_refuses_what_a_raw_message_refuses() -> None:
    from asyncmail.message.raw import render_raw

    with pytest.raises(BadHeaderError):
        render_raw(b"Bcc: hidden@example.com\r\nSubject: x\r\n\r\nbody\r\n")
    with pytest.raises(InvalidMessageError):
        render_raw(b"Subject: x\r\n\r\nnul\x00byte\r\n")
