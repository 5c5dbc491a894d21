"""get_connection()'s options are typed: mypy checks a snippet of user code.

Every line of the snippet marked ``# error`` must draw a mypy error on that
line, and no other line may. The snippet also pins the return types
(``assert_type``) and the TypedDicts are kept in step with the backends'
constructors.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest

from asyncmail import options as typed

SNIPPET = """\
import io
import ssl
from typing import assert_type

from asyncmail import get_connection
from asyncmail.backends import console, filebased, locmem, smtp
from asyncmail.backends.base import BaseEmailBackend

# Backend from the settings: any built-in backend's options.
assert_type(get_connection(), BaseEmailBackend)
get_connection(max_connections=10, rate_limit=200.0, retries=3)
get_connection(host="smtp.example.com", port=587, use_tls=True, timeout=None)
get_connection(using="bulk", max_messages_per_connection=100, deadline=30.0)
get_connection(ssl_context=ssl.create_default_context(), idle_timeout=None)
get_connection(file_path="/tmp/mail", stream=io.StringIO())
get_connection(max_conections=10)  # error
get_connection(rate_limt=200)  # error
get_connection(retries="3")  # error
get_connection(max_connections=None)  # error
get_connection(port="587")  # error
get_connection(using="bulk", retry=2)  # error

# A built-in backend's path: its own options, its own type.
b = get_connection("asyncmail.backends.smtp.EmailBackend", max_connections=4)
assert_type(b, smtp.EmailBackend)
m = get_connection("asyncmail.backends.locmem.EmailBackend")
assert_type(m, locmem.EmailBackend)
f = get_connection("asyncmail.backends.filebased.EmailBackend", file_path="/tmp")
assert_type(f, filebased.EmailBackend)
c = get_connection("asyncmail.backends.console.EmailBackend", stream=None)
assert_type(c, console.EmailBackend)
get_connection("asyncmail.backends.smtp.EmailBackend", fail_silently=True)
get_connection("asyncmail.backends.smtp.EmailBackend", using="x")  # error

# A third-party backend: its options are its own business.
get_connection("myapp.mail.Backend", region="eu-west-1")
"""


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    pytest.importorskip("mypy")
    directory = tmp_path_factory.mktemp("typing")
    snippet = directory / "user_code.py"
    snippet.write_text(SNIPPET, encoding="utf-8")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--strict", "--no-error-summary"),
            *("--cache-dir", str(directory / "cache"), "--python-version", "3.11"),
            *("--hide-error-context", "--no-pretty", str(snippet)),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd=directory,
        env={k: v for k, v in os.environ.items() if not k.startswith("MYPY")},
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    errors: dict[int, list[str]] = {}
    for line in done.stdout.splitlines():
        found = re.match(r".*user_code\.py:(\d+): error: (.*)", line)
        if found:
            errors.setdefault(int(found[1]), []).append(found[2])
    return errors


def test_misspelt_or_mistyped_options_are_type_errors(
    mypy_errors: dict[int, list[str]],
) -> None:
    expected = {
        number
        for number, line in enumerate(SNIPPET.splitlines(), 1)
        if line.endswith("# error")
    }
    assert len(expected) == 7
    assert set(mypy_errors) == expected, mypy_errors
    for number in expected:
        assert any("[call-overload]" in e for e in mypy_errors[number]), number


def _parameters(path: str) -> set[str]:
    module_name, _, name = path.rpartition(".")
    backend = getattr(importlib.import_module(module_name), name)
    own = inspect.signature(backend.__init__).parameters
    return {
        parameter.name
        for parameter in own.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and parameter.name not in ("fail_silently", "alias")
    }


@pytest.mark.parametrize(
    ("backend", "options"),
    [
        ("asyncmail.backends.smtp.EmailBackend", typed.SMTPOptions),
        ("asyncmail.backends.console.EmailBackend", typed.ConsoleOptions),
        ("asyncmail.backends.filebased.EmailBackend", typed.FileOptions),
    ],
)
def test_the_typed_options_are_the_constructors_options(
    backend: str, options: type
) -> None:
    assert set(options.__annotations__) == _parameters(backend)


def test_connection_options_are_every_built_in_backends_options() -> None:
    union = (
        set(typed.SMTPOptions.__annotations__)
        | set(typed.ConsoleOptions.__annotations__)
        | set(typed.FileOptions.__annotations__)
    )
    assert set(typed.ConnectionOptions.__annotations__) == union
    assert _parameters("asyncmail.backends.locmem.EmailBackend") == set()
    assert _parameters("asyncmail.backends.dummy.EmailBackend") == set()
