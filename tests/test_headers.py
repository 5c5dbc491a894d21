"""asyncmail.headers: injection checks, RFC 2047 encoded words, folding and
RFC 2231 parameters, checked against exact output and a standard parser."""

from __future__ import annotations

import email.policy
import re
from email.parser import BytesParser

import pytest

from asyncmail import BadHeaderError
from asyncmail.headers import (
    LINE_SEPARATORS,
    check_header_name,
    check_no_line_separators,
    encode_phrase,
    encode_words,
    fold,
    format_unstructured,
)
from asyncmail.mimeparams import format_parameter

SEPARATORS = [
    pytest.param(char, id=f"U+{ord(char):04X}") for char in LINE_SEPARATORS
] + [pytest.param("\r\n", id="CRLF")]


def parse_field(lines: str) -> email.message.EmailMessage:
    """Parse rendered header lines (plus an empty body) with the stdlib."""
    parsed = BytesParser(policy=email.policy.default).parsebytes(
        lines.encode("ascii") + b"\r\n"
    )
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def decoded(name: str, lines: str) -> str:
    return str(parse_field(lines)[name])


def assert_well_formed(lines: str, limit: int = 78) -> None:
    """CRLF-ended ASCII lines, continuation lines starting with whitespace,
    none longer than *limit*, except that the first may hold the field name
    and one whole encoded word (75 characters)."""
    assert lines.isascii()
    assert lines.endswith("\r\n")
    assert re.search(r"\r(?!\n)|(?<!\r)\n", lines) is None
    first, *rest = lines[:-2].split("\r\n")
    name_length = first.index(":")
    assert len(first) <= max(limit, name_length + 2 + 75), first
    assert all(len(line) <= limit for line in rest), rest
    assert all(line[:1] in (" ", "\t") for line in rest)


# -- line separators -----------------------------------------------------------


def test_line_separators_are_every_character_mail_software_breaks_lines_at() -> None:
    assert LINE_SEPARATORS == "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@pytest.mark.parametrize("separator", SEPARATORS)
@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_line_separator_anywhere_in_a_value_raises_naming_the_header(
    separator: str, position: str
) -> None:
    value = {
        "start": f"{separator}Bcc: victim@example.com",
        "middle": f"Hello{separator}Bcc: victim@example.com",
        "end": f"Hello{separator}",
    }[position]
    with pytest.raises(BadHeaderError, match="'X-Note'") as excinfo:
        check_no_line_separators("X-Note", value)
    assert excinfo.value.header == "X-Note"
    with pytest.raises(BadHeaderError) as excinfo:
        format_unstructured("Subject", value)
    assert excinfo.value.header == "Subject"


def test_bad_header_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="newlines"):
        check_no_line_separators("Subject", "a\nb")


# -- header names ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Subject", "X-Mailer", "x", "List-Unsubscribe-Post", "X" * 76, "A!#~"]
)
def test_valid_header_names_pass(name: str) -> None:
    assert check_header_name(name) is None
    assert format_unstructured(name, "v") == f"{name}: v\r\n"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "X Y",
        "X:Y",
        "X-Ä",
        "X\tY",
        "X\r\nBcc",
        "X\nBcc",
        "X\x00",
        "X\x7f",
        "X\u2028",
        "X" * 77,
    ],
)
def test_invalid_header_names_raise(name: str) -> None:
    with pytest.raises(BadHeaderError, match="Invalid header name") as excinfo:
        check_header_name(name)
    assert excinfo.value.header == name


def test_non_str_header_name_raises() -> None:
    with pytest.raises(BadHeaderError, match="must be str, not bytes"):
        check_header_name(b"X-Bytes")  # type: ignore[arg-type]


# -- unstructured headers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Hello", "Subject: Hello\r\n"),
        ("", "Subject:\r\n"),
        ("a\tb", "Subject: a\tb\r\n"),
        ("Héllo wörld", "Subject: =?utf-8?q?H=C3=A9llo_w=C3=B6rld?=\r\n"),
        ("Hello wörld", "Subject: Hello =?utf-8?q?w=C3=B6rld?=\r\n"),
        ("a\x00b", "Subject: =?utf-8?q?a=00b?=\r\n"),
        ("x\x7f", "Subject: =?utf-8?q?x=7F?=\r\n"),
        ("x\x1b[31m", "Subject: =?utf-8?q?x=1B=5B31m?=\r\n"),
        (" lead", "Subject: =?utf-8?q?_lead?=\r\n"),
        ("trail ", "Subject: =?utf-8?q?trail_?=\r\n"),
        (
            "日本語のテキスト",
            "Subject: =?utf-8?b?5pel5pys6Kqe44Gu44OG44Kt44K544OI?=\r\n",
        ),
        (
            "see =?utf-8?q?x?= here",
            "Subject: see =?utf-8?b?PT91dGYtOD9xP3g/PQ==?= here\r\n",
        ),
    ],
)
def test_unstructured_exact_output(value: str, expected: str) -> None:
    rendered = format_unstructured("Subject", value)
    assert rendered == expected
    assert decoded("Subject", rendered) == value


