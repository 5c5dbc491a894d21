"""Django's mail API through the outbox: a real Django project (SQLite) in a
process of its own (its settings cannot leak into the other tests), then a
worker delivering what it queued to a real SMTP server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from asyncmail.backends.smtp import EmailBackend as SMTPBackend
from asyncmail.queue import State, Worker, open_store
from smtpserver import SMTPServer

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parent.parent

PROJECT = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings

    database, outbox = sys.argv[1], sys.argv[2]
    settings.configure(
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}
        },
        EMAIL_BACKEND="asyncmail.queue.django_backend.EmailBackend",
        ASYNCMAIL_QUEUE_URL=outbox,
        DEFAULT_FROM_EMAIL="app@example.com",
    )
    django.setup()
    from django.core import mail
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")

    mail.send_mail("at once", "Body", None, ["now@example.com"])
    try:
        with transaction.atomic():
            mail.send_mail("rolled back", "Body", None, ["never@example.com"])
            raise RuntimeError
    except RuntimeError:
        pass
    with transaction.atomic():
        mail.EmailMessage(
            "on commit", "Body", None, ["commit@example.com"],
            bcc=["hidden@example.com"],
        ).send()
        print("inside:", mail.get_connection().url)

    # The transactional outbox: through Django's own connection.
    transactional = mail.get_connection(transactional=True)
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO orders DEFAULT VALUES")
            mail.EmailMessage(
                "order 1", "Body", None, ["lost@example.com"],
                connection=transactional,
            ).send()
            raise RuntimeError
    except RuntimeError:
        pass
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO orders DEFAULT VALUES")
        mail.EmailMessage(
            "order 2", "Body", None, ["order@example.com"],
            connection=transactional,
        ).send()
    print("done")
    """
)


def test_django_messages_are_queued_on_commit_and_in_the_transaction(
    tmp_path: Path,
) -> None:
    outbox = f"sqlite:///{tmp_path / 'outbox.db'}"
    app_db = tmp_path / "app.db"
    script = tmp_path / "project.py"
    script.write_text(PROJECT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(script), str(app_db), outbox],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout

    async def deliver(url: str, server: SMTPServer) -> list[str]:
        backend = SMTPBackend(host="127.0.0.1", port=server.port, timeout=10)
        await Worker(url, backend=backend).run(until_idle=True)
        rows = await open_store(url).messages()
        assert {row.state for row in rows} == {State.SENT}
        return sorted(r for row in rows for r in row.recipients)

    with SMTPServer() as server:
        queued = anyio.run(deliver, outbox, server)
        assert queued == ["commit@example.com", "hidden@example.com", "now@example.com"]
        # The transactional outbox is in the application's own database.
        in_app = anyio.run(deliver, f"sqlite:///{app_db}", server)
        assert in_app == ["order@example.com"]
        received = {tuple(sorted(m.rcpt_tos)): m.data for m in server.messages}
    assert set(received) == {
        ("commit@example.com", "hidden@example.com"),
        ("now@example.com",),
        ("order@example.com",),
    }
    committed = received[("commit@example.com", "hidden@example.com")]
    assert b"Subject: on commit" in committed
    assert b"hidden@example.com" not in committed  # Bcc: the envelope only
    assert b"From: app@example.com" in committed
