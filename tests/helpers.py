"""What the test suites share: messages, backends, scripted servers, ports.

One definition of each, instead of a copy per suite: the message builder
(message *n* from sender<n>@ to rcpt<n>@, a unique Message-ID, a body line
that must be dot-stuffed), the SMTP backend pointed at a scripted server
(short timeouts, no retries unless asked; STARTTLS when the server offers it
with its test certificate), the scripted server with a chosen set of
extensions, the readers of a message's result, and a free port.

The servers themselves live next to this module: ``scriptserver`` (the
scripted fault injector), ``smtpserver`` (aiosmtpd recording the wire, built
on the library's :class:`asyncmail.testing.SMTPTestServer`) and ``sink``.
"""

from __future__ import annotations

import socket
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from asyncmail import EmailMessage, MessageResult, Outcome
from asyncmail.backends.smtp import EmailBackend
from scriptserver import DEFAULT_EXTENSIONS, ScriptServer, reply

PIPELINING = pytest.mark.parametrize(
    "pipelining", [True, False], ids=["pipelined", "sequential"]
)


def unused_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def message(n: int = 1, to: Sequence[str] | None = None, **kwargs: Any) -> EmailMessage:
    """Message *n*: from sender<n>@, to rcpt<n>@, with a unique Message-ID
    (how a server's records are matched to it) and a body line starting with
    a dot. *kwargs* go to EmailMessage (``from_email`` and ``headers`` are
    merged with the defaults)."""
    return EmailMessage(
        f"Message {n}",
        f"Body of message {n}.\n.A line starting with a dot.\n",
        kwargs.pop("from_email", f"sender{n}@example.com"),
        list(to or [f"rcpt{n}@example.com"]),
        headers={
            "Message-ID": f"<{uuid.uuid4().hex}.{n}@tests.example>",
            **kwargs.pop("headers", {}),
        },
        **kwargs,
    )


def scripted(
    pipelining: bool = True,
    auth: bool = False,
    *,
    smtputf8: bool = True,
    starttls: bool = False,
) -> ScriptServer:
    """A scripted server (use it with ``with``) offering the default
    extensions, less PIPELINING or SMTPUTF8 when asked, plus AUTH PLAIN, plus
    STARTTLS with a trusted test certificate."""
    extensions = [
        e
        for e in DEFAULT_EXTENSIONS
        if (pipelining or e != "PIPELINING") and (smtputf8 or e != "SMTPUTF8")
    ]
    if auth:
        extensions.append("AUTH PLAIN")
    return ScriptServer(tuple(extensions), starttls=starttls)


def make_backend(server: ScriptServer, **options: Any) -> EmailBackend:
    """An SMTP backend for *server*: no retries (fast ones when asked), a
    fixed EHLO name, and STARTTLS (verified against the server's test CA)
    when the server offers it. *options* win."""
    settings: dict[str, Any] = {
        "timeout": 10.0,
        "retries": 0,
        "retry_backoff": 0.01,
        "local_hostname": "client.example",
    }
    if server.client_context is not None:
        settings.update(use_tls=True, ssl_context=server.client_context)
    settings.update(options)
    return EmailBackend(host=server.host, port=server.port, **settings)


def backend_for(port: int, **options: Any) -> EmailBackend:
    """An SMTP backend for a test server on 127.0.0.1:*port*: no retries
    unless asked, a fixed EHLO name. *options* win."""
    options.setdefault("timeout", 10)
    options.setdefault("retries", 0)
    options.setdefault("local_hostname", "client.example")
    return EmailBackend(host="127.0.0.1", port=port, **options)


def result_of(msg: EmailMessage) -> MessageResult:
    """The result the last send recorded on *msg* (there must be one)."""
    assert msg.result is not None
    return msg.result


def outcomes(msg: EmailMessage) -> dict[str, Outcome]:
    """Each recipient of *msg* and its outcome."""
    return {a: r.outcome for a, r in result_of(msg).recipients.items()}


def mail_commands(server: ScriptServer) -> list[str]:
    """Every MAIL FROM command the server received, all sessions."""
    return [c for c in server.commands if c.upper().startswith("MAIL FROM")]


def hold_each_message(server: ScriptServer, seconds: float = 0.05) -> None:
    """Answer every final dot (250) only after *seconds*, so that sends
    overlap."""
    server.on(".", reply("250 2.0.0 OK", delay=seconds), times=None)


def senders(server: ScriptServer) -> Counter[str]:
    """How many times each sender's message was accepted."""
    return Counter(item.mail_from for item in server.accepted)


def mails_per_session(server: ScriptServer) -> list[int]:
    """How many transactions each session started (MAIL commands)."""
    return [session.verbs().count("MAIL") for session in server.sessions]
