"""get_connection()'s options and ``connection=`` are typed: mypy checks
snippets of user code.

Every line of a snippet marked ``# error`` must draw a mypy error on that
line, and no other line may. The snippets also pin the return types
(``assert_type``) and the TypedDicts are kept in step with the backends'
constructors.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
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


# ``connection=``: any object with the async backend interface (an asyncmail
# backend, or a duck-typed one of the user's own), or a blocking view of a
# backend (as in Django, each message keeps the object given; the work runs
# on the backend it wraps). Nothing else: not a string, not a half backend,
# not a backend with blocking methods.
CONNECTION_SNIPPET = """\
from types import TracebackType
from typing import Any, Self

from asyncmail import (
    EmailMessage, amail_admins, asend_mail, asend_mass_mail, get_connection,
    mail_admins, mail_managers, send_mail, send_mass_mail,
)
from asyncmail.connection import Connection, ConnectionLike, async_connection
from asyncmail.sync import BlockingBackend


class OwnBackend:  # no BaseEmailBackend: the interface is enough
    async def open(self) -> bool | None:
        return True

    async def close(self) -> None:
        pass

    async def send_messages(
        self, email_messages: Any, *, fail_silently: bool = False,
        on_result: Any = None,
    ) -> int:
        return 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pass


class HalfBackend:  # no send_messages
    async def open(self) -> bool | None:
        return True

    async def close(self) -> None:
        pass


class SyncBackend:  # blocking methods where awaitables are expected
    def open(self) -> bool | None:
        return True

    def close(self) -> None:
        pass

    def send_messages(self, email_messages: Any) -> int:
        return 0


backend = get_connection()
view: BlockingBackend = backend.blocking()
own: Connection = OwnBackend()
either: ConnectionLike = view
async_connection(view)
send_mail("s", "b", None, ["a@example.com"], connection=backend)
send_mail("s", "b", None, ["a@example.com"], connection=view)
send_mail("s", "b", None, ["a@example.com"], connection=OwnBackend())
send_mail("s", "b", None, ["a@example.com"], connection=either)
send_mass_mail([], connection=view)
mail_admins("s", "b", connection=backend)
mail_managers("s", "b", connection=view)
EmailMessage("s", "b", connection=OwnBackend())
EmailMessage("s", "b", connection=view)
send_mail("s", "b", None, ["a@example.com"], connection="smtp")  # error
send_mail("s", "b", None, ["a@example.com"], connection=HalfBackend())  # error
send_mail("s", "b", None, ["a@example.com"], connection=SyncBackend())  # error
send_mass_mail([], connection=object())  # error
mail_managers("s", "b", connection=42)  # error
EmailMessage("s", "b", connection=HalfBackend())  # error
bad: Connection = HalfBackend()  # error


async def main() -> None:
    await asend_mail("s", "b", None, ["a@example.com"], connection=backend)
    await asend_mail("s", "b", None, ["a@example.com"], connection=own)
    await asend_mass_mail([], connection=OwnBackend())
    await amail_admins("s", "b", connection=backend)
    await asend_mail("s", "b", None, ["a@example.com"], connection=view)
    await asend_mail("s", "b", None, ["a@x"], connection=HalfBackend())  # error
    await asend_mass_mail([], connection=SyncBackend())  # error
    await amail_admins("s", "b", connection="smtp")  # error
"""


def _mypy_errors(directory: pathlib.Path, code: str) -> dict[int, list[str]]:
    """mypy --strict's errors in *code*, by line number."""
    pytest.importorskip("mypy")
    snippet = directory / "user_code.py"
    snippet.write_text(code, encoding="utf-8")
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


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    return _mypy_errors(tmp_path_factory.mktemp("typing"), SNIPPET)


def _marked_lines(code: str) -> set[int]:
    return {
        number
        for number, line in enumerate(code.splitlines(), 1)
        if line.endswith("# error")
    }


def test_misspelt_or_mistyped_options_are_type_errors(
    mypy_errors: dict[int, list[str]],
) -> None:
    expected = _marked_lines(SNIPPET)
    assert len(expected) == 7
    assert set(mypy_errors) == expected, mypy_errors
    for number in expected:
        assert any("[call-overload]" in e for e in mypy_errors[number]), number


def test_connection_is_typed_as_the_backend_interface(
    tmp_path: pathlib.Path,
) -> None:
    errors = _mypy_errors(tmp_path, CONNECTION_SNIPPET)
    expected = _marked_lines(CONNECTION_SNIPPET)
    assert len(expected) == 10
    assert set(errors) == expected, errors
    for number in expected:
        assert any("[arg-type]" in e or "[assignment]" in e for e in errors[number]), (
            number,
            errors[number],
        )


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
