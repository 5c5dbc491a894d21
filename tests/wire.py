"""What a message looks like in the DATA phase, for tests' expectations."""

from __future__ import annotations


def dot_stuff(data: bytes) -> bytes:
    """*data* (clean CRLF, as asyncmail renders it) dot-stuffed, with the
    end-of-data line: the bytes an SMTP server reads after DATA."""
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
