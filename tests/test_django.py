"""asyncmail in real Django projects, and the trap it closes.

Django's settings are process-wide, so everything that configures Django
runs in a subprocess (this process never imports Django): a startproject-like
project (tests/django_project) copied to a temporary directory and driven
as its users would drive it, sending to a real aiosmtpd on 127.0.0.1; the
same project under Django's test runner (``manage.py test``) filling
``django.core.mail.outbox``; and the backend's contract checks
(tests/django_project/contract_checks.py, run by pytest in the subprocess).

The sync-call trap needs no Django: it is checked here, in this process.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import importlib.util
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncmail.backends.base import BaseEmailBackend
from asyncmail.backends.console import EmailBackend as ConsoleBackend
from asyncmail.backends.dummy import EmailBackend as DummyBackend
from asyncmail.backends.locmem import EmailBackend as LocmemBackend
from asyncmail.backends.smtp import EmailBackend as SMTPBackend
from smtpserver import SMTPServer

HERE = Path(__file__).resolve().parent
PROJECT = HERE / "django_project"
ROOT = HERE.parent


def _django_version() -> tuple[int, ...] | None:
    """The Django installed for this interpreter (not imported here)."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; print(django.VERSION[0], django.VERSION[1])",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode:
        return None
    return tuple(int(part) for part in probe.stdout.split())


DJANGO = _django_version()
needs_django = pytest.mark.skipif(DJANGO is None, reason="Django is not installed")
MODES = [
    "email_backend",
    pytest.param(
        "mailers",
        marks=pytest.mark.skipif(
            DJANGO is None or DJANGO < (6, 1), reason="MAILERS needs Django 6.1"
        ),
    ),
]


def _python_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "DJANGO_"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT / "src")])
    env["PYTHONWARNINGS"] = (
        "ignore::DeprecationWarning,ignore::PendingDeprecationWarning"
    )
    env.update(extra)
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    shutil.copytree(PROJECT, directory)
    return directory


def run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=project,
        env=_python_env(TEST_DB=str(project / "db.sqlite3"), **env),
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def parsed(data: bytes) -> email.message.EmailMessage:
    """*data* (CRLF line endings, as sent) parsed with LF line endings."""
    message = email.message_from_bytes(
        data.replace(b"\r\n", b"\n"), policy=email.policy.default
    )
    assert isinstance(message, email.message.EmailMessage)
    return message


#: The sync view's message as asyncmail's serialiser writes it: Django 6's
#: structure and encodings, CRLF, the RFC 2047 word only where needed.
WELCOME = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Subject: Welcome, =?utf-8?q?Zo=C3=AB?=\r\n"
    b"From: Shop <shop@example.com>\r\n"
    b"To: %s\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <welcome@example.com>\r\n"
    b"\r\n"
    b"Thanks for signing up.\r\n"
)


# -- a Django project sending through asyncmail ------------------------------------


