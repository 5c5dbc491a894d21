"""Shared fixtures: anyio backends (asyncio, asyncio+uvloop), clean settings.

asyncmail's own pytest plugin (``mailoutbox``, ``smtp_server``) is loaded
through its entry point, as in any project that installs asyncmail; the
clean-settings fixture checks that no capture outlives its test."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

import asyncmail
from asyncmail.testing import routing

BACKENDS = [pytest.param(("asyncio", {}), id="asyncio")]
if importlib.util.find_spec("uvloop") is not None:
    BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts from the defaults: no EMAIL_* environment, nothing
    configured, an empty outbox."""
    from asyncmail.settings import DEFAULTS

    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    asyncmail.settings.reload_environment()
    with asyncmail.settings.override():
        asyncmail.outbox.clear()
        yield
    asyncmail.settings.reload_environment()
    # The plugin's mailoutbox (and capture_mail) must end with their test.
    assert routing._active == [], "a mail capture outlived its test"
