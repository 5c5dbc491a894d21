"""OAuth2 for SMTP: XOAUTH2 (Gmail, Microsoft 365) and OAUTHBEARER (RFC 7628).

Gmail and Microsoft 365 no longer take passwords for SMTP: the client
presents an OAuth2 access token. The SMTP backend's
``oauth2_token_provider`` option is a callable that returns one; it is
called for every new connection (tokens expire, so none is kept), with
``refresh=True`` when the server has just refused a token, if it takes that
keyword. An ``async def`` provider is awaited; a plain function is run in a
worker thread, so that a blocking token refresh (an HTTP call to the identity
provider) never stalls the event loop.

When the server refuses the token (535, or 334 with an error challenge,
which is answered as the mechanism requires so that the final 535 comes),
the provider is asked once for a fresh token and AUTH is tried once more on
the same connection; no message is ever sent again because of it. A second
refusal is an :class:`~asyncmail.exceptions.SMTPAuthenticationError`.

Tokens are secrets: they are never kept on the backend, never logged, never
in an error message or a repr. As for passwords, AUTH is only sent over TLS
(or to a loopback server, or with ``dangerously_allow_plaintext_auth``).
"""

from __future__ import annotations

import base64
import functools
import importlib
import inspect
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio.to_thread

from .exceptions import ConfigurationError, SMTPAuthenticationError

if TYPE_CHECKING:
    import aiosmtplib

__all__ = ["TokenProvider", "authenticate", "token_provider_from_option"]

#: A callable returning an access token (str), or an awaitable of one; it may
#: take a keyword argument ``refresh`` (True after the server refused a token).
TokenProvider: TypeAlias = Callable[..., "str | Awaitable[str]"]

# RFC 6750 b64token, a little wider (some providers' tokens hold other
# printable characters): printable ASCII, no space, no SASL separator \x01.
_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")
_REFRESH_CODES = frozenset({334, 535})


class _Provider:
    """A checked token provider: how to call it, and never what it returned."""

    __slots__ = ("_call", "_takes_refresh", "is_async", "name")

    def __init__(self, call: TokenProvider) -> None:
        self._call = call
        self.name = getattr(call, "__qualname__", type(call).__qualname__)
        try:
            parameters = inspect.signature(call).parameters.values()
        except (TypeError, ValueError):  # some builtins: call it without arguments
            parameters = ()  # type: ignore[assignment]
        self._takes_refresh = any(
            p.kind is p.VAR_KEYWORD
            or (
                p.name == "refresh"
                and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            )
            for p in parameters
        )
        self.is_async = inspect.iscoroutinefunction(
            call
        ) or inspect.iscoroutinefunction(
            getattr(call, "__call__", None)  # noqa: B004 - an async __call__
        )

    def __repr__(self) -> str:
        return f"<OAuth2 token provider {self.name}>"

    async def token(self, *, refresh: bool, where: str) -> str:
        kwargs = {"refresh": refresh} if self._takes_refresh else {}
        try:
            if self.is_async:
                result: Any = self._call(**kwargs)
            else:
                result = await anyio.to_thread.run_sync(
                    functools.partial(self._call, **kwargs), abandon_on_cancel=True
                )
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise SMTPAuthenticationError(
                f"{where}: the OAuth2 token provider {self.name} failed: "
                f"{type(exc).__name__}"
            ) from exc
        if not isinstance(result, str) or not _TOKEN.fullmatch(result):
            # Say what is wrong without showing any of it.
            what = (
                f"a {type(result).__name__}"
                if not isinstance(result, str)
                else f"a str of {len(result)} characters that is not a bearer "
                "token (printable ASCII, no spaces)"
            )
            raise SMTPAuthenticationError(
                f"{where}: the OAuth2 token provider {self.name} returned {what}"
            )
        return result


def token_provider_from_option(value: Any) -> _Provider | None:
    """The backend's ``oauth2_token_provider`` option, checked: a callable,
    or the dotted path of one (for settings files), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        module, _, name = value.rpartition(".")
        try:
            value = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(
                f"oauth2_token_provider {value!r} cannot be imported: {exc}"
            ) from exc
    if not callable(value):
        raise ConfigurationError(
            "oauth2_token_provider must be a callable returning an access token "
            f"(or its dotted path), not {type(value).__name__}"
        )
    return _Provider(value)


def xoauth2_response(username: str, token: str) -> bytes:
    """The XOAUTH2 initial response (base64), as Google and Microsoft define it."""
    raw = f"user={username}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode("utf-8"))


def oauthbearer_response(username: str, token: str, host: str, port: int) -> bytes:
    """The OAUTHBEARER initial response (base64), RFC 7628 section 3.1."""
    # The GS2 header's authzid escapes "," and "=" (RFC 5801).
    authzid = username.replace("=", "=3D").replace(",", "=2C")
    raw = f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode("utf-8"))


async def _attempt(
    client: aiosmtplib.SMTP,
    *,
    mechanism: str,
    username: str,
    token: str,
    host: str,
    port: int,
) -> None:
    """One AUTH exchange; raises aiosmtplib's SMTPAuthenticationError if refused."""
    import aiosmtplib

    if mechanism == "xoauth2":
        await client.auth_xoauth2(username, token)  # answers a 334 challenge itself
        return
    response = await client.execute_command(
        b"AUTH", b"OAUTHBEARER", oauthbearer_response(username, token, host, port)
    )
    if response.code == 334:
        # An error challenge (JSON status): RFC 7628 3.2.3, reply with a
        # single %x01 so that the server sends its final failure.
        response = await client.execute_command(base64.b64encode(b"\x01"))
    if response.code != 235:
        raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)


async def authenticate(
    client: aiosmtplib.SMTP,
    provider: _Provider,
    *,
    username: str,
    host: str,
    port: int,
    where: str,
) -> None:
    """AUTH with a token from *provider*: XOAUTH2 where the server offers it
    (Gmail, Microsoft 365), else OAUTHBEARER. A refused token (334/535) gets
    one refresh and one more AUTH; anything else is raised as it is."""
    import aiosmtplib

    offered = client.server_auth_methods
    if "xoauth2" in offered:
        mechanism = "xoauth2"
    elif "oauthbearer" in offered:
        mechanism = "oauthbearer"
    else:
        raise SMTPAuthenticationError(
            f"{where}: an OAuth2 token provider is set but the server offers "
            f"neither XOAUTH2 nor OAUTHBEARER (it offers: "
            f"{', '.join(m.upper() for m in offered) or 'nothing'})"
        )
    token = await provider.token(refresh=False, where=where)
    try:
        await _attempt(
            client,
            mechanism=mechanism,
            username=username,
            token=token,
            host=host,
            port=port,
        )
    except aiosmtplib.SMTPAuthenticationError as exc:
        if exc.code not in _REFRESH_CODES:
            raise
        token = await provider.token(refresh=True, where=where)
        await _attempt(
            client,
            mechanism=mechanism,
            username=username,
            token=token,
            host=host,
            port=port,
        )