@needs_django
@pytest.mark.parametrize("mode", MODES)
def test_project_sends_through_asyncmail(project: Path, mode: str) -> None:
    with SMTPServer() as server:
        env = {"TEST_SMTP_PORT": str(server.port), "ASYNCMAIL_TEST_MODE": mode}
        results = json.loads(run(project, "drive.py", **env).stdout)
        assert results == {
            "wsgi_sync_view": "1",
            "asgi_sync_view": "1",
            "async_view": "1",
            "async_receipt": "1",
            "command": "sent 5",
            "reset_status": 302,
            "crash_status": 500,
        }
        received = list(server.messages)
        by_rcpt = {tuple(m.rcpt_tos): m for m in received}
        assert len(received) == 11

        # A sync view, under WSGI and under ASGI (Django runs it in its
        # thread-sensitive executor): byte for byte.
        for address in ("ada@example.com", "asgi@example.com"):
            message = next(m for m in received if m.rcpt_tos == [address])
            assert message.mail_from == "shop@example.com"
            assert message.data == WELCOME % address.encode()

        # An async view with asyncmail's own API: the project's settings.
        async_view = parsed(by_rcpt[("bob@example.com",)].data)
        assert async_view["Subject"] == "Welcome (async)"
        assert async_view["From"] == "Shop <shop@example.com>"
        assert async_view.get_content() == "Sent from an async view.\n"

        # An async view with Django's messages (asend_messages).
        receipt = parsed(by_rcpt[("carol@example.com",)].data)
        assert receipt.get_content_type() == "multipart/mixed"
        assert (
            receipt.get_body(("html",)).get_content() == "<p>Total: <b>3 EUR</b></p>\n"
        )
        assert receipt.get_body(("plain",)).get_content() == "Total: 3 EUR\n"
        (csv,) = receipt.iter_attachments()
        assert csv.get_filename() == "receipt.csv"
        assert csv.get_content() == "item,price\nbook,3\n"

        # A management command: five messages over one open backend: one
        # connection, or (the MAILERS project sets max_connections=4) a pool.
        reports = [m for m in received if m.rcpt_tos[0].startswith("user")]
        assert sorted(m.rcpt_tos[0] for m in reports) == [
            f"user{n}@example.com" for n in range(5)
        ]
        sessions = len({m.session_id for m in reports})
        assert sessions == 1 if mode == "email_backend" else 1 <= sessions <= 4
        assert sorted(parsed(m.data)["Subject"] for m in reports) == [
            f"Report {n}" for n in range(5)
        ]

        # AdminEmailHandler: the crash went to ADMINS, from SERVER_EMAIL.
        crash = by_rcpt[("ops@example.com",)]
        assert crash.mail_from == "errors@example.com"
        subject = parsed(crash.data)["Subject"]
        assert subject.startswith("[shop] ERROR")
        assert "Internal Server Error: /crash/" in subject

        # Password reset, through Django's own view; the link works.
        (reset_data,) = [
            m.data
            for m in received
            if m.rcpt_tos == ["ada@example.com"]
            and m.data != WELCOME % b"ada@example.com"
        ]
        reset = parsed(reset_data)
        assert reset["Subject"] == "Password reset for testserver"
        assert reset["From"] == "Shop <shop@example.com>"
        body = reset.get_content()
        assert body.startswith("Reset your password: http://testserver/reset/")
        path = body.split("http://testserver", 1)[1].strip()
        confirm = json.loads(run(project, "drive.py", "confirm", path, **env).stdout)
        assert confirm["confirm_status"] == 302
        assert confirm["confirm_location"].endswith("/set-password/")
        assert confirm["form_status"] == 200


@needs_django
@pytest.mark.parametrize("mode", MODES)
def test_project_under_djangos_test_runner(project: Path, mode: str) -> None:
    """The same code, under ``manage.py test``: the outbox fills, nothing is
    sent (no server runs: a real send would fail)."""
    result = run(
        project,
        "manage.py",
        "test",
        "mailapp",
        "--noinput",
        ASYNCMAIL_TEST_MODE=mode,
        TEST_SMTP_PORT="9",  # discard: nothing listens
    )
    assert "Ran 10 tests" in result.stderr
    assert result.stderr.rstrip().endswith("OK") or "\nOK\n" in result.stderr


@needs_django
@pytest.mark.skipif(
    importlib.util.find_spec("pytest_django") is None,
    reason="pytest-django is not installed",
)
@pytest.mark.parametrize("mode", MODES)
def test_project_under_pytest_django(project: Path, mode: str) -> None:
    """The project's tests again, under pytest-django instead of
    ``manage.py test``: the same outbox."""
    result = run(
        project,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        os.devnull,
        "--rootdir",
        str(project),
        "-p",
        "pytest_django",
        "--ds",
        "settings",
        "mailapp/tests.py",
        ASYNCMAIL_TEST_MODE=mode,
        TEST_SMTP_PORT="9",
    )
    assert "10 passed" in result.stdout


