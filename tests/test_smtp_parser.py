"""The reply parser, byte by byte, with no socket: what complete replies it
yields for any split of the bytes, and which bytes it refuses."""

from __future__ import annotations

import pytest

from asyncmail import Outcome, SMTPResponseError
from asyncmail.smtp.parser import MAX_REPLY_LINE, MAX_REPLY_LINES, Reply, ReplyParser

STREAM = (
    b"250-mail.example.com greets you\r\n"
    b"250-PIPELINING\r\n"
    b"250 SIZE 1000\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
    b"550 5.1.1 <x@example.com>: no such user\r\n"
    b"250\r\n"
)
EXPECTED = [
    Reply(250, "mail.example.com greets you\nPIPELINING\nSIZE 1000"),
    Reply(354, "End data with <CR><LF>.<CR><LF>"),
    Reply(550, "5.1.1 <x@example.com>: no such user"),
    Reply(250, ""),
]


def parse(*chunks: bytes, expect: int) -> list[Reply]:
    parser = ReplyParser()
    parser.expect(expect)
    for chunk in chunks:
        parser.feed(chunk)
    return parser.take_all()


def test_one_feed() -> None:
    assert parse(STREAM, expect=4) == EXPECTED


@pytest.mark.parametrize("offset", range(1, len(STREAM)))
def test_split_at_every_offset(offset: int) -> None:
    assert parse(STREAM[:offset], STREAM[offset:], expect=4) == EXPECTED


def test_byte_by_byte() -> None:
    parser = ReplyParser()
    parser.expect(4)
    seen: list[Reply] = []
    for index in range(len(STREAM)):
        parser.feed(STREAM[index : index + 1])
        # A reply is complete exactly when its last line's LF arrives.
        seen.extend(parser.take_all())
        done = STREAM[: index + 1]
        assert len(seen) == sum(
            1 for line in done.split(b"\r\n")[:-1] if line[3:4] != b"-"
        )
    assert seen == EXPECTED
    assert parser.expected == 0


def test_replies_are_taken_in_order() -> None:
    parser = ReplyParser()
    parser.expect(2)
    parser.feed(b"250 one\r\n250 two\r\n")
    assert parser.next_reply() == Reply(250, "one")
    assert parser.next_reply() == Reply(250, "two")
    assert parser.next_reply() is None


def test_bare_lf_line_ends_are_accepted() -> None:
    assert parse(b"250-a\n250 b\n", expect=1) == [Reply(250, "a\nb")]


def test_text_is_decoded_leniently() -> None:
    assert parse(b"250 caf\xc3\xa9 \xff\r\n", expect=1) == [
        Reply(250, "caf\u00e9 \ufffd")
    ]


def test_reply_properties() -> None:
    reply = Reply(452, "4.5.3 Too many recipients")
    assert reply.enhanced_status == "4.5.3"
    assert reply.outcome is Outcome.TEMPORARY
    assert not reply.positive
    assert str(reply) == "452 4.5.3 Too many recipients"
    assert Reply(550, "no status").enhanced_status is None
    assert Reply(550, "5.1.1").outcome is Outcome.PERMANENT
    assert Reply(354, "go").outcome is Outcome.ACCEPTED
    assert Reply(250, "ok").positive


@pytest.mark.parametrize(
    "data",
    [
        b"25 short code\r\n",
        b"2x0 letters\r\n",
        b"abc text\r\n",
        b"250_bad separator\r\n",
        b"\r\n",
        b" 250 leading space\r\n",
        b"\xb2\xb5\xb0 not ascii digits\r\n",
    ],
)
def test_malformed_lines_are_refused(data: bytes) -> None:
    parser = ReplyParser()
    parser.expect(1)
    with pytest.raises(SMTPResponseError, match="Malformed reply"):
        parser.feed(data)


def test_mixed_continuation_codes_are_refused() -> None:
    parser = ReplyParser()
    parser.expect(1)
    with pytest.raises(SMTPResponseError, match="different codes"):
        parser.feed(b"250-first\r\n251 second\r\n")


