"""One pooled backend for the lifetime of an ASGI app (Starlette, FastAPI).

Opening an SMTP connection per request wastes a TLS handshake and a login on
every send; opening one at import time breaks tests and forks. The lifespan
is the right place: :func:`mail_lifespan` opens a backend (a pool of
``max_connections`` when given) when the app starts, puts it in the lifespan
state and on ``app.state``, and closes it (QUIT) when the app stops::

    from fastapi import FastAPI, Request
    from asyncmail.integrations.starlette import mail_backend, mail_lifespan

    app = FastAPI(lifespan=mail_lifespan(max_connections=5))

    @app.post("/signup")
    async def signup(request: Request) -> dict[str, str]:
        await mail_backend(request).send_messages([...])
        return {"status": "ok"}

The lifespan itself is plain ASGI (an async context manager factory taking
the app), so it works for any framework that takes one; only the
``Request`` annotation of :func:`mail_backend`, which FastAPI's dependency
injection reads, comes from Starlette.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.requests import Request

from ..api import get_connection
from ..backends.base import BaseEmailBackend

# get_connection's overloads type each built-in backend's options; here the
# backend and options are the caller's, passed on as given (get_connection
# still checks them at run time).
_connect: Callable[..., BaseEmailBackend] = get_connection

__all__ = ["mail_backend", "mail_dependency", "mail_lifespan"]

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]

DEFAULT_STATE_KEY = "mail"


def mail_lifespan(
    lifespan: Lifespan | None = None,
    *,
    state_key: str = DEFAULT_STATE_KEY,
    backend: str | None = None,
    using: str | None = None,
    **options: Any,
) -> Lifespan:
    """A lifespan that keeps one open backend for the app's lifetime.

    :param lifespan: the app's own lifespan, run inside this one (so its
        startup can send mail, and its shutdown runs before the backend
        closes). The state it yields (a mapping, or None) is kept.
    :param state_key: the name under which the backend is found in the
        lifespan state (``request.state.mail``) and on ``app.state``.
    :param backend: a backend's dotted path, as for ``get_connection``.
    :param using: a configured mailer's name, as for ``get_connection``.
    :param options: the backend's options (``max_connections=5``, ...).

    The backend is created when the app starts, not when this is called, so
    settings configured after import (and tests' captures) apply.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[dict[str, Any]]:
        mail = _connect(backend, using=using, **options)
        async with mail:
            app_state = getattr(app, "state", None)
            if app_state is not None:
                setattr(app_state, state_key, mail)
            try:
                if lifespan is None:
                    yield {state_key: mail}
                else:
                    async with lifespan(app) as inner:
                        if inner is not None and not isinstance(inner, Mapping):
                            raise TypeError(
                                "The wrapped lifespan must yield a mapping or None, "
                                f"not {type(inner).__name__}"
                            )
                        yield {**(inner or {}), state_key: mail}
            finally:
                if (
                    app_state is not None
                    and getattr(app_state, state_key, None) is mail
                ):
                    delattr(app_state, state_key)

    return run


def mail_backend(request: Request) -> BaseEmailBackend:
    """The backend :func:`mail_lifespan` opened, for a request handler or
    as a FastAPI dependency (``mail: BaseEmailBackend = Depends(mail_backend)``).

    Raises RuntimeError, saying why, when the lifespan did not run (the
    usual cause in tests: a ``TestClient`` not used as a context manager).
    """
    return _backend(request, DEFAULT_STATE_KEY)


def mail_dependency(state_key: str) -> Callable[[Request], BaseEmailBackend]:
    """Like :func:`mail_backend`, for a lifespan given another ``state_key``."""

    def dependency(request: Request) -> BaseEmailBackend:
        return _backend(request, state_key)

    return dependency


def _backend(request: Any, state_key: str) -> BaseEmailBackend:
    mail = getattr(getattr(request, "state", None), state_key, None)
    if mail is None:
        app = getattr(request, "app", None)
        mail = getattr(getattr(app, "state", None), state_key, None)
    if not isinstance(mail, BaseEmailBackend):
        raise RuntimeError(
            f"No asyncmail backend in the request state under {state_key!r}: the "
            "app's lifespan did not run mail_lifespan(). Pass "
            "lifespan=mail_lifespan(...) to the app; in tests, use the client "
            "as a context manager (with TestClient(app) as client: ...), which "
            "runs the lifespan."
        )
    return mail
