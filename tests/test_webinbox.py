"""The web inbox (asyncmail debug-server --web): store, JSON API, hostile mail.

Mail reaches the inbox's real SMTP server on 127.0.0.1 (through asyncmail's
backend, or raw through smtplib for what asyncmail would refuse to send),
and the app is asked over real HTTP (uvicorn on 127.0.0.1). The browser
test is in tests/test_webinbox_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asyncmail import EmailMessage, EmailMultiAlternatives
from asyncmail.backends.smtp import EmailBackend
from asyncmail.cli import main
from asyncmail.webinbox import MemoryStore, SQLiteStore, WebInbox

pytestmark = pytest.mark.anyio

FROM = "sender@example.com"

HOSTILE_HTML = (
    "<h1>Hi</h1><script>document.title='pwned'</script>"
    '<img src="http://remote.invalid/track.png" onerror="alert(1)">'
    '<a href="javascript:alert(2)">x</a><form action="http://remote.invalid/">'
    '<iframe src="http://remote.invalid/"></iframe>'
)
HOSTILE_NAMES = [
    '../../etc/passwd"; evil=1',
    "<script>alert(3)</script>.html",
    "..\\..\\windows\\win.ini",
    "r\u00e9sum\u00e9 \u202egnp.exe",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn runs on the test's own loop


@pytest.fixture
async def inbox() -> AsyncIterator[WebInbox]:
    async with WebInbox(smtp_port=0, web_port=0) as running:
        yield running


@pytest.fixture
async def http(inbox: WebInbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=inbox.url, timeout=10) as client:
        yield client


def backend(inbox: WebInbox) -> EmailBackend:
    return EmailBackend(host="127.0.0.1", port=inbox.smtp_port, timeout=10, retries=0)


def rich(n: int = 1) -> EmailMultiAlternatives:
    mail = EmailMultiAlternatives(
        f"Report {n}", f"Plain body {n}\n", FROM, [f"to{n}@example.org"]
    )
    mail.attach_alternative(f"<p>HTML body <b>{n}</b></p>", "text/html")
    mail.attach("data.csv", "a,b\n1,2\n", "text/csv")
    mail.attach("blob.bin", bytes(range(256)) * 4, "application/octet-stream")
    return mail


def send_raw(inbox: WebInbox, data: bytes) -> None:
    """Raw bytes over smtplib: what asyncmail itself would refuse to send."""
    with smtplib.SMTP("127.0.0.1", inbox.smtp_port, timeout=10) as client:
        client.sendmail(FROM, ["to@example.org"], data)


# -- the API ----------------------------------------------------------------------


async def test_list_detail_raw_attachments_delete(
    inbox: WebInbox, http: httpx.AsyncClient
) -> None:
    messages = [rich(n) for n in range(3)]
    assert await backend(inbox).send_messages(messages) == 3

    listed = (await http.get("api/messages")).json()
    assert [m["subject"] for m in listed["messages"]] == [
        "Report 2",
        "Report 1",
        "Report 0",
    ]
    first = listed["messages"][-1]
    assert first["rcpt_tos"] == ["to0@example.org"]

    detail = (await http.get(f"api/messages/{first['id']}")).json()
    assert detail["text"] == "Plain body 0\n"
    assert detail["has_html"]
    assert ["Subject", "Report 0"] in detail["headers"]
    names = [
        (a["filename"], a["content_type"], a["size"]) for a in detail["attachments"]
    ]
    assert names == [
        ("data.csv", "text/csv", 8),
        ("blob.bin", "application/octet-stream", 1024),
    ]

    raw = await http.get(f"api/messages/{first['id']}/raw")
    stored = await inbox.store.get(first["id"])
    assert stored is not None
    assert raw.content == stored.data
    assert raw.headers["content-type"].startswith("text/plain")

    blob = await http.get(f"api/messages/{first['id']}/attachments/1")
    assert blob.content == bytes(range(256)) * 4
    assert blob.headers["content-type"] == "application/octet-stream"
    assert blob.headers["content-disposition"].startswith(
        'attachment; filename="blob.bin"'
    )

    html = await http.get(f"api/messages/{first['id']}/html")
    assert html.text == "<p>HTML body <b>0</b></p>\n"

    version = (await http.get("api/version")).json()["version"]
    assert (await http.delete(f"api/messages/{first['id']}")).status_code == 200
    assert (await http.get(f"api/messages/{first['id']}")).status_code == 404
    assert (await http.get("api/version")).json()["version"] != version
    assert len((await http.get("api/messages")).json()["messages"]) == 2
    assert (await http.delete("api/messages")).status_code == 200
    assert (await http.get("api/messages")).json()["messages"] == []


async def test_search(inbox: WebInbox, http: httpx.AsyncClient) -> None:
    await backend(inbox).send_messages(
        [
            EmailMessage("Invoice 42", "Amount due", FROM, ["billing@example.org"]),
            EmailMessage("Welcome", "Click to activate", FROM, ["ada@example.org"]),
            EmailMessage("Grüße", "Zoë says hi", FROM, ["zoe@example.org"]),
        ]
    )

    async def subjects(query: str) -> list[str]:
        response = await http.get("api/messages", params={"q": query})
        return [m["subject"] for m in response.json()["messages"]]

    assert await subjects("invoice") == ["Invoice 42"]
    assert await subjects("ACTIVATE") == ["Welcome"]  # the text body too
    assert await subjects("ada@example") == ["Welcome"]  # the envelope
    assert await subjects("zoë") == ["Grüße"]
    assert await subjects("nothing like it") == []


async def test_not_found_and_bad_ids(http: httpx.AsyncClient) -> None:
    for path in ("api/messages/99", "api/messages/x", "api/messages/1/raw"):
        assert (await http.get(path)).status_code == 404


async def test_foreign_host_header_is_refused(
    inbox: WebInbox, http: httpx.AsyncClient
) -> None:
    # A page on another site, its name rebound to 127.0.0.1, cannot read mail.
    response = await http.get("api/messages", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert (await http.get("api/messages", headers={"Host": "localhost"})).is_success


async def test_page_and_script_carry_a_strict_policy(http: httpx.AsyncClient) -> None:
    page = await http.get("")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert '<iframe id="preview" sandbox=""' in page.text
    script = (await http.get("static/app.js")).text
    assert "innerHTML" not in script.replace("never innerHTML", "")


# -- hostile mail ------------------------------------------------------------------


async def test_hostile_html_is_sandboxed(
    inbox: WebInbox, http: httpx.AsyncClient
) -> None:
    mail = EmailMultiAlternatives("<b>bold</b>", "text", FROM, ["to@example.org"])
    mail.attach_alternative(HOSTILE_HTML, "text/html")
    await backend(inbox).send_messages([mail])
    (summary,) = (await http.get("api/messages")).json()["messages"]

    html = await http.get(f"api/messages/{summary['id']}/html")
    assert html.text.rstrip("\n") == HOSTILE_HTML  # shown as sent, but:
    policy = html.headers["content-security-policy"]
    assert policy.startswith("sandbox;")  # no scripts, unique origin
    assert "default-src 'none'" in policy
    assert "img-src data:;" in policy  # no remote image unless asked
    assert "script-src" not in policy
    remote = await http.get(
        f"api/messages/{summary['id']}/html", params={"remote": "1"}
    )
    remote_policy = remote.headers["content-security-policy"]
    assert remote_policy.startswith("sandbox;")
    assert "img-src data: http: https:" in remote_policy
    assert "script-src" not in remote_policy
    # The subject stays text, in JSON.
    assert summary["subject"] == "<b>bold</b>"


async def test_hostile_filenames_are_cleaned(
    inbox: WebInbox, http: httpx.AsyncClient
) -> None:
    mail = EmailMessage("files", "see attached", FROM, ["to@example.org"])
    for name in HOSTILE_NAMES:
        mail.attach(name, b"<script>alert(4)</script>", "text/html")
    await backend(inbox).send_messages([mail])
    (summary,) = (await http.get("api/messages")).json()["messages"]
    detail = (await http.get(f"api/messages/{summary['id']}")).json()
    assert [a["filename"] for a in detail["attachments"]] == HOSTILE_NAMES

    for index in range(len(HOSTILE_NAMES)):
        response = await http.get(f"api/messages/{summary['id']}/attachments/{index}")
        assert response.content.rstrip(b"\r\n") == b"<script>alert(4)</script>"
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["x-content-type-options"] == "nosniff"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith("attachment; ")
        plain = disposition.split('filename="', 1)[1].split('"', 1)[0]
        assert "/" not in plain
        assert "\\" not in plain
        assert "<" not in plain
        assert ".." not in plain.strip(".")[:2]
        assert all(0x20 <= ord(c) < 0x7F for c in disposition)


HOSTILE_RAW = [
    b"Subject: no end of headers",
    b"From: a@example.com\r\nSubject: =?x-unknown?b?Zm9v?=\r\n\r\nbody\r\n",
    b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xff\xfe body\r\n",
    b"Subject: \x1b[31mred\x1b[0m \x00nul\r\n\r\n\x1b]0;title\x07\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
    b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"!!!notb64\r\n--x",
    b"From: " + b"(" * 900 + b"\r\n " + b"(" * 900 + b"a@example.com\r\n\r\nnested\r\n",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
    b"Content-Disposition: attachment; filename*=UTF-8''%2e%2e%2f%00evil\r\n\r\nx\r\n",
    b"To: <script>@example.com\r\nSubject: " + b"x\r\n " * 5000 + b"\r\n\r\n.\r\n",
]


async def test_hostile_raw_mail_never_breaks_the_api(
    inbox: WebInbox, http: httpx.AsyncClient
) -> None:
    for data in HOSTILE_RAW:
        await asyncio.to_thread(send_raw, inbox, data)
    listed = (await http.get("api/messages")).json()["messages"]
    assert len(listed) == len(HOSTILE_RAW)
    for summary in listed:
        base = f"api/messages/{summary['id']}"
        detail = await http.get(base)
        assert detail.status_code == 200
        json.dumps(detail.json())  # plain data all the way
        for attachment in detail.json()["attachments"]:
            part = await http.get(f"{base}/attachments/{attachment['index']}")
            assert part.status_code == 200
            assert part.headers["content-type"] == "application/octet-stream"
        assert (await http.get(f"{base}/raw")).status_code == 200
        assert (await http.get(f"{base}/html")).status_code in (200, 404)
    assert (await http.get("api/messages", params={"q": "red"})).status_code == 200


# -- the stores -----------------------------------------------------------------------


async def test_memory_store_is_bounded() -> None:
    store = MemoryStore(max_messages=3, max_bytes=1000)
    for n in range(5):
        await store.add("peer", FROM, ("to@example.org",), b"x" * 100 + bytes([n]))
    kept = await store.list()
    assert [m.data[-1] for m in kept] == [4, 3, 2]
    await store.add("peer", FROM, ("to@example.org",), b"y" * 950)
    assert [len(m.data) for m in await store.list()] == [950]  # bytes bound too


async def test_sqlite_store_persists_and_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite"
    store = SQLiteStore(path, max_messages=3, max_bytes=1000)
    for n in range(5):
        await store.add(
            "peer", FROM, ("a@example.org", "b@example.org"), bytes([n]) * 10
        )
    store.close()
    reopened = SQLiteStore(path, max_messages=3)
    kept = await reopened.list()
    assert [m.data[0] for m in kept] == [4, 3, 2]
    assert kept[0].rcpt_tos == ("a@example.org", "b@example.org")
    await reopened.add("peer", FROM, ("a@example.org",), b"z" * 5000)
    reopened.max_bytes = 1000
    await reopened.add("peer", FROM, ("a@example.org",), b"w" * 900)
    assert [len(m.data) for m in await reopened.list()] == [900]
    assert await reopened.delete(kept[0].id) is False  # already gone
    reopened.close()


async def test_inbox_with_sqlite_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "inbox.sqlite")
    async with WebInbox(smtp_port=0, web_port=0, store=store) as inbox:
        await backend(inbox).send_messages([rich(7)])
        async with httpx.AsyncClient(base_url=inbox.url) as http:
            (summary,) = (await http.get("api/messages")).json()["messages"]
    assert summary["subject"] == "Report 7"


# -- the command line -----------------------------------------------------------------


def test_cli_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["debug-server", "--web", "--max-messages", "0"]) == 2
    assert "--max-messages" in capsys.readouterr().err


def test_cli_web_inbox_serves(tmp_path: Path) -> None:
    import re
    import socket
    import subprocess
    import sys
    import time

    def free_port() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    smtp_port, web_port = free_port(), free_port()
    command = [
        *(sys.executable, "-m", "asyncmail", "debug-server", "--web"),
        *("--port", str(smtp_port), "--web-port", str(web_port)),
        *("--store", str(tmp_path / "mail.sqlite")),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert re.search(rf"web inbox at http://127.0.0.1:{web_port}/", banner), banner
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.sendmail(FROM, ["to@example.org"], b"Subject: via cli\r\n\r\nhi\r\n")
        deadline = time.monotonic() + 20
        while True:
            listed = httpx.get(f"http://127.0.0.1:{web_port}/api/messages").json()
            if listed["messages"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [m["subject"] for m in listed["messages"]] == ["via cli"]
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
    assert (tmp_path / "mail.sqlite").stat().st_size > 0


async def test_web_port_in_use_is_an_oserror_and_nothing_listens() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        inbox = WebInbox(smtp_port=0, web_port=port)
        with pytest.raises(OSError, match="in use"):
            await inbox.start()
        assert inbox.smtp._server is None  # the SMTP side never started


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"max_messages": 0},
            "max_messages must be at least 1 (a whole number), not 0",
        ),
        ({"max_bytes": -5}, "max_bytes must be at least 1 (a whole number), not -5"),
        ({"max_messages": 2.5}, "max_messages must be at least 1"),
    ],
)
def test_store_limits_are_checked_naming_the_option(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MemoryStore(**options)
