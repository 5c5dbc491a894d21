"""The web inbox in a real browser: Debian's Chromium driven by Playwright.

``asyncmail debug-server --web`` runs as a process of its own; mail goes to
its SMTP port; the page is opened in headless Chromium and checked by what
it shows and by screenshots (decoded here: a blank area has almost no
distinct pixel values). Hostile HTML must run no script, open no dialog and
fetch nothing remote until "Load remote content" is pressed.

Required (a missing browser fails) where ASYNCMAIL_DOCS_BROWSER=1, as in
the nox docs session, which installs Playwright; skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import smtplib
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncmail import EmailMessage, EmailMultiAlternatives

REQUIRED = os.environ.get("ASYNCMAIL_DOCS_BROWSER") == "1"
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FROM = "sender@example.com"
HOSTILE_HTML = (
    "<h1 style='color:#c00'>Hostile but harmless</h1>"
    "<script>parent.document.title='pwned'; alert('script ran')</script>"
    '<img src="http://remote.invalid/track.png" onerror="alert(1)">'
    '<link rel="stylesheet" href="http://remote.invalid/style.css">'
)


def _chromium() -> str | None:
    candidates = [
        os.environ.get("CHROMIUM", ""),
        "/usr/lib/chromium/chromium",
        shutil.which("chromium") or "",
    ]
    return next((p for p in candidates if p and os.access(p, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def distinct_pixels(png: bytes) -> int:
    """How many distinct RGB(A) pixel values a screenshot holds (PNG decoded
    here, filters undone), so that "it rendered" is checked, not assumed."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    offset, idat = 8, b""
    width = height = channels = 0
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        body = png[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    pixels: set[bytes] = set()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        pixels.update(bytes(line[i : i + channels]) for i in range(0, stride, channels))
        previous = line
    return len(pixels)


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    if importlib.util.find_spec("starlette") is None:
        pytest.skip("the web extra is not installed")
    smtp_port, web_port = _free_port(), _free_port()
    command = [
        *(sys.executable, "-m", "asyncmail", "debug-server", "--web"),
        *("--port", str(smtp_port), "--web-port", str(web_port)),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert "web inbox at" in banner, banner
        yield smtp_port, f"http://127.0.0.1:{web_port}/"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def browser(inbox: tuple[int, str]) -> Iterator[Any]:
    if importlib.util.find_spec("playwright") is None:
        if REQUIRED:
            pytest.fail("Playwright is not installed (required here)")
        pytest.skip("Playwright is not installed")
    executable = _chromium()
    if executable is None:
        if REQUIRED:
            pytest.fail("Chromium is not installed (required here)")
        pytest.skip("Chromium is not installed")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=LAUNCH_FLAGS,
            headless=True,
            accept_downloads=True,
            viewport={"width": 1200, "height": 800},
        )
        try:
            yield context
        finally:
            context.close()


def send(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail(FROM, message.recipients(), message.as_bytes())


def test_the_inbox_in_chromium(
    inbox: tuple[int, str], browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    smtp_port, url = inbox
    report = EmailMultiAlternatives(
        "Quarterly report", "Totals inside.", FROM, ["boss@example.org"]
    )
    report.attach_alternative(
        "<h1 style='color:#1f4e79'>Quarterly report</h1><p>Total: <b>42</b></p>"
        "<table border=1><tr><td style='background:#fc0'>Q1</td><td>10</td></tr>"
        "</table>",
        "text/html",
    )
    report.attach("totals.csv", "quarter,total\nQ1,10\n", "text/csv")
    hostile = EmailMultiAlternatives(
        "<img src=x onerror=alert(9)>", "text", FROM, ["victim@example.org"]
    )
    hostile.attach_alternative(HOSTILE_HTML, "text/html")
    plain = EmailMessage("Plain note", "Just text.", FROM, ["ada@example.org"])
    for message in (report, hostile, plain):
        send(smtp_port, message)

    remote: list[str] = []
    dialogs: list[str] = []
    errors: list[str] = []
    browser.route(
        re.compile(r"^https?://remote\.invalid/"),
        lambda route: (remote.append(route.request.url), route.abort()),
    )
    page = browser.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)

    # The list shows the three messages.
    expect(page.locator("#list li")).to_have_count(3)
    assert page.locator("#count").inner_text() == "3 messages"
    subjects = page.locator("#list .subject").all_inner_texts()
    assert subjects == [
        "Plain note",
        "<img src=x onerror=alert(9)>",
        "Quarterly report",
    ]
    listing = page.screenshot(path=str(tmp_path / "list.png"))
    assert distinct_pixels(page.locator("#list").screenshot()) > 20

    # The preview renders the HTML in the sandboxed frame.
    page.locator("#list li", has_text="Quarterly report").click()
    frame = page.frame_locator("#preview")
    frame.locator("b").wait_for()
    assert frame.locator("b").inner_text() == "42"
    preview = page.locator("#preview").screenshot(path=str(tmp_path / "preview.png"))
    assert distinct_pixels(preview) > 10  # text and the yellow cell, not blank
    assert page.locator("#preview").get_attribute("sandbox") == ""

    # The attachment downloads, byte for byte.
    with page.expect_download() as download:
        page.locator("#attachments a", has_text="totals.csv").click()
    assert download.value.suggested_filename == "totals.csv"
    saved = Path(download.value.path())
    assert saved.read_bytes().replace(b"\r\n", b"\n") == b"quarter,total\nQ1,10\n"

    # Text, headers and raw source are shown as text.
    page.locator("#tabs button[data-tab=headers]").click()
    assert "Quarterly report" in page.locator("#pane-headers").inner_text()
    page.locator("#tabs button[data-tab=raw]").click()
    assert "Content-Type: multipart/mixed" in page.locator("#pane-raw").inner_text()

    # Hostile HTML: rendered, but no script, no dialog, nothing remote.
    page.locator("#list li", has_text="onerror=alert(9)").click()
    expect(page.locator("#meta h2")).to_have_text("<img src=x onerror=alert(9)>")
    expect(page.locator("#pane-html")).to_be_visible()
    page.frame_locator("#preview").locator("h1").wait_for()
    page.wait_for_timeout(500)
    assert page.title() == "asyncmail inbox"
    assert dialogs == []
    assert remote == []
    hostile_shot = page.locator("#preview").screenshot(
        path=str(tmp_path / "hostile.png")
    )
    assert distinct_pixels(hostile_shot) > 5
    assert page.locator("#meta h2").inner_text() == "<img src=x onerror=alert(9)>"

    # Remote content only when asked for; still no script.
    page.locator("#remote").click()
    deadline = time.monotonic() + 10
    while not remote and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert any(u.startswith("http://remote.invalid/") for u in remote)
    assert dialogs == []
    assert page.title() == "asyncmail inbox"

    # Live: a new message appears without reloading; delete removes one.
    send(smtp_port, EmailMessage("Arrived later", "live", FROM, ["x@example.org"]))
    expect(page.locator("#list li")).to_have_count(4)
    page.locator("#list li", has_text="Arrived later").click()
    page.locator("#pane-text").wait_for()
    page.locator("#delete").click()
    expect(page.locator("#list li")).to_have_count(3)
    expect(page.locator("#detail")).to_be_hidden()

    # Search filters the list.
    page.locator("#search").fill("quarterly")
    expect(page.locator("#list li")).to_have_count(1)
    final = page.screenshot(path=str(tmp_path / "search.png"))
    assert final != listing
    assert errors == []
