"""The command line's own surface: --version, bare help, option help text,
--text-file and --html-file."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import asyncmail
from asyncmail.cli import _parser, main
from asyncmail.server import BANNER, FOOTER

ENVIRONMENT = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncmail", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENVIRONMENT,
        check=False,
    )


def test_version() -> None:
    done = _run("--version")
    assert done.returncode == 0
    assert done.stdout == f"asyncmail {asyncmail.__version__}\n"


def test_bare_command_prints_the_help_and_exits_2() -> None:
    done = _run()
    assert done.returncode == 2
    assert done.stdout.startswith("usage: asyncmail")
    for command in ("send", "send-bulk", "debug-server", "settings"):
        assert f"\n    {command}" in done.stdout
    assert "exit status:" in done.stdout


def _every_action() -> list[tuple[str, argparse.Action]]:
    parser = _parser()
    found = [("asyncmail", action) for action in parser._actions]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(name, sub_action) for sub_action in sub._actions]
    return found


def test_every_option_has_help_and_repeatable_ones_say_so() -> None:
    actions = _every_action()
    assert len(actions) > 40
    for command, action in actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        where = f"{command} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{where} has no help text"
        repeatable = isinstance(action, argparse._AppendAction)
        assert ("(repeatable)" in action.help) == repeatable, where


def test_options_with_a_default_say_it() -> None:
    for command, action in _every_action():
        if not action.option_strings or action.help is None:
            continue
        has_default = action.default not in (None, False, [], "", argparse.SUPPRESS)
        if has_default and not isinstance(action, argparse._AppendAction):
            assert "default" in action.help, f"{command} {action.option_strings}"


@pytest.mark.parametrize("command", ["send", "send-bulk", "debug-server", "settings"])
def test_each_command_has_help(command: str) -> None:
    done = _run(command, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: asyncmail {command}")


def test_text_file_and_html_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "body.txt").write_text("Plain from a file.\n", encoding="utf-8")
    (tmp_path / "body.html").write_text("<p>HTML from a file</p>\n", encoding="utf-8")
    status = main(
        [
            *("send", "--to", "ada@example.com", "--subject", "Files"),
            *("--text-file", str(tmp_path / "body.txt")),
            *("--html-file", str(tmp_path / "body.html")),
            "--debug-server",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    printed = out.split(BANNER, 1)[1].split(FOOTER, 1)[0]
    assert "Plain from a file." in printed
    assert "<p>HTML from a file</p>" in printed
    assert "multipart/alternative" in printed


def test_html_and_html_file_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["send", "--to", "a@example.com", "--html", "x", "--html-file", "y"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
