"""asyncmail's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures, all function-scoped and inert unless a test asks for them (the
plugin defines no hooks and imports nothing of asyncmail until then):

``mailoutbox``
    every send in the test, async or blocking, through any backend (also
    one built before the test), lands in an :class:`~asyncmail.testing.Outbox`,
    empty at the start of each test; ``asyncmail.outbox`` is the same list
    for the test's duration. ``asyncmail_outbox`` is the same fixture under a
    name that cannot clash with pytest-django's own ``mailoutbox``.
``smtp_server``
    a real SMTP server on 127.0.0.1 (:class:`~asyncmail.testing.SMTPTestServer`)
    with asyncmail's settings pointed at it for the test. Parametrise it
    indirectly for STARTTLS and AUTH::

        @pytest.mark.parametrize(
            "smtp_server", [{"tls": True, "credentials": ("u", "p")}], indirect=True
        )
        def test_secure(smtp_server): ...

``smtp_server_factory``
    starts more servers, with any options; each stops after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .outbox import Outbox
    from .server import SMTPTestServer

__all__ = ["asyncmail_outbox", "mailoutbox", "smtp_server", "smtp_server_factory"]


def _capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outbox]:
    import asyncmail

    from .outbox import Outbox

    outbox = Outbox()
    monkeypatch.setattr(asyncmail, "outbox", outbox)
    with outbox.capturing():
        yield outbox


@pytest.fixture
def mailoutbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outbox]:
    """Capture every e-mail the test sends; see :mod:`asyncmail.testing.outbox`."""
    yield from _capture(monkeypatch)


@pytest.fixture
def asyncmail_outbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outbox]:
    """``mailoutbox`` under a name no other plugin uses (pytest-django has a
    ``mailoutbox`` of its own, for ``django.core.mail``)."""
    yield from _capture(monkeypatch)


@pytest.fixture
def smtp_server_factory() -> Iterator[Callable[..., SMTPTestServer]]:
    """Start test SMTP servers: ``smtp_server_factory(tls=True, ...)`` takes
    :class:`~asyncmail.testing.SMTPTestServer`'s options and returns it
    started; every server stops when the test ends."""
    from .server import SMTPTestServer

    started: list[SMTPTestServer] = []

    def start(**options: Any) -> SMTPTestServer:
        server = SMTPTestServer(**options).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def smtp_server(
    request: pytest.FixtureRequest,
    smtp_server_factory: Callable[..., SMTPTestServer],
) -> Iterator[SMTPTestServer]:
    """A test SMTP server, with asyncmail's settings pointed at it.

    Options come from indirect parametrisation (a dict of
    :class:`~asyncmail.testing.SMTPTestServer` keyword arguments).
    """
    from asyncmail.settings import settings

    options = getattr(request, "param", None) or {}
    if not isinstance(options, dict):
        raise TypeError(
            "Parametrise smtp_server with a dict of SMTPTestServer options, "
            f"e.g. {{'tls': True}}; got {options!r}"
        )
    server = smtp_server_factory(**options)
    with settings.override(**server.settings()):
        yield server