@pytest.mark.parametrize(
    "value",
    [
        "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x1f\x7f",
        "\x80\x9f\xa0 non-breaking\u00a0space",
        "zero\u200bwidth and \ufeff BOM",
        "emoji 😀 and astral 𝄞",
        "tab\there and\t\ttabs",
    ],
)
def test_control_and_odd_characters_never_appear_raw(value: str) -> None:
    rendered = format_unstructured("Subject", value)
    assert_well_formed(rendered)
    assert re.search(r"[\x00-\x08\x0a-\x1f\x7f]", rendered.replace("\r\n", "")) is None
    assert decoded("Subject", rendered) == value


def test_text_that_looks_like_an_encoded_word_is_carried_literally() -> None:
    for value in ["=?utf-8?q?Hi?=", "=?", "a=?b", "?= =?"]:
        rendered = format_unstructured("Subject", value)
        assert "=?" not in value or rendered != f"Subject: {value}\r\n"
        assert decoded("Subject", rendered) == value


def test_leading_trailing_and_long_whitespace_survive() -> None:
    for value in [
        "  two leading",
        "two trailing  ",
        "\tlead tab",
        "a" + " " * 60 + "b",
    ]:
        rendered = format_unstructured("X-Note", "word " * 20 + value)
        assert_well_formed(rendered)
        assert decoded("X-Note", rendered) == "word " * 20 + value


def test_long_ascii_text_is_folded_at_whitespace_and_unfolds_exactly() -> None:
    value = " ".join(f"word{number}" for number in range(60))
    rendered = format_unstructured("Subject", value)
    assert_well_formed(rendered)
    assert rendered.count("\r\n") > 1
    # Folding only inserted CRLF before existing whitespace.
    assert rendered[len("Subject: ") :].replace("\r\n", "") == value + ""
    assert decoded("Subject", rendered) == value


def test_long_words_become_encoded_words_of_at_most_75_characters() -> None:
    for value in ["x" * 2000, "é" * 700, "日本" * 300, "a" * 801]:
        rendered = format_unstructured("Subject", value)
        assert_well_formed(rendered)
        words = re.findall(r"=\?utf-8\?[qb]\?[^?]*\?=", rendered)
        assert words
        assert all(len(word) <= 75 for word in words)
        assert decoded("Subject", rendered) == value


def test_800_character_word_is_kept_plain_on_its_own_line() -> None:
    value = "short " + "x" * 800
    rendered = format_unstructured("Subject", value)
    assert rendered == "Subject: short\r\n " + "x" * 800 + "\r\n"
    assert_well_formed(rendered, limit=998)


def test_long_header_name_with_long_word_stays_under_998_octets() -> None:
    name = "X-" + "N" * 74
    rendered = format_unstructured(name, "y" * 995)
    assert_well_formed(rendered)
    assert decoded(name, rendered) == "y" * 995


def test_lone_surrogate_is_refused_naming_the_header() -> None:
    with pytest.raises(BadHeaderError, match="not valid Unicode") as excinfo:
        format_unstructured("Subject", "bad \udc80 text")
    assert excinfo.value.header == "Subject"


# -- encoded words -------------------------------------------------------------------


def test_encode_words_prefers_q_for_mostly_ascii_and_b_otherwise() -> None:
    assert encode_words("Café") == ["=?utf-8?q?Caf=C3=A9?="]
    assert encode_words("ééé") == ["=?utf-8?b?w6nDqcOp?="]
    assert encode_words("") == ["=?utf-8?q??="]
    assert encode_words("a b_c?=") == ["=?utf-8?q?a_b=5Fc=3F=3D?="]


def test_encode_words_never_split_a_character() -> None:
    text = "é" * 40 + "😀" * 30 + "x" * 100
    words = encode_words(text)
    assert len(words) > 2
    pieces = []
    for word in words:
        assert len(word) <= 75
        # Each word decodes on its own: no character is cut in two.
        pieces.append(decoded("X", f"X: {word}\r\n"))
    assert "".join(pieces) == text


