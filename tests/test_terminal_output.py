"""Terminal output (issue #8, class 9): what the debug server and
``asyncmail send`` print comes from the network (message data, envelope,
server replies), so control characters are escaped before printing: on a
terminal and also on a pipe or file (which a terminal may show later). The
raw bytes stay available in DebugServer.messages."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import RawMessage, get_connection
from asyncmail.cli import main
from asyncmail.server import DebugServer, escape_controls
from scriptserver import ScriptServer, reply

pytestmark = pytest.mark.anyio

ESCAPES = [
    "\x1b[2J",  # clear screen
    "\x1b]0;pwned\x07",  # set the window title
    "\x1b]52;c;ZXZpbA==\x07",  # write the clipboard
    "\x9b31m",  # C1 CSI
    "\r",  # overwrite the line
    "\x08\x08\x08",  # backspaces
    "\x7f",
    "\u202e",  # right-to-left override
    "\u2066",
    "\x00",
]
DANGEROUS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@given(st.text())
def test_escaped_text_has_no_dangerous_characters(text: str) -> None:
    shown = escape_controls(text)
    assert DANGEROUS.search(shown) is None
    # Character by character: kept, or shown as a visible escape.
    assert shown == "".join(escape_controls(char) for char in text)
    for char in text:
        if DANGEROUS.match(char):
            assert escape_controls(char) in (
                f"\\x{ord(char):02x}",
                f"\\u{ord(char):04x}",
            )
        elif char.isprintable() or char in "\t\n":
            assert escape_controls(char) == char


async def test_the_debug_server_escapes_what_it_prints() -> None:
    stream = io.StringIO()
    async with DebugServer(port=0, stream=stream) as server:
        body = "".join(
            f"line {escape}\r\n" for escape in ESCAPES if escape not in ("\x00", "\r")
        )
        data = f"Subject: hi \x1b[31mred\r\n\r\n{body}".encode()
        backend = get_connection(
            "asyncmail.backends.smtp.EmailBackend",
            host=server.host,
            port=server.port,
            retries=0,
        )
        await backend.send_messages(
            [RawMessage(data, "from@example.com", ["to@example.com"])]
        )
        await backend.close()
        assert server.messages[0].data.replace(b"\r\n", b"\n") == data.replace(
            b"\r\n", b"\n"
        )  # the raw bytes are kept as they came
    printed = stream.getvalue()
    assert DANGEROUS.search(printed) is None
    assert "\\x1b[2J" in printed
    assert "\\u202e" in printed
    assert "Subject: hi \\x1b[31mred" in printed


def test_cli_send_to_the_debug_server_escapes_the_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "send",
            "--debug-server",
            "--to",
            "to@example.com",
            "--from",
            "from@example.com",
            "--subject",
            "s",
            "--body",
            "".join(escape for escape in ESCAPES if escape not in ("\x00", "\r")),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert DANGEROUS.search(out) is None
    assert "\\x1b]0;pwned\\x07" in out


@pytest.mark.parametrize("escape", ESCAPES[:-1])
def test_cli_send_escapes_server_replies(
    escape: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with ScriptServer() as server:
        server.on("RCPT", reply(f"550 5.1.1 no such user {escape}here"))
        status = main(
            [
                "send",
                "--host",
                server.host,
                "--port",
                str(server.port),
                "--to",
                "to@example.com",
                "--from",
                "from@example.com",
                "--body",
                "b",
            ]
        )
    assert status == 1
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert DANGEROUS.search(text) is None
    assert "no such user" in captured.out + captured.err


def test_cli_errors_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["send", "--to", "a\x1b[2J@example.com", "--body", "b"])
    assert status == 2
    err = capsys.readouterr().err
    assert DANGEROUS.search(err) is None
    assert "\\x1b" in err


def test_settings_output_is_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncmail

    monkeypatch.setenv("EMAIL_HOST", "smtp\x1b]0;x\x07.example.com")
    asyncmail.settings.reload_environment()
    assert main(["settings"]) == 0
    assert DANGEROUS.search(capsys.readouterr().out) is None


def test_tabs_and_newlines_are_kept() -> None:
    assert escape_controls("tab\tand\nnewline") == "tab\tand\nnewline"