@needs_django
def test_backend_contract_checks() -> None:
    """tests/django_project/contract_checks.py, with Django configured in a
    subprocess: Django's backend contract, messages, threads, async, the
    bridge, the trap with Django's own send_mail."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:django",
            "-c",
            os.devnull,
            "-W",
            "error",
            "-W",
            "ignore::DeprecationWarning",
            "-W",
            "ignore::PendingDeprecationWarning",
            "contract_checks.py",
        ],
        cwd=PROJECT,
        env=_python_env(),
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    assert "failed" not in result.stdout


@needs_django
def test_docs_examples_run_in_a_django_project() -> None:
    """docs/pages/django-integration.md's examples, in order, in one
    configured Django process, sending to aiosmtpd."""
    page = ROOT / "docs" / "pages" / "django-integration.md"
    with SMTPServer() as server:
        result = subprocess.run(
            [sys.executable, "docs_examples.py", str(page), str(server.port)],
            cwd=PROJECT,
            env=_python_env(),
            capture_output=True,
            text=True,
            timeout=55,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "examples: 8" in result.stdout
        received = list(server.messages)
    # signup 1, reports 50, invoice 1, async view 2, password reset 1; the
    # test examples go to the outbox, not the server.
    assert len(received) == 55
    subjects = [parsed(m.data)["Subject"] for m in received]
    assert subjects[0] == "Welcome"
    assert "Invoice 42" in subjects
    assert {"Thanks!", "Receipt"} <= set(subjects)
    assert any("Password reset" in subject for subject in subjects)
    assert all(m.mail_from == "shop@example.com" for m in received)


def test_asyncmail_never_imports_django() -> None:
    code = (
        "import sys, asyncmail\n"
        "asyncmail.configure(EMAIL_BACKEND='asyncmail.backends.locmem.EmailBackend')\n"
        "assert asyncmail.send_mail('s', 'b', None, ['a@example.com']) == 1\n"
        "assert asyncmail.settings.EMAIL_HOST == 'localhost'\n"
        "imported = [m for m in sys.modules if m.split('.')[0] == 'django']\n"
        "assert not imported, imported\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], env=_python_env(), check=True, timeout=30
    )


@needs_django
def test_django_imported_but_not_configured_is_ignored() -> None:
    code = (
        "import django.conf, asyncmail\n"
        "assert asyncmail.settings.EMAIL_HOST == 'localhost'\n"
        "backend = asyncmail.settings.EMAIL_BACKEND\n"
        "assert backend == 'asyncmail.backends.smtp.EmailBackend', backend\n"
        "assert not django.conf.settings.configured\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], env=_python_env(), check=True, timeout=30
    )


# -- the trap: an async backend called from synchronous code -----------------------


class _Overriding(BaseEmailBackend):
    """A backend overriding the coroutine methods wholesale, as Django
    backends override send_messages."""

    async def open(self) -> bool | None:
        return await super().open()

    async def close(self) -> None:
        await super().close()

    async def send_messages(self, email_messages: Any, **kwargs: Any) -> int:
        return len(list(email_messages))


BACKENDS = [
    pytest.param(
        lambda: SMTPBackend(host="127.0.0.1", port=9, fail_silently=True, retries=0),
        id="smtp",
    ),
    pytest.param(LocmemBackend, id="locmem"),
    pytest.param(DummyBackend, id="dummy"),
    pytest.param(lambda: ConsoleBackend(stream=io.StringIO()), id="console"),
    pytest.param(_Overriding, id="subclass-overriding"),
]


@pytest.mark.parametrize("make", BACKENDS)
@pytest.mark.parametrize("method", ["send_messages", "open", "close"])
def test_sync_call_raises_a_clear_type_error(make: Any, method: str) -> None:
    backend = make()
    args = ([],) if method == "send_messages" else ()
    with pytest.raises(TypeError) as raised:
        getattr(backend, method)(*args)
    text = str(raised.value)
    assert f"{method}()" in text
    assert "blocking()" in text
    assert "with backend as conn" in text
    assert "asyncmail.django.EmailBackend" in text


@pytest.mark.parametrize("make", BACKENDS)
@pytest.mark.parametrize("method", ["send_messages", "open", "close"])
def test_guarded_methods_still_look_like_coroutine_functions(
    make: Any, method: str
) -> None:
    """Frameworks decide by introspection whether to await a callable or run
    it in a worker thread (Starlette's BackgroundTasks, FastAPI): the guard
    must not turn ``backend.send_messages`` into a "sync" callable there."""
    bound = getattr(make(), method)
    if sys.version_info >= (3, 12):  # 3.11's inspect has no marker to honour
        assert inspect.iscoroutinefunction(bound)
    assert asyncio.iscoroutinefunction(bound)  # what Python 3.11 frameworks use


@pytest.mark.parametrize("make", BACKENDS)
def test_a_call_from_django_code_in_a_running_loop_raises(make: Any) -> None:
    """Django's synchronous mail code never awaits: called from a coroutine
    (a running loop), the backend must still refuse it. A function compiled
    in a module named like Django's stands in for django.core.mail."""
    backend = make()
    namespace: dict[str, Any] = {"__name__": "django.core.mail.message"}
    exec(  # noqa: S102 - a stand-in for Django's code
        "def send(connection, messages):\n"
        "    return connection.send_messages(messages)\n",
        namespace,
    )

    async def view() -> None:
        namespace["send"](backend, [])

    with pytest.raises(TypeError, match="coroutine function"):
        asyncio.run(view())


@pytest.mark.anyio
@pytest.mark.parametrize("make", BACKENDS)
async def test_awaited_calls_still_work(make: Any) -> None:
    backend = make()
    assert await backend.send_messages([]) == 0
    assert await backend.open() in (True, None)  # None: nothing listens (smtp)
    await backend.close()
    calls = [backend.send_messages([]) for _ in range(2)]  # a comprehension
    assert await asyncio.gather(*calls) == [0, 0]


def test_blocking_view_is_the_way_from_sync_code() -> None:
    backend = LocmemBackend()
    assert backend.blocking().send_messages([]) == 0
    with backend as conn:
        assert conn.send_messages([]) == 0