def test_mixed_codes_split_across_feeds_are_refused() -> None:
    parser = ReplyParser()
    parser.expect(1)
    parser.feed(b"250-first\r\n")
    with pytest.raises(SMTPResponseError, match="different codes"):
        parser.feed(b"550 second\r\n")


def test_overlong_complete_line_is_refused() -> None:
    parser = ReplyParser()
    parser.expect(1)
    with pytest.raises(SMTPResponseError, match="overlong"):
        parser.feed(b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n")


def test_longest_line_is_accepted() -> None:
    line = b"250 " + b"x" * (MAX_REPLY_LINE - 4)
    assert parse(line[:100], line[100:] + b"\r\n", expect=1) == [
        Reply(250, "x" * (MAX_REPLY_LINE - 4))
    ]


def test_overlong_partial_line_fails_before_its_end_arrives() -> None:
    """A line that never ends must not be buffered without bound."""
    parser = ReplyParser()
    parser.expect(1)
    parser.feed(b"250 " + b"x" * (MAX_REPLY_LINE - 10))
    with pytest.raises(SMTPResponseError, match="overlong"):
        parser.feed(b"x" * 20)


def test_endless_multiline_reply_is_refused() -> None:
    parser = ReplyParser()
    parser.expect(1)
    parser.feed(b"250-line\r\n" * (MAX_REPLY_LINES - 1))
    with pytest.raises(SMTPResponseError, match="endless"):
        parser.feed(b"250-line\r\n" * 2)


def test_longest_multiline_reply_is_accepted() -> None:
    data = b"250-line\r\n" * (MAX_REPLY_LINES - 1) + b"250 last\r\n"
    (reply,) = parse(data, expect=1)
    assert reply.text.count("\n") == MAX_REPLY_LINES - 1


def test_custom_bounds() -> None:
    parser = ReplyParser(max_line=10, max_lines=2)
    parser.expect(2)
    parser.feed(b"250-a\r\n250 b\r\n")
    with pytest.raises(SMTPResponseError, match="endless"):
        parser.feed(b"250-a\r\n250-b\r\n250-c\r\n")
    parser = ReplyParser(max_line=10)
    parser.expect(1)
    with pytest.raises(SMTPResponseError, match="overlong"):
        parser.feed(b"250 0123456789\r\n")


def test_unsolicited_data_is_refused() -> None:
    parser = ReplyParser()
    with pytest.raises(SMTPResponseError, match="Unsolicited data"):
        parser.feed(b"220 hello?\r\n")


def test_unsolicited_partial_line_is_refused() -> None:
    parser = ReplyParser()
    with pytest.raises(SMTPResponseError, match="Unsolicited"):
        parser.feed(b"2")


def test_more_replies_than_commands_are_refused_and_earlier_ones_stand() -> None:
    parser = ReplyParser()
    parser.expect(1)
    with pytest.raises(SMTPResponseError, match="more replies than commands"):
        parser.feed(b"250 mine\r\n250 extra\r\n")
    # The reply that was due was said, and it stands.
    assert parser.take_all() == [Reply(250, "mine")]


def test_bytes_after_the_last_expected_reply_are_refused() -> None:
    parser = ReplyParser()
    parser.expect(1)
    with pytest.raises(SMTPResponseError, match="more replies than commands"):
        parser.feed(b"250 mine\r\n2")
    assert parser.take_all() == [Reply(250, "mine")]


def test_replies_before_a_malformed_one_stand() -> None:
    parser = ReplyParser()
    parser.expect(3)
    with pytest.raises(SMTPResponseError, match="Malformed"):
        parser.feed(b"250 ok\r\n550 5.1.1 no\r\nxyz\r\n")
    assert parser.take_all() == [Reply(250, "ok"), Reply(550, "5.1.1 no")]


def test_expectations_add_up_across_writes() -> None:
    parser = ReplyParser()
    parser.expect(1)
    parser.feed(b"250 a\r\n")
    parser.expect(2)
    parser.feed(b"250 b\r\n250 c\r\n")
    assert [r.text for r in parser.take_all()] == ["a", "b", "c"]
    assert parser.expected == 0
