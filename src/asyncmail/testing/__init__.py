"""Testing support: capture sent mail, a real debug SMTP server, assertions.

With pytest, the plugin (registered through the ``pytest11`` entry point, so
installed with asyncmail) offers the ``mailoutbox`` and ``smtp_server``
fixtures; see the "Testing your application" page. Without pytest, the same
tools are importable here:

* :func:`capture_mail` and :class:`Outbox`: every send in a block goes to an
  in-memory outbox, with ``assert_sent()`` and friends;
* :class:`SMTPTestServer`: aiosmtpd on 127.0.0.1 in a thread of its own,
  optionally with STARTTLS (from a trustme CA) and AUTH, recording envelopes
  and parsed messages.

Names are imported lazily: the core imports :mod:`asyncmail.testing.routing`
on every send path, and that must not pull the rest in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outbox import CaptureBackend, Criteria, Outbox, capture_mail
    from .routing import AmbiguousCaptureError
    from .server import ReceivedMail, SMTPTestServer

__all__ = [
    "AmbiguousCaptureError",
    "CaptureBackend",
    "Criteria",
    "Outbox",
    "ReceivedMail",
    "SMTPTestServer",
    "capture_mail",
]

_WHERE = {
    "AmbiguousCaptureError": "routing",
    "CaptureBackend": "outbox",
    "Criteria": "outbox",
    "Outbox": "outbox",
    "ReceivedMail": "server",
    "SMTPTestServer": "server",
    "capture_mail": "outbox",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncmail.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
