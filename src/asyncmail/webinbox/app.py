"""The web inbox's ASGI app (Starlette): a page, its script, a JSON API.

Routes (all under the page's own origin, served on 127.0.0.1)::

    GET    /                                   the inbox page
    GET    /api/version                        {"version": n}, changed by any change
    GET    /api/messages?q=text                summaries, newest first (q: search)
    GET    /api/messages/{id}                  headers, text, attachments list
    GET    /api/messages/{id}/raw              the raw source, text/plain
    GET    /api/messages/{id}/html[?remote=1]  the HTML body, sandboxed
    GET    /api/messages/{id}/attachments/{n}  an attachment, as a download
    DELETE /api/messages/{id}                  delete one
    DELETE /api/messages                       delete all

Mail is hostile input. The page is static and builds its DOM with
``textContent`` only; message data reaches it as JSON. A message's HTML is
served on its own URL with ``Content-Security-Policy: sandbox`` (a unique
origin, no scripts, no forms, no plugins) and ``default-src 'none'`` (no
remote images, styles or fonts unless ``remote=1``, which the user asks for
with a button), and the page shows it in an ``<iframe sandbox>``. Raw
sources and attachments are served as ``text/plain`` and
``application/octet-stream`` downloads with ``nosniff``, whatever type the
message claims, with a cleaned file name. Requests whose Host is not a
loopback name are refused (DNS rebinding).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .store import Store
from .view import parse, safe_filename

__all__ = ["create_app"]

_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "frame-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# For the message's HTML: no script can run (sandbox without allow-scripts,
# no script-src), nothing is fetched (default-src 'none'), inline styles and
# data: images are fine. With remote=1, images, styles and fonts from anywhere.
_HTML_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)
_HTML_CSP_REMOTE = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline' http: https:; "
    "img-src data: http: https:; font-src http: https:; base-uri 'none'; "
    "form-action 'none'"
)
_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _static(name: str) -> bytes:
    return (files(__package__) / "static" / name).read_bytes()


def create_app(store: Store) -> Starlette:
    """The inbox app over *store*."""
    page, script, style = _static("index.html"), _static("app.js"), _static("app.css")

    def asset(body: bytes, media_type: str) -> Response:
        return Response(body, media_type=media_type, headers=_COMMON)

    async def index(request: Request) -> Response:
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={**_COMMON, "Content-Security-Policy": _PAGE_CSP},
        )

    async def app_js(request: Request) -> Response:
        return asset(script, "text/javascript; charset=utf-8")

    async def app_css(request: Request) -> Response:
        return asset(style, "text/css; charset=utf-8")

    def json(data: Any, status: int = 200) -> Response:
        return JSONResponse(data, status_code=status, headers=_COMMON)

    async def version(request: Request) -> Response:
        return json({"version": store.version})

    async def messages(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        found = [parse(message) for message in await store.list()]
        if query:
            found = [message for message in found if message.matches(query)]
        return json(
            {
                "version": store.version,
                "messages": [message.summary() for message in found],
            }
        )

    async def clear(request: Request) -> Response:
        await store.clear()
        return json({"deleted": "all"})

    async def _stored(request: Request) -> Any:
        try:
            message_id = int(request.path_params["id"])
        except ValueError:
            return None
        return await store.get(message_id)

    def missing() -> Response:
        return json({"error": "no such message"}, 404)

    async def detail(request: Request) -> Response:
        stored = await _stored(request)
        return missing() if stored is None else json(parse(stored).detail())

    async def delete(request: Request) -> Response:
        stored = await _stored(request)
        if stored is None or not await store.delete(stored.id):
            return missing()
        return json({"deleted": stored.id})

    async def raw(request: Request) -> Response:
        stored = await _stored(request)
        if stored is None:
            return missing()
        return Response(
            stored.data,
            media_type="text/plain; charset=utf-8",
            headers={
                **_COMMON,
                "Content-Security-Policy": "sandbox; default-src 'none'",
            },
        )

    async def html(request: Request) -> Response:
        stored = await _stored(request)
        if stored is None:
            return missing()
        body = parse(stored).html
        if body is None:
            return json({"error": "the message has no HTML body"}, 404)
        remote = request.query_params.get("remote") == "1"
        return Response(
            body,
            media_type="text/html; charset=utf-8",
            headers={
                **_COMMON,
                "Content-Security-Policy": _HTML_CSP_REMOTE if remote else _HTML_CSP,
            },
        )

    async def attachment(request: Request) -> Response:
        stored = await _stored(request)
        if stored is None:
            return missing()
        parsed = parse(stored)
        try:
            index = int(request.path_params["n"])
        except ValueError:
            index = -1
        listed = parsed.attachments()
        data = parsed.attachment_data(index)
        if data is None:
            return json({"error": "no such attachment"}, 404)
        name = safe_filename(listed[index].filename)
        ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                **_COMMON,
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Content-Disposition": (
                    f'attachment; filename="{ascii_name}"; '
                    f"filename*=UTF-8''{quote(name, safe='')}"
                ),
            },
        )

    routes = [
        Route("/", index),
        Route("/static/app.js", app_js),
        Route("/static/app.css", app_css),
        Route("/api/version", version),
        Route("/api/messages", messages, methods=["GET"]),
        Route("/api/messages", clear, methods=["DELETE"]),
        Route("/api/messages/{id}", detail, methods=["GET"]),
        Route("/api/messages/{id}", delete, methods=["DELETE"]),
        Route("/api/messages/{id}/raw", raw),
        Route("/api/messages/{id}/html", html),
        Route("/api/messages/{id}/attachments/{n}", attachment),
    ]
    hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
    return Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
    )
