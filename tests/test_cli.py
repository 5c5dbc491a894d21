"""The command line (the main job) and the debug SMTP server."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import asyncmail
from asyncmail.cli import main
from asyncmail.server import BANNER, FOOTER, DebugServer
from smtpserver import SMTPServer

SEND = [
    "send",
    "--to",
    "Ada <ada@example.com>",
    "--subject",
    "Hello",
    "--body",
    "It works.",
]


def test_send_through_the_embedded_debug_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main([*SEND, "--debug-server", "--bcc", "audit@example.com"])
    out = capsys.readouterr().out

    assert status == 0
    assert BANNER in out
    assert FOOTER in out
    assert "X-RcptTo: ada@example.com, audit@example.com" in out
    assert "Subject: Hello\n" in out
    assert "It works." in out
    assert "Bcc" not in out.split(BANNER, 1)[1].split(FOOTER)[0]  # never a header
    assert "sent: <" in out
    assert "ada@example.com: accepted (250" in out
    assert "audit@example.com: accepted (250" in out


def test_debug_server_ignores_tls_and_credentials_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # They are for the real relay; the embedded server is plain local SMTP.
    monkeypatch.setenv("EMAIL_USE_TLS", "true")
    monkeypatch.setenv("EMAIL_HOST_USER", "app")
    monkeypatch.setenv("EMAIL_HOST_PASSWORD", "secret")
    asyncmail.settings.reload_environment()

    assert main([*SEND, "--debug-server"]) == 0
    assert "ada@example.com: accepted" in capsys.readouterr().out


def test_send_to_a_server_with_html_attachment_header_and_body_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "body.txt"
    body.write_text("From a file.\n", encoding="utf-8")
    attachment = tmp_path / "report.csv"
    attachment.write_text("a,b\n1,2\n", encoding="utf-8")
    with SMTPServer() as server:
        status = main(
            [
                "send",
                "--host", "127.0.0.1",
                "--port", str(server.port),
                "--from", "app@example.com",
                "--to", "ada@example.com",
                "--cc", "bob@example.com",
                "--reply-to", "help@example.com",
                "--subject", "Report",
                "--body-file", str(body),
                "--html", "<p>Report</p>",
                "--attach", str(attachment),
                "--header", "X-Campaign: spring",
            ]
        )  # fmt: skip
    assert status == 0
    (received,) = server.messages
    assert received.mail_from == "app@example.com"
    assert received.rcpt_tos == ["ada@example.com", "bob@example.com"]
    parsed = asyncmail.RawMessage(received.data, "a@x.com", ["b@x.com"]).message()
    assert parsed["X-Campaign"] == "spring"
    assert parsed["Reply-To"] == "help@example.com"
    assert [part.get_content_type() for part in parsed.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "text/csv",
    ]
    assert parsed.get_body(("plain",)).get_content() == "From a file.\n"  # type: ignore[union-attr]
    assert "ada@example.com: accepted" in capsys.readouterr().out


def test_body_from_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Piped in.\n"))
    args = ["send", "--to", "ada@example.com", "--body-file", "-", "--debug-server"]
    assert main(args) == 0
    assert "Piped in." in capsys.readouterr().out


def test_server_down_is_exit_status_1_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from helpers import unused_port

    port = unused_port()
    args = [*SEND, "--host", "127.0.0.1", "--port", str(port), "--timeout", "5"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "Not delivered" in captured.err
    assert "ada@example.com: temporary" in captured.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["send", "--subject", "x", "--debug-server"], "at least one recipient"),
        ([*SEND, "--header", "no colon", "--debug-server"], "Name: value"),
        (["send", "--to", "a@b@c", "--debug-server"], "Invalid address"),
    ],
)
def test_usage_errors_are_exit_status_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_settings_command_masks_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMAIL_HOST_PASSWORD", "hunter2")
    monkeypatch.setenv("EMAIL_HOST", "smtp.example.com")
    asyncmail.settings.reload_environment()
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "EMAIL_HOST = 'smtp.example.com'" in out
    assert "hunter2" not in out
    assert "EMAIL_HOST_PASSWORD = '********'" in out


def test_python_dash_m_runs_the_main_job_in_a_fresh_process() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}
    done = subprocess.run(
        [sys.executable, "-m", "asyncmail", *SEND, "--debug-server"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "X-RcptTo: ada@example.com" in done.stdout
    assert done.stderr == ""


def test_debug_server_command_prints_what_it_receives() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}
    with subprocess.Popen(
        [sys.executable, "-m", "asyncmail", "debug-server", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment,
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert "listening on 127.0.0.1:" in first
            port = int(first.split("127.0.0.1:")[1].split()[0])
            sent = asyncmail.send_mail(
                "Via the command",
                "Printed.",
                "app@example.com",
                ["ada@example.com"],
                connection=asyncmail.get_connection(
                    "asyncmail.backends.smtp.EmailBackend", host="127.0.0.1", port=port
                ),
            )
            assert sent == 1
            lines = []
            for line in process.stdout:
                lines.append(line)
                if line.startswith(FOOTER):
                    break
            output = "".join(lines)
            assert BANNER in output
            assert "Subject: Via the command" in output
            assert "Printed." in output
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.anyio
async def test_debug_server_keeps_messages_and_stops_with_a_client_connected() -> None:
    stream = io.StringIO()
    async with DebugServer(port=0, stream=stream) as server:
        connection = asyncmail.get_connection(
            "asyncmail.backends.smtp.EmailBackend", host=server.host, port=server.port
        )
        await asyncmail.asend_mail(
            "Kept",
            "Body",
            "app@example.com",
            ["ada@example.com"],
            connection=connection,
        )
        # A client still connected must not keep stop() waiting (Python 3.12).
        _reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.close()
    (message,) = server.messages
    assert message.mail_from == "app@example.com"
    assert message.rcpt_tos == ("ada@example.com",)
    assert b"Subject: Kept\r\n" in message.data
    assert stream.getvalue() == message.format()


def test_auth_arguments_are_ignored_by_backends_without_a_server() -> None:
    # As with Django: a test suite switches to locmem and keeps its calls.
    asyncmail.configure(EMAIL_BACKEND="asyncmail.backends.locmem.EmailBackend")
    sent = asyncmail.send_mail(
        "s", "b", None, ["ada@example.com"], auth_user="u", auth_password="p"
    )
    assert sent == 1
    assert len(asyncmail.outbox) == 1
