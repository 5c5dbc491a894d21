"""``asyncmail send-bulk``: mail merge to a real SMTP sink on 127.0.0.1.

The big runs are real subprocesses of the installed command (as a user runs
it), against tests/sink.py's counting sink: the results file must account
for every row, and agree with what the sink counted.
"""

from __future__ import annotations

import csv
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import asyncmail
from asyncmail.cli import main
from helpers import unused_port
from sink import SinkServer

ENVIRONMENT = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}


def _rows(path: Path, count: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["to", "name", "code"])
        for number in range(1, count + 1):
            writer.writerow([f"user{number}@example.com", f"User {number}", number])
    return path


def _bulk_command(rows: Path, port: int, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "asyncmail", "send-bulk", str(rows)),
        *("--subject", "Hello $name", "--text", "Your code is ${code}."),
        *("--from", "app@example.com", "--host", "127.0.0.1", "--port", str(port)),
        *("--timeout", "20"),
        *extra,
    ]


def _read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_ten_thousand_rows_through_the_pool_with_progress_and_results(
    tmp_path: Path,
) -> None:
    rows = _rows(tmp_path / "rows.csv", 10_000)
    results = tmp_path / "out.csv"
    with SinkServer() as sink:
        done = subprocess.run(
            _bulk_command(
                rows,
                sink.port,
                *("--connections", "4", "--results", str(results)),
                *("--progress-interval", "0.2"),
            ),
            capture_output=True,
            text=True,
            timeout=50,
            env=ENVIRONMENT,
            check=False,
            cwd=tmp_path,
        )
        counted = sink.counts.messages
        envelopes = list(sink.counts.envelopes)
        sessions = sink.counts.sessions
    assert done.returncode == 0, done.stderr
    assert counted == 10_000
    assert 1 < sessions <= 4  # the pool: several connections, never more than 4
    table = _read_results(results)
    assert len(table) == 10_000
    assert {row["outcome"] for row in table} == {"accepted"}
    assert {row["code"] for row in table} == {"250"}
    assert sorted(int(row["row"]) for row in table) == list(range(1, 10_001))
    # Every row's recipient, and only it, reached the sink, once.
    expected = {f"user{n}@example.com" for n in range(1, 10_001)}
    assert {row["recipient"] for row in table} == expected
    assert sorted(r for e in envelopes for r in e.rcpt_tos) == sorted(expected)
    # The reply names the sink's queue id; the message id is the message's.
    assert all("queued as Q" in row["reply"] for row in table)
    assert len({row["message_id"] for row in table}) == 10_000
    # Not a terminal: plain progress lines, the last one complete.
    lines = [line for line in done.stderr.splitlines() if line.startswith("progress:")]
    assert lines
    assert lines[-1].startswith("progress: 10,000/10,000 rows (100%)")
    assert "msg/s" in lines[-1]
    assert "ETA" in lines[-1]
    assert "\r" not in done.stderr
    assert "Sent 10,000 of 10,000 messages" in done.stdout


def test_templates_html_escaping_recipient_columns_and_per_row_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.jsonl"
    records = [
        {"to": "Ada <ada@example.com>", "name": "Ada <b>", "bcc": "audit@example.com"},
        {"to": ["bob@example.com", "carol@example.com"], "name": "Bob & Carol"},
        {"to": "refuse@example.com", "name": "Refused"},
        {"to": "dan@example.com"},  # no value for $name
        {"to": "eve@example.com", "name": "Eve\r\nBcc: leak@example.com"},
        {"to": "not an address", "name": "Bad"},
        {"to": "", "name": "Nobody"},
    ]
    rows.write_text(
        "\n".join(json.dumps(record) for record in records) + "\nnot json\n[1]\n",
        encoding="utf-8",
    )
    results = tmp_path / "results.jsonl"
    with SinkServer(keep_data=True) as sink:
        status = main(
            [
                *("send-bulk", str(rows), "--subject", "For $name"),
                *("--text", "Dear $name,\nthanks."),
                *("--html", "<p>Dear <i>$name</i></p>"),
                *("--from", "app@example.com", "--results", str(results)),
                *("--host", "127.0.0.1", "--port", str(sink.port)),
            ]
        )
        envelopes = list(sink.counts.envelopes)
    assert status == 1  # some rows were not delivered
    table = [json.loads(line) for line in results.read_text().splitlines()]
    outcomes = {(str(row["row"]), row["recipient"]): row["outcome"] for row in table}
    assert outcomes[("1", "ada@example.com")] == "accepted"
    assert outcomes[("1", "audit@example.com")] == "accepted"
    assert outcomes[("2", "bob@example.com")] == "accepted"
    assert outcomes[("2", "carol@example.com")] == "accepted"
    assert outcomes[("3", "refuse@example.com")] == "permanent"
    by_row = {str(row["row"]): row for row in table}
    assert by_row["3"]["code"] == 550
    assert by_row["4"]["code"] is None
    assert by_row["3"]["enhanced_status"] == "5.1.1"
    assert by_row["4"]["outcome"] == "invalid"
    assert by_row["4"]["reply"] == "no value for the template variable $'name'"
    # A line break in a value never becomes a header: the row fails instead.
    assert by_row["5"]["outcome"] == "permanent", by_row["5"]
    assert "contain newlines" in by_row["5"]["reply"]
    assert by_row["6"]["outcome"] == "invalid"
    assert by_row["7"]["outcome"] == "invalid"
    assert by_row["8"]["outcome"] == "invalid"  # not JSON
    assert by_row["9"]["outcome"] == "invalid"  # not an object
    assert {row["row"] for row in table} == set(range(1, 10))

    assert len(envelopes) == 2
    first = next(e for e in envelopes if "ada@example.com" in e.rcpt_tos)
    assert first.rcpt_tos == ["ada@example.com", "audit@example.com"]
    parsed = asyncmail.RawMessage(first.data, "a@x.com", ["b@x.com"]).message()
    assert parsed["Subject"] == "For Ada <b>"
    assert "Bcc" not in parsed
    assert parsed.get_body(("plain",)).get_content() == "Dear Ada <b>,\nthanks.\n"  # type: ignore[union-attr]
    assert "<i>Ada &lt;b&gt;</i>" in parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert all(b"leak@example.com" not in e.data for e in envelopes)
    out = capsys.readouterr().out
    assert "Sent 2 of " in out


