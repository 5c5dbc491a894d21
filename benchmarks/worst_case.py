"""Worst-case inputs per parser, and how long rendering holds the event loop.

Part 1: for every parser and formatter that sees user input, a family of
hostile inputs (the shapes that make backtracking regexes, quadratic loops or
repeated slicing blow up), at 10 KB, 60 KB (just under the 64 KiB length
guard on header values: the parsers' own worst) and 100 KB. Each is timed to
its answer (rejected, or rendered), median of the rounds. The goal is under
10 ms for 100 KB (issue #8).

Part 2: render() time of large but legitimate messages, since the SMTP
backend renders on the event loop: how long one render would stall it.

Run::

    python benchmarks/worst_case.py [--rounds 5] [--json PATH]

Figures are medians of --rounds; the machine is shared, so compare the x10
ratios (same run) rather than the absolute times across runs.
"""

from __future__ import annotations

import argparse
import email.message
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from asyncmail import EmailMessage, EmailMultiAlternatives
from asyncmail.address import is_empty_group, parse_address, parse_address_list
from asyncmail.dnsname import ascii_hostname
from asyncmail.headers import format_unstructured
from asyncmail.mimeparams import parse_content_type
from asyncmail.server import escape_controls

FROM = "from@example.com"
TO = ["to@example.com"]


def _message_with(**headers: str) -> Callable[[], object]:
    def run() -> object:
        return EmailMessage("s", "b", FROM, TO, headers=headers).as_bytes()

    return run


def _subject(text: str) -> Callable[[], object]:
    return lambda: EmailMessage(text, "b", FROM, TO).as_bytes()


def _mimetype(text: str) -> Callable[[], object]:
    def run() -> object:
        mail = EmailMessage("s", "b", FROM, TO)
        mail.attach("a.bin", b"x", text)
        return mail.as_bytes()

    return run


def _attached_raw(data: bytes) -> Callable[[], object]:
    def run() -> object:
        mail = EmailMessage("s", "b", FROM, TO)
        mail.attach(None, data, "message/rfc822")
        return mail.as_bytes()

    return run


def _nested_part(depth: int) -> email.message.Message:
    part = email.message.Message()
    part.set_payload("leaf\n")
    for _ in range(depth):
        outer = email.message.Message()
        outer["Content-Type"] = "multipart/mixed"
        outer.attach(part)
        part = outer
    return part


def _foreign(part: email.message.Message) -> Callable[[], object]:
    def run() -> object:
        mail = EmailMessage("s", "b", FROM, TO)
        mail.attachments.append(part)
        return mail.as_bytes()

    return run


