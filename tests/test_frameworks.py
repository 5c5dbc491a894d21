"""The framework recipes of docs/pages/frameworks.md, run for real: the
page's code is executed, then the tests it defines run with the real
fixtures, and more tests drive the same apps against a real SMTP server."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import re
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request

import asyncmail
from asyncmail.integrations.jinja2 import MailTemplates
from asyncmail.integrations.starlette import mail_backend, mail_lifespan
from asyncmail.testing import Outbox, SMTPTestServer

PAGE = Path(__file__).resolve().parent.parent / "docs" / "pages" / "frameworks.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.fixture
def page() -> dict[str, Any]:
    """The page's namespace after running every example on it."""
    namespace: dict[str, Any] = {"__name__": "docs_frameworks"}
    for number, block in enumerate(BLOCK.findall(PAGE.read_text("utf-8")), 1):
        exec(compile(block, f"frameworks.md, example {number}", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize(
    "name",
    [
        "test_signup_sends_a_welcome",
        "test_invite_sends_in_the_background",
        "test_receipt_task",
        "test_contact_form",
    ],
)
def test_the_pages_tests_pass(
    page: dict[str, Any], name: str, mailoutbox: Outbox
) -> None:
    page[name](mailoutbox)


# -- FastAPI ------------------------------------------------------------------------


def test_one_pool_for_the_apps_lifetime(
    page: dict[str, Any], smtp_server: SMTPTestServer
) -> None:
    app = page["app"]
    with TestClient(app) as client:
        backend = app.state.mail
        assert backend.pool is not None  # opened at startup
        for name in ("ada", "bob", "carol"):
            response = client.post(
                "/signup", json={"email": f"{name}@example.com", "name": name}
            )
            assert response.status_code == 200
        assert backend.pool.opened == 1  # one connection, reused by every request
    assert backend.pool is None  # closed at shutdown
    assert not hasattr(app.state, "mail")
    assert [m.rcpt_tos for m in smtp_server.messages] == [
        ("ada@example.com",),
        ("bob@example.com",),
        ("carol@example.com",),
    ]
    assert smtp_server.sessions == 1
    ids = [m.message["Message-ID"] for m in smtp_server.messages]
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    "smtp_server",
    [{"refuse": {"bob@example.com": "550 5.1.1 <bob@example.com>: no such user"}}],
    indirect=True,
)
def test_background_failures_are_logged(
    page: dict[str, Any], smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asyncmail")
    with TestClient(page["app"]) as client:
        response = client.post(
            "/invite", json={"email": "bob@example.com", "name": "Bob"}
        )
        assert response.json() == {"status": "queued"}  # the client saw no error
        ok = client.post("/invite", json={"email": "ada@example.com", "name": "Ada"})
        assert ok.status_code == 200
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ada@example.com",)]
    [failure] = [r for r in caplog.records if r.name == "asyncmail.send"]
    assert failure.levelno == logging.WARNING
    assert failure.mail_status == "failed"  # type: ignore[attr-defined]
    assert "550" in failure.getMessage()
    assert "b***@example.com" in failure.getMessage()


def test_an_awaited_failure_is_the_requests_error(
    page: dict[str, Any], smtp_server: SMTPTestServer
) -> None:
    smtp_server.refuse["ada@example.com"] = "550 5.7.1 rejected"
    with TestClient(page["app"], raise_server_exceptions=False) as client:
        response = client.post(
            "/signup", json={"email": "ada@example.com", "name": "Ada"}
        )
    assert response.status_code == 500
    assert smtp_server.messages == []


def test_without_the_lifespan_the_error_says_why(page: dict[str, Any]) -> None:
    client = TestClient(page["app"])  # not "with": the lifespan does not run
    with pytest.raises(RuntimeError, match=r"use the client as a context manager"):
        client.post("/signup", json={"email": "ada@example.com", "name": "Ada"})


def test_the_apps_own_lifespan_runs_inside(mailoutbox: Outbox) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        # Startup can already send through the app's backend.
        await app.state.mailer.send_messages(
            [asyncmail.EmailMessage("Started", "x", None, ["ops@example.com"])]
        )
        events.append("start")
        yield {"greeting": "hello"}
        events.append("stop")

    app = FastAPI(lifespan=mail_lifespan(own, state_key="mailer"))

    @app.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        return {
            "greeting": request.state.greeting,
            "mailer": type(request.state.mailer).__name__,
        }

    with TestClient(app) as client:
        assert client.get("/state").json() == {
            "greeting": "hello",
            # The real class: a capture only redirects the sends.
            "mailer": "EmailBackend",
        }
    assert events == ["start", "stop"]
    mailoutbox.assert_sent(count=1, subject="Started")


def test_mail_backend_reads_app_state_too() -> None:
    class State:
        pass

    class Holder:
        state = State()

    request = Holder()
    request.app = Holder()  # type: ignore[attr-defined]
    backend = asyncmail.get_connection("asyncmail.backends.dummy.EmailBackend")
    request.app.state.mail = backend  # type: ignore[attr-defined]
    assert mail_backend(request) is backend  # type: ignore[arg-type]


# -- Celery, RQ-style, Flask --------------------------------------------------------


def test_celery_task_against_a_real_server(
    page: dict[str, Any], smtp_server: SMTPTestServer
) -> None:
    assert page["send_receipt"].delay(7, "ada@example.com").get() == "sent"
    [received] = smtp_server.messages
    assert received.subject == "Receipt for order 7"
    assert received.mail_from == "shop@example.com"


@pytest.mark.parametrize(
    "smtp_server",
    [{"refuse": {"bob@example.com": "550 5.1.1 no such user"}}],
    indirect=True,
)
def test_celery_does_not_retry_a_permanent_refusal(
    page: dict[str, Any], smtp_server: SMTPTestServer
) -> None:
    assert page["send_receipt"].delay(8, "bob@example.com").get() == "failed"
    assert smtp_server.messages == []


def _run_job(job: Any, queue: Any) -> None:
    queue.put(job(9, "ada@example.com"))


def test_rq_style_job_in_a_forked_child(
    page: dict[str, Any], smtp_server: SMTPTestServer
) -> None:
    # The parent has used the blocking API (its library loop thread runs),
    # as a worker that sent mail before forking would have.
    asyncmail.send_mail("Parent", "x", None, ["parent@example.com"])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock;
        # that is what prefork workers do, and what this test checks.
        warnings.simplefilter("ignore", DeprecationWarning)
        child = context.Process(target=_run_job, args=(page["send_receipt_job"], queue))
        child.start()
    child.join(30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == "sent"
    assert [m.subject for m in smtp_server.messages] == [
        "Parent",
        "Receipt for order 9",
    ]


def test_flask_view_against_a_real_server(
    page: dict[str, Any], smtp_server: SMTPTestServer
) -> None:
    client = page["flask_app"].test_client()
    response = client.post(
        "/contact", data={"email": "Ada <ada@example.com>", "message": "Hello"}
    )
    assert response.status_code == 200
    [received] = smtp_server.messages
    assert received.message["Reply-To"] == "Ada <ada@example.com>"
    assert received.rcpt_tos == ("support@example.com",)


# -- Jinja2 -------------------------------------------------------------------------


def loader(**templates: str) -> jinja2.DictLoader:
    return jinja2.DictLoader(
        {name.replace("__", "."): text for name, text in templates.items()}
    )


def test_templates_escape_html_only(mailoutbox: Outbox) -> None:
    templates = MailTemplates(
        loader=loader(
            w__subject__txt="Hi {{ name }}",
            w__txt="Hi {{ name }} & co",
            w__html="<p>{{ name }}</p>{{ trusted|safe }}",
        )
    )
    rendered = templates.render("w", {"name": "<script>x</script>", "trusted": "<hr>"})
    assert rendered.subject == "Hi <script>x</script>"
    assert rendered.text == "Hi <script>x</script> & co"
    assert rendered.html == "<p>&lt;script&gt;x&lt;/script&gt;</p><hr>"


def test_templates_from_a_directory(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    (tmp_path / "receipt.subject.txt").write_text("Receipt\n  for {{ order }}\n")
    (tmp_path / "receipt.txt").write_text("Order {{ order }}: {{ total }}\n")
    templates = MailTemplates(directory=tmp_path)
    message = templates.message(
        "receipt",
        {"order": 5, "total": "9.50 €"},
        to=["ada@example.com"],
        bcc=["audit@example.com"],
    )
    assert message.alternatives == []  # no .html template: text only
    message.send()
    [received] = smtp_server.messages
    assert received.subject == "Receipt for 5"
    assert received.message.get_content() == "Order 5: 9.50 €\n"
    assert received.rcpt_tos == ("ada@example.com", "audit@example.com")
    assert b"audit@" not in received.data


def test_templates_refuse_missing_variables_and_unsafe_environments() -> None:
    templates = MailTemplates(
        loader=loader(w__subject__txt="Hi", w__txt="Hi {{ name }}")
    )
    with pytest.raises(jinja2.UndefinedError, match="'name' is undefined"):
        templates.render("w", {})
    unsafe = jinja2.Environment(loader=loader(), autoescape=False)  # noqa: S701
    with pytest.raises(asyncmail.ConfigurationError, match="does not autoescape"):
        MailTemplates(environment=unsafe)
    MailTemplates(environment=jinja2.Environment(autoescape=True))  # fine
    with pytest.raises(asyncmail.ConfigurationError, match="exactly one of"):
        MailTemplates()
    with pytest.raises(jinja2.TemplateNotFound):
        templates.render("missing")


def test_bulk_rows_render_lazily_and_need_a_recipient(mailoutbox: Outbox) -> None:
    templates = MailTemplates(
        loader=loader(w__subject__txt="{{ greeting }} {{ name }}", w__txt="{{ name }}"),
        to_key="to",
    )
    rows = iter([{"to": "a@example.com", "name": "A"}, {"name": "nobody"}])
    messages = templates.messages("w", rows, context={"greeting": "Hello"})
    first = next(messages)
    assert first.subject == "Hello A"
    assert first.to == ["a@example.com"]
    with pytest.raises(asyncmail.ConfigurationError, match="Row 2 has no 'to'"):
        next(messages)


FORKING_WORKER = """
import os, sys
import asyncmail

asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT={port}, EMAIL_TIMEOUT=10)
asyncmail.send_mail("parent", "x", None, ["p@example.com"])  # the loop thread runs
pid = os.fork()
if pid == 0:  # a work horse: sends, then exits normally (atexit runs)
    asyncmail.send_mail("child", "x", None, ["c@example.com"])
    sys.exit(0)
_, status = os.waitpid(pid, 0)
asyncmail.send_mail("parent again", "x", None, ["p@example.com"])
print(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_sends_and_exits_cleanly(smtp_server: SMTPTestServer) -> None:
    # The child inherits the parent's library loop object but not its
    # thread: it must start its own, and neither sending nor exiting may
    # wait for the parent's.
    done = subprocess.run(
        [sys.executable, "-c", FORKING_WORKER.format(port=smtp_server.port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    assert [m.subject for m in smtp_server.messages] == [
        "parent",
        "child",
        "parent again",
    ]
