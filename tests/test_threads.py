"""Worker threads stay bounded under a burst of concurrent blocking calls.

50 threads call ``send_mail`` at once, each building its own STARTTLS
context (loading the CA store is blocking work done in a worker thread),
and the FQDN is not known yet when they start: before the fix every one of
them took a worker thread (anyio's default allows 40), and the idle workers
lingered. Run in a fresh interpreter, so that the first FQDN look-up is part
of the burst.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trustme

from asyncmail.threads import MAX_THREADS
from smtpserver import SMTPServer

SCRIPT = """
import logging, threading
import asyncmail

logging.getLogger("asyncio").setLevel(logging.ERROR)
asyncmail.configure(EMAIL_HOST="127.0.0.1", EMAIL_PORT={port}, EMAIL_TIMEOUT=20,
                    EMAIL_USE_TLS=True)
start = threading.Barrier(50)
sent = []

def work():
    start.wait()
    sent.append(asyncmail.send_mail("burst", "b", "a@example.com", ["b@example.com"]))

threads = [threading.Thread(target=work) for _ in range(50)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(60)
workers = [t for t in threading.enumerate()
           if t.name.startswith(("AnyIO worker", "asyncmail-worker", "asyncio_"))]
print(sum(sent), len(workers))
"""


@pytest.fixture
def ca_file(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


def test_fifty_concurrent_blocking_calls_use_few_threads(
    ca_file: tuple[trustme.CA, Path],
) -> None:
    ca, path = ca_file
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with SMTPServer(starttls_context=context, require_starttls=True) as server:
        process = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(SCRIPT).format(port=server.port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "SSL_CERT_FILE": str(path)},
        )

    assert process.stderr == ""
    sent, workers = map(int, process.stdout.split())
    assert sent == 50
    assert len(server.messages) == 50
    assert all(received.tls for received in server.messages)
    # The FQDN look-up and the TLS contexts: MAX_THREADS of ours at most,
    # plus the library loop's resolver workers (a numeric host needs none).
    assert workers <= MAX_THREADS