# (parser, input name, builder(size) -> callable)
CASES: list[tuple[str, str, Callable[[int], Callable[[], object]]]] = [
    # The empty-group check on To/From/Cc/Sender overrides (was quadratic).
    ("is_empty_group", "spaces + x", lambda n: lambda: is_empty_group(" " * n + "x")),
    (
        "is_empty_group",
        "spaces + ':;'",
        lambda n: lambda: is_empty_group(" " * n + ":;"),
    ),
    (
        "is_empty_group",
        "'a ' * n + ':'",
        lambda n: lambda: is_empty_group("a " * (n // 2) + ":"),
    ),
    (
        "To override",
        "spaces + address",
        lambda n: _message_with(To=" " * n + "a@example.com"),
    ),
    (
        "Sender override",
        "spaces + 'g:;'",
        lambda n: _message_with(Sender=" " * n + "g:;"),
    ),
    # Address lists: one pass over the text (was a slice per item).
    (
        "parse_address_list",
        "commas",
        lambda n: lambda: _catch(parse_address_list, "," * n),
    ),
    (
        "parse_address_list",
        "quotes",
        lambda n: lambda: _catch(parse_address_list, '"' * n),
    ),
    (
        "parse_address_list",
        "'a@' * n",
        lambda n: lambda: _catch(parse_address_list, "a@" * (n // 2)),
    ),
    (
        "parse_address_list",
        "'<' * n",
        lambda n: lambda: _catch(parse_address_list, "<" * n),
    ),
    (
        "parse_address_list",
        "many good",
        lambda n: (
            lambda: _catch(parse_address_list, ", ".join(["a@example.com"] * (n // 15)))
        ),
    ),
    (
        "parse_address",
        "long string",
        lambda n: lambda: _catch(parse_address, "a" * n + "@example.com"),
    ),
    (
        "parse_address",
        "quoted backslashes",
        lambda n: lambda: _catch(parse_address, '"' + "\\" * n + '"@x.com'),
    ),
    # Unstructured headers: encoded words.
    ("Subject", "one unbreakable word", lambda n: _subject("a" * n)),
    ("Subject", "'=?' * n", lambda n: _subject("=?" * (n // 2))),
    ("Subject", "controls", lambda n: _subject("\x01" * n)),
    ("Subject", "non-ASCII", lambda n: _subject("\u00e9" * n)),
    ("Subject", "'a ' * n", lambda n: _subject("a " * (n // 2))),
    ("Subject", "tabs and spaces", lambda n: _subject("a" + " \t" * (n // 2) + "b")),
    (
        "format_unstructured",
        "spaces",
        lambda n: lambda: _catch(format_unstructured, "X", " " * n),
    ),
    # References / Message-ID.
    (
        "References",
        "many ids",
        lambda n: _message_with(References=" ".join(["<a@b.c>"] * (n // 8))),
    ),
    (
        "References",
        "one huge id",
        lambda n: _message_with(References="<" + "a" * n + "@b>"),
    ),
    # MIME types and parameters.
    (
        "parse_content_type",
        "'; a=b' * n",
        lambda n: (
            lambda: _catch(parse_content_type, "m", "text/plain" + "; a=b" * (n // 6))
        ),
    ),
    (
        "parse_content_type",
        "spaces",
        lambda n: lambda: _catch(parse_content_type, "m", "text/plain;" + " " * n),
    ),
    (
        "parse_content_type",
        "quoted backslashes",
        lambda n: (
            lambda: _catch(parse_content_type, "m", 'text/plain; a="' + "\\" * n + '"')
        ),
    ),
    (
        "parse_content_type",
        "semicolons",
        lambda n: lambda: _catch(parse_content_type, "m", "text/plain" + ";" * n),
    ),
    (
        "attach mimetype",
        "long parameter",
        lambda n: _mimetype("application/x; p=" + "v" * n),
    ),
    # Host names (IDNA 2008; a length guard before the idna package).
    ("ascii_hostname", "long label", lambda n: lambda: ascii_hostname("\u00e9" * n)),
    (
        "ascii_hostname",
        "many dots",
        lambda n: lambda: ascii_hostname("a." * (n // 2) + "de"),
    ),
    # Foreign content: raw bytes attached as message/rfc822, stdlib parts.
    (
        "message/rfc822 bytes",
        "one long header",
        lambda n: _attached_raw(b"X-A: " + b"a" * n + b"\n\nbody\n"),
    ),
    (
        "message/rfc822 bytes",
        "many headers",
        lambda n: _attached_raw(b"X-A: a\n" * (n // 7) + b"\nbody\n"),
    ),
    (
        "message/rfc822 bytes",
        "long folded header",
        lambda n: _attached_raw(b"X-A: a" + b"\n a" * (n // 3) + b"\n\nbody\n"),
    ),
    (
        "message/rfc822 bytes",
        "many parts",
        lambda n: _attached_raw(
            b'Content-Type: multipart/mixed; boundary="b"\n\n'
            + b"--b\n\nx\n" * (n // 7)
            + b"--b--\n"
        ),
    ),
    (
        "MIMEPart",
        "nested multiparts",
        lambda n: _foreign(_nested_part(min(n // 1000, 30))),
    ),
    # Printing what the network sent (debug server, CLI).
    ("escape_controls", "escapes", lambda n: lambda: escape_controls("\x1b" * n)),
]


def _catch(function: Callable[..., object], *args: object) -> object:
    try:
        return function(*args)
    except (ValueError, TypeError) as exc:
        return exc


def _run(function: Callable[[], object]) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        result = function()
    except (ValueError, TypeError) as exc:
        result = exc
    elapsed = time.perf_counter() - start
    outcome = "rejected" if isinstance(result, Exception) else "accepted"
    return elapsed, outcome


def _median(function: Callable[[], object], rounds: int) -> tuple[float, str]:
    times = []
    outcome = ""
    for _ in range(rounds):
        elapsed, outcome = _run(function)
        times.append(elapsed)
    return statistics.median(times), outcome


def parsers(rounds: int) -> list[dict[str, Any]]:
    rows = []
    for parser, name, build in CASES:
        small, _ = _median(build(10_000), rounds)
        under, under_outcome = _median(build(60_000), rounds)
        large, outcome = _median(build(100_000), rounds)
        rows.append(
            {
                "parser": parser,
                "input": name,
                "ms_10k": small * 1e3,
                "ms_60k": under * 1e3,
                "outcome_60k": under_outcome,
                "ms_100k": large * 1e3,
                "outcome": outcome,
            }
        )
    return rows


def _text_message(size: int, text: str = "a") -> Callable[[], object]:
    body = (text * 70 + "\n") * (size // (70 * len(text.encode()) + 1))

    def run() -> object:
        return EmailMessage("s", body, FROM, TO).render()

    return run


def _alternatives(size: int) -> Callable[[], object]:
    text = ("word " * 14 + "\n") * (size // 71)

    def run() -> object:
        mail = EmailMultiAlternatives("s", text, FROM, TO)
        mail.attach_alternative(f"<p>{text}</p>", "text/html")
        return mail.render()

    return run


def _attachments(count: int, size: int) -> Callable[[], object]:
    data = bytes(range(256)) * (size // 256)

    def run() -> object:
        mail = EmailMessage("s", "b", FROM, TO)
        for index in range(count):
            mail.attach(f"f{index}.bin", data, "application/octet-stream")
        return mail.render()

    return run


RENDERS: list[tuple[str, Callable[[], object]]] = [
    ("plain, 1 KB body", _text_message(1_000)),
    ("ASCII body 100 KB", _text_message(100_000)),
    ("ASCII body 1 MB", _text_message(1_000_000)),
    ("ASCII body 10 MB", _text_message(10_000_000)),
    ("non-ASCII body 1 MB (8bit)", _text_message(1_000_000, "\u00e9")),
    ("text + HTML, 1 MB each", _alternatives(1_000_000)),
    ("1 attachment 900 KB (base64 now)", _attachments(1, 900_000)),
    ("1 attachment 5 MB (streamed)", _attachments(1, 5_000_000)),
    ("100 attachments of 10 KB", _attachments(100, 10_000)),
]


def renders(rounds: int) -> list[dict[str, Any]]:
    return [
        {"message": name, "ms": _median(function, rounds)[0] * 1e3}
        for name, function in RENDERS
    ]


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    options.add_argument("--rounds", type=int, default=5)
    options.add_argument("--json", help="also write the figures to this file")
    args = options.parse_args(argv)

    rows = parsers(args.rounds)
    print(f"Worst-case inputs, median of {args.rounds} (goal: < 10 ms for 100 KB)")
    print(
        f"{'parser':22} {'input':24} {'10 KB ms':>9} {'60 KB ms':>9} "
        f"{'100 KB ms':>10}  outcome at 60 / 100 KB"
    )
    for row in rows:
        print(
            f"{row['parser']:22} {row['input']:24} {row['ms_10k']:9.3f} "
            f"{row['ms_60k']:9.3f} {row['ms_100k']:10.3f}  "
            f"{row['outcome_60k']} / {row['outcome']}"
        )
    for key, size in (("ms_60k", "60 KB"), ("ms_100k", "100 KB")):
        worst = max(rows, key=lambda row, key=key: row[key])
        print(
            f"slowest at {size}: {worst['parser']} / {worst['input']}: "
            f"{worst[key]:.2f} ms"
        )
    stalls = renders(args.rounds)
    print(
        f"\nrender() time (how long it holds the event loop), median of {args.rounds}"
    )
    for row in stalls:
        print(f"  {row['message']:36} {row['ms']:9.2f} ms")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump({"parsers": rows, "renders": stalls}, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
