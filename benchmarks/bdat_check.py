"""Check relay_sink.c's CHUNKING (BDAT) support, byte for byte.

    python benchmarks/bdat_check.py [--delay-ms 0]

Starts the sink (no reply delay by default; --delay-ms 10 checks the
delayed replies of the relay scenario too), then over one connection: a
pipelined MAIL, RCPT and two BDAT chunks in one write (the chunks holding a
lone "." line and a NUL byte, which BDAT must pass through untouched), a
BDAT LAST split over many small writes, a DATA transaction after it, a
"BDAT 0 LAST", and a malformed BDAT that must get 501 and a closed
connection.  Then asyncmail's SMTP backend sends a fresh message (with a
line starting with "."), a raw one and one with a streamed attachment
through the sink, which must take them by BDAT.  Exits non-zero on the
first reply that differs, and checks the sink's own count of accepted
messages on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from _sinks import relay_binary


def replies(f: socket.SocketIO, n: int) -> list[str]:
    out = []
    for _ in range(n):
        line = f.readline().decode()
        while line[3:4] == "-":
            line = f.readline().decode()
        out.append(line[:3])
    return out


def expect(got: list[str], want: list[str], what: str) -> None:
    if got != want:
        sys.exit(f"FAIL {what}: got {got}, want {want}")
    print(f"ok   {what}: {' '.join(got)}")


async def through_asyncmail(port: int) -> None:
    """Three messages through asyncmail's SMTP backend, by BDAT."""
    import asyncmail
    from asyncmail.smtp import connection

    chunking: list[bool] = []
    original = connection.SMTPConnection.transaction

    def spy(self: connection.SMTPConnection, *args: object, **kwargs: object) -> object:
        chunking.append(self.chunking)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    connection.SMTPConnection.transaction = spy  # type: ignore[assignment,method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.bin"
        path.write_bytes(os.urandom(3 << 20))
        fresh = asyncmail.EmailMessage(
            "Fresh", "one\n.two\n", "a@example.com", ["b@example.com"]
        )
        raw = asyncmail.RawMessage(
            b"Subject: raw\r\n\r\n.\r\n", "a@example.com", ["c@example.com"]
        )
        streamed = asyncmail.EmailMessage(
            "Streamed", "see attached\n", "a@example.com", ["d@example.com"]
        )
        streamed.attach_file(path)
        backend = asyncmail.get_connection(
            "asyncmail.backends.smtp.EmailBackend", host="127.0.0.1", port=port
        )
        sent = await backend.send_messages([fresh, raw, streamed])
    connection.SMTPConnection.transaction = original  # type: ignore[method-assign]
    expect([str(sent)], ["3"], "asyncmail: fresh, raw and streamed messages sent")
    expect([str(c) for c in chunking], ["True"] * 3, "asyncmail used BDAT")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--delay-ms", default="0")
    delay = p.parse_args().delay_ms
    proc = subprocess.Popen(
        [str(relay_binary()), "-p", "0", "-d", delay], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(re.fullmatch(r"port=(\d+)\s*", proc.stdout.readline()).group(1))  # type: ignore[union-attr]
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        expect(replies(f, 1), ["220"], "greeting")
        s.sendall(b"EHLO check\r\n")
        line, caps = b"", []
        while not line.startswith(b"250 "):
            line = f.readline()
            caps.append(line[4:].strip().decode())
        if "CHUNKING" not in caps:
            sys.exit(f"FAIL EHLO does not offer CHUNKING: {caps}")
        print("ok   EHLO offers CHUNKING and", ", ".join(c for c in caps[1:]))
        one, two = b"Subject: a\r\n\r\n.\r\n", b"\x00 tail\r\n"
        s.sendall(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            + f"BDAT {len(one)}\r\n".encode()
            + one
            + f"BDAT {len(two)} LAST\r\n".encode()
            + two
        )
        expect(replies(f, 4), ["250"] * 4, "pipelined MAIL RCPT BDAT BDAT LAST")
        body = b"x" * 70000 + b"\r\n.\r\n"
        s.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.com>\r\n")
        s.sendall(f"BDAT {len(body)} LAST\r\n".encode())
        for i in range(0, len(body), 997):
            s.sendall(body[i : i + 997])
        expect(replies(f, 3), ["250"] * 3, "BDAT LAST in 997-byte pieces")
        s.sendall(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA\r\n")
        expect(replies(f, 3), ["250", "250", "354"], "DATA after BDAT")
        s.sendall(b"hi\r\n.\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<e@x.com>\r\n")
        expect(replies(f, 3), ["250"] * 3, "end of DATA, next MAIL RCPT")
        s.sendall(b"BDAT 0 LAST\r\n")
        expect(replies(f, 1), ["250"], "BDAT 0 LAST")
        s.sendall(b"BDAT -5 LAST\r\n")
        expect(replies(f, 1), ["501"], "BDAT -5 LAST refused")
        if f.read() != b"":
            sys.exit("FAIL the connection stayed open after a malformed BDAT")
        print("ok   connection closed after the malformed BDAT")
    asyncio.run(through_asyncmail(port))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    expect(re.findall(r"accepted=(\d+)", out), ["7"], "sink's accepted count")


if __name__ == "__main__":
    main()