# -- phrases (display names) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("John Smith", ["John", "Smith"]),
        ("O'Brien", ["O'Brien"]),
        ("John Q. Public", ['"John Q. Public"']),
        ("Doe, John", ['"Doe, John"']),
        ('Say "hi" \\ bye', ['"Say \\"hi\\" \\\\ bye"']),
        ("", ['""']),
        ("Zoë", ["=?utf-8?q?Zo=C3=AB?="]),
        ("=?x?=", ["=?utf-8?b?PT94Pz0=?="]),
        (" padded", ["=?utf-8?q?_padded?="]),
        ("nul\x00", ["=?utf-8?q?nul=00?="]),
    ],
)
def test_encode_phrase(name: str, words: list[str]) -> None:
    assert encode_phrase(name) == words
    if name:
        rendered = fold("To", [(" ", word) for word in [*words, "<a@example.com>"]])
        address = parse_field(rendered)["To"].addresses[0]
        assert address.display_name == name
        assert address.addr_spec == "a@example.com"


# -- folding -----------------------------------------------------------------------


def test_fold_breaks_before_whitespace_at_78_characters() -> None:
    pieces = [(" ", "a" * 40), (" ", "b" * 40), ("  ", "c")]
    assert fold("X", pieces) == "X: " + "a" * 40 + "\r\n " + "b" * 40 + "  c\r\n"


def test_fold_never_breaks_right_after_the_field_name() -> None:
    # "Subject:" CRLF " text" would make the stdlib parser read " text".
    assert fold("X", [(" ", "a" * 90)]) == "X: " + "a" * 90 + "\r\n"
    name = "X-" + "N" * 70
    assert fold(name, [(" ", "a" * 20)]) == f"{name}: " + "a" * 20 + "\r\n"


def test_fold_keeps_words_without_whitespace_together() -> None:
    assert fold("X", [(" ", "a" * 50), ("", "b" * 50)]) == (
        "X: " + "a" * 50 + "b" * 50 + "\r\n"
    )


# -- RFC 2231 parameters --------------------------------------------------------------


def parsed_filename(words: list[str]) -> str:
    lines = fold(
        "Content-Disposition", [(" ", "attachment;"), *((" ", w) for w in words)]
    )
    # Sections hold 60 characters; the first one's "utf-8''" prefix takes its
    # line a little past 78.
    assert_well_formed(lines, limit=81)
    disposition = parse_field(lines)["Content-Disposition"]
    filename = disposition.params["filename"]
    assert isinstance(filename, str)
    return filename


@pytest.mark.parametrize(
    ("filename", "words"),
    [
        ("report.pdf", ['filename="report.pdf"']),
        ("a b.txt", ['filename="a b.txt"']),
        ("it's", ['filename="it\'s"']),
        ("a%20b", ['filename="a%20b"']),
        ('a "b".txt', ['filename="a \\"b\\".txt"']),
        ("back\\slash", ['filename="back\\\\slash"']),
        ("résumé.pdf", ["filename*=utf-8''r%C3%A9sum%C3%A9.pdf"]),
        ("tab\t.txt", ["filename*=utf-8''tab%09.txt"]),
        ("nul\x00.txt", ["filename*=utf-8''nul%00.txt"]),
        ("x" * 60, ['filename="' + "x" * 60 + '"']),
        ("x" * 61, ["filename*0*=utf-8''" + "x" * 60 + ";", "filename*1*=x"]),
        # Readers decode encoded words even inside quoted parameters.
        ("=?utf-8?q?x?=", ["filename*=utf-8''%3D%3Futf-8%3Fq%3Fx%3F%3D"]),
    ],
)
def test_format_parameter(filename: str, words: list[str]) -> None:
    assert format_parameter("filename", filename) == words
    assert parsed_filename(words) == filename


def test_long_non_ascii_parameter_uses_numbered_continuations() -> None:
    filename = "é" * 25
    words = format_parameter("filename", filename)
    assert words == [
        "filename*0*=utf-8''" + "%C3%A9" * 10 + ";",
        "filename*1*=" + "%C3%A9" * 10 + ";",
        "filename*2*=" + "%C3%A9" * 5,
    ]
    assert parsed_filename(words) == filename


@pytest.mark.parametrize(
    "filename",
    ["ü" * 200, "a" + "é" * 30 + "b" * 59, "日本語のファイル名" * 20, "%" * 100],
)
def test_continuations_never_cut_an_escape_and_round_trip(filename: str) -> None:
    words = format_parameter("filename", filename)
    for word in words:
        value = word.partition("=")[2].removesuffix(";").removeprefix("utf-8''")
        assert re.fullmatch(r"(?:[^%]|%[0-9A-F]{2})*", value), word
    assert parsed_filename(words) == filename