def test_html_only_template_from_files(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("to,name\nada@example.com,Ada\n", encoding="utf-8")
    (tmp_path / "subject.txt").write_text("Hi $name\n", encoding="utf-8")
    (tmp_path / "body.html").write_text("<p>Hi $name, 100$$</p>", encoding="utf-8")
    with SinkServer(keep_data=True) as sink:
        status = main(
            [
                *("send-bulk", str(rows), "--html-file", str(tmp_path / "body.html")),
                *("--subject-file", str(tmp_path / "subject.txt")),
                *("--host", "127.0.0.1", "--port", str(sink.port)),
            ]
        )
        (envelope,) = sink.counts.envelopes
    assert status == 0
    parsed = asyncmail.RawMessage(envelope.data, "a@x.com", ["b@x.com"]).message()
    assert parsed.get_content_type() == "text/html"
    assert parsed["Subject"] == "Hi Ada"
    assert parsed.get_content() == "<p>Hi Ada, 100$</p>\n"
    table = _read_results(tmp_path / "rows.results.csv")  # the default name
    assert [(row["recipient"], row["outcome"]) for row in table] == [
        ("ada@example.com", "accepted")
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--subject", "Hi $nmae", "--text", "x"], "template variable(s) nmae"),
        (["--subject", "Hi"], "Give a body"),
        (["--subject", "Hi $", "--text", "x"], "malformed placeholder"),
        (["--text", "x", "--to-column", "email"], "no 'email' column"),
        (["--text", "x", "--connections", "0"], "--connections 1 or more"),
        (["--text", "x", "--results", "/nonexistent/out.csv"], "No such file"),
        (["--text", "x", "--results", "{rows}"], "not be the rows file"),
    ],
)
def test_bad_templates_and_columns_are_usage_errors_before_sending(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(tmp_path / "rows.csv", 3)
    extra = [value.format(rows=rows) for value in extra]
    with SinkServer() as sink:
        status = main(
            [
                *("send-bulk", str(rows), "--host", "127.0.0.1"),
                *("--port", str(sink.port), *extra),
            ]
        )
        assert sink.counts.messages == 0
    assert status == 2
    assert message in capsys.readouterr().err


def test_unreachable_server_every_row_reported_not_delivered(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "rows.csv", 20)
    status = main(
        [
            *("send-bulk", str(rows), "--text", "x"),
            *("--host", "127.0.0.1", "--port", str(unused_port()), "--timeout", "5"),
        ]
    )
    assert status == 1
    table = _read_results(tmp_path / "rows.results.csv")
    assert sorted(int(row["row"]) for row in table) == list(range(1, 21))
    assert {row["outcome"] for row in table} == {"temporary"}


def test_ctrl_c_finishes_the_messages_in_flight_and_says_what_was_not_sent(
    tmp_path: Path,
) -> None:
    rows = _rows(tmp_path / "rows.csv", 3000)
    results = tmp_path / "out.csv"
    with SinkServer(delay=0.02) as sink:
        process = subprocess.Popen(
            _bulk_command(
                rows,
                sink.port,
                *("--connections", "2", "--results", str(results)),
                *("--progress-interval", "0.2"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENVIRONMENT,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 30
            while sink.counts.messages < 50 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sink.counts.messages >= 50
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        counted = sink.counts.messages
    assert process.returncode == 130, err
    assert "Stopping: no new messages" in err
    assert "Traceback" not in err
    table = _read_results(results)
    # Everything taken was finished and recorded; nothing was cut off.
    assert {row["outcome"] for row in table} == {"accepted"}
    assert len(table) == counted
    taken = sorted(int(row["row"]) for row in table)
    assert taken == list(range(1, len(taken) + 1))  # rows are taken in order
    assert len(taken) < 3000
    first = len(taken) + 1
    assert (
        f"Interrupted: {3000 - len(taken):,} rows not sent (rows {first:,} to "
        f"3,000); resume with --skip {len(taken)}" in out
    )


def test_skip_resumes_where_an_interrupted_send_stopped(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "rows.csv", 10)
    with SinkServer() as sink:
        status = main(
            [
                *("send-bulk", str(rows), "--text", "x", "--skip", "7"),
                *("--host", "127.0.0.1", "--port", str(sink.port)),
            ]
        )
        recipients = [r for e in sink.counts.envelopes for r in e.rcpt_tos]
    assert status == 0
    assert sorted(recipients) == sorted(f"user{n}@example.com" for n in (8, 9, 10))
    table = _read_results(tmp_path / "rows.results.csv")
    assert sorted(int(row["row"]) for row in table) == [8, 9, 10]


def test_a_terminal_gets_a_live_progress_bar(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "rows.csv", 400)
    main_fd, terminal = pty.openpty()
    with SinkServer(delay=0.005) as sink:
        process = subprocess.Popen(
            _bulk_command(rows, sink.port, "--connections", "2"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            env=ENVIRONMENT,
            cwd=tmp_path,
        )
        os.close(terminal)
        screen = b""
        try:
            while True:
                ready, _, _ = select.select([main_fd], [], [], 30)
                if not ready:
                    break
                try:
                    chunk = os.read(main_fd, 65536)
                except OSError:  # the terminal closed: the process is done
                    break
                if not chunk:
                    break
                screen += chunk
            process.wait(timeout=30)
        finally:
            os.close(main_fd)
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0
    text = screen.decode("utf-8", "replace")
    frames = [frame for frame in text.split("\r") if frame.strip()]
    assert len(frames) >= 3  # redrawn in place, several times
    assert frames[-1].strip().startswith("[########################] 400/400 100%")
    assert any("msg/s" in frame and "ETA" in frame for frame in frames)
    assert "progress:" not in text  # the bar, not the plain lines


def test_rate_limit_spaces_the_messages(tmp_path: Path) -> None:
    # 5 a second, bursts of 5: the last of 10 messages cannot leave before
    # about a second has passed (a lower bound: load only makes it later).
    rows = _rows(tmp_path / "rows.csv", 10)
    with SinkServer() as sink:
        started = time.monotonic()
        status = main(
            [
                *("send-bulk", str(rows), "--text", "x", "--rate-limit", "5"),
                *("--host", "127.0.0.1", "--port", str(sink.port)),
            ]
        )
        elapsed = time.monotonic() - started
        assert sink.counts.messages == 10
    assert status == 0
    assert elapsed >= 0.9


def test_a_bad_rate_limit_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(tmp_path / "rows.csv", 2)
    status = main(["send-bulk", str(rows), "--text", "x", "--rate-limit", "0"])
    assert status == 2
    assert "rate" in capsys.readouterr().err


def test_column_names_in_errors_carry_no_terminal_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("to,\x1b[2Jname\nada@example.com,Ada\n", encoding="utf-8")
    status = main(["send-bulk", str(rows), "--text", "Hi $name"])
    assert status == 2
    err = capsys.readouterr().err
    assert "template variable(s) name" in err
    assert "\x1b" not in err
    assert "'\\x1b[2Jname'" in err


def test_a_second_ctrl_c_cuts_off_the_messages_in_flight_as_they_stand(
    tmp_path: Path,
) -> None:
    rows = _rows(tmp_path / "rows.csv", 50)
    results = tmp_path / "out.csv"
    # The sink holds every end-of-data reply for 20 s: two messages (one per
    # connection) and the two pipelined behind them stay in flight until cut
    # off.
    with SinkServer(delay=20) as sink:
        process = subprocess.Popen(
            _bulk_command(
                rows, sink.port, "--connections", "2", "--results", str(results)
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENVIRONMENT,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 30
            while sink.counts.messages < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sink.counts.messages == 2
            process.send_signal(signal.SIGINT)
            time.sleep(0.5)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    table = {int(row["row"]): row for row in _read_results(results)}
    # Rows 1 and 2 reached their end of data (the sink holds its reply):
    # unknown, they may have been delivered. Rows 3 and 4 were pipelined
    # behind them (two in flight per connection), their envelopes written
    # but no 354 yet: cut off before any data, so not delivered (temporary),
    # which is what the send recorded on them as it was cancelled.
    assert sorted(table) == [1, 2, 3, 4]
    assert [table[n]["outcome"] for n in (1, 2)] == ["unknown", "unknown"]
    assert all("may have been delivered" in table[n]["reply"] for n in (1, 2))
    assert [table[n]["outcome"] for n in (3, 4)] == ["temporary", "temporary"]
    assert all("interrupted" in table[n]["reply"] for n in (3, 4))
    assert sink.counts.messages == 2  # nothing of rows 3 and 4 was stored
    assert "2 messages were cut off in flight: their outcome is unknown" in out
    assert "2 messages were cut off before their data was sent" in out
    assert "Interrupted: 46 rows not sent (rows 5 to 50); resume with --skip 4" in out
