"""Setting an SMTP session up with aiosmtplib, and handing it over.

How a connection is made (:func:`open_session`): greeting, EHLO (HELO
fallback), STARTTLS when ``use_tls`` (required: a server that does not offer
it is an error, never a silent downgrade), EHLO again, then AUTH when
credentials are set, but only over TLS, to a loopback peer, or with the
loudly named ``dangerously_allow_plaintext_auth=True``. Anything that fails
closes the client; nothing half set up is returned.

Then the transport is handed from aiosmtplib to our own protocol
(:func:`hand_over`): aiosmtplib's per-command API costs most of the client's
CPU (a timer and an address parse per command, no pipelining). This module
is the one place that touches aiosmtplib's private attributes (the protocol's
``_buffer`` of bytes read but not parsed); ``tests/test_aiosmtplib_contract.py``
fails if an aiosmtplib release changes them, and the dependency is pinned
below its next major version.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import aiosmtplib

from ..dnsname import aget_fqdn
from ..exceptions import (
    InsecureAuthError,
    MailError,
    SMTPAuthenticationError,
    SMTPResponseError,
    SMTPServerDisconnectedError,
    SMTPTimeoutError,
    TLSError,
)
from ..oauth2 import authenticate as oauth2_authenticate
from .connection import SMTPConnection
from .errors import (
    add_hint,
    caused_by,
    handshake_error,
    in_handshake,
    map_error,
    plain_answer,
)

if TYPE_CHECKING:
    from ..oauth2 import _Provider

__all__ = ["SessionConfig", "hand_over", "open_session"]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What setting a session up needs (the backend's options)."""

    host: str
    port: int
    username: str
    password: str
    use_tls: bool
    use_ssl: bool
    timeout: float | None
    local_hostname: str | None
    dangerously_allow_plaintext_auth: bool
    oauth2: _Provider | None  # the token source (asyncmail.oauth2)

    @property
    def where(self) -> str:
        return f"SMTP {self.host}:{self.port}"


async def open_session(
    config: SessionConfig, tls: ssl.SSLContext | None, deadline: float | None
) -> SMTPConnection:
    """Open a new, fully set-up connection (TLS and AUTH done) or raise.

    *deadline* (a loop time) bounds the whole set-up; ``timeout`` still
    bounds each wait on the server. Errors are asyncmail's (mapped here,
    with the cause kept and a hint where one helps).
    """
    where = config.where
    client = aiosmtplib.SMTP(
        hostname=config.host,
        port=config.port,
        local_hostname=config.local_hostname or await aget_fqdn(),
        timeout=config.timeout,
        use_tls=config.use_ssl,
        start_tls=False,
        tls_context=tls,
    )
    try:
        async with asyncio.timeout_at(deadline):
            try:
                await client.connect()
            except Exception as exc:
                if config.use_ssl and in_handshake(exc, client):
                    raise handshake_error(exc, where) from exc
                raise
            await _hello(client)
            if config.use_tls:
                if not client.supports_extension("starttls"):
                    raise TLSError(
                        f"{where}: STARTTLS extension not supported by "
                        "server. STARTTLS was required (use_tls) but the "
                        "server does not offer it; nothing was sent"
                    )
                try:
                    await client.starttls(tls_context=tls)
                except aiosmtplib.SMTPServerDisconnected as exc:
                    # Closed or reset during the handshake (e.g. a server
                    # that speaks only an old TLS): not worth retrying.
                    raise handshake_error(exc, where) from exc
                await _hello(client)
            if config.username or config.password or config.oauth2 is not None:
                await _login(client, config)
        return hand_over(client, config.timeout)
    except BaseException as exc:
        client.close()
        if isinstance(exc, MailError):
            _hinted(config, exc, exc)
            raise  # ours already, with its cause kept
        if isinstance(exc, Exception):
            raise _hinted(config, map_error(exc, where), exc) from exc
        raise


def hand_over(client: aiosmtplib.SMTP, timeout: float | None) -> SMTPConnection:
    """Take the set-up session's transport from *client* into an
    :class:`SMTPConnection`. Bytes aiosmtplib read but did not parse are
    unsolicited (the server spoke out of turn): the connection starts
    broken, and is never used for a message."""
    transport = client.transport
    # uvloop's transports do not subclass asyncio's; check the interface.
    if transport is None or not hasattr(transport, "set_protocol"):
        raise SMTPServerDisconnectedError("The connection closed during setup")
    transport = cast("asyncio.WriteTransport", transport)
    protocol = client.protocol
    leftover = bytes(protocol._buffer) if protocol is not None else b""
    connection = SMTPConnection(
        transport,
        extensions=client.esmtp_extensions,
        client=client,
        timeout=timeout,
    )
    transport.set_protocol(connection.stream)
    if leftover:
        connection.stream.error = SMTPResponseError("Unsolicited data from the server")
    return connection


def _hinted(config: SessionConfig, error: MailError, exc: BaseException) -> MailError:
    """*error*, saying what to check for the connect failures users hit
    most (a wrong host or port, TLS of the wrong kind)."""
    if caused_by(exc, ConnectionRefusedError):
        return add_hint(
            error,
            f"Is an SMTP server listening on {config.host}:{config.port}? Check "
            "EMAIL_HOST and EMAIL_PORT (or the host and port options)",
        )
    if config.use_ssl and isinstance(error, TLSError) and plain_answer(exc):
        return add_hint(
            error,
            f"The server on port {config.port} answered without TLS: use_ssl "
            "(EMAIL_USE_SSL) is implicit TLS, usually port 465; for STARTTLS "
            "set use_tls (EMAIL_USE_TLS) instead, usually with port 587",
        )
    if (
        not config.use_ssl
        and config.port == 465
        and isinstance(error, SMTPTimeoutError)
    ):
        return add_hint(
            error,
            "Port 465 usually expects implicit TLS: set use_ssl (EMAIL_USE_SSL)",
        )
    return error


async def _hello(client: aiosmtplib.SMTP) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


async def _login(client: aiosmtplib.SMTP, config: SessionConfig) -> None:
    where = config.where
    encrypted = client.get_transport_info("sslcontext") is not None
    peer = client.get_transport_info("peername")
    loopback = isinstance(peer, tuple) and _is_loopback(str(peer[0]))
    if not (encrypted or loopback or config.dangerously_allow_plaintext_auth):
        raise InsecureAuthError(
            f"{where}: refusing to send credentials over an unencrypted "
            "connection; set use_tls or use_ssl (or, on a trusted network only, "
            "dangerously_allow_plaintext_auth=True)"
        )
    if not client.supports_extension("auth"):
        raise SMTPAuthenticationError(
            f"{where}: credentials are set but the server offers no AUTH"
        )
    if config.oauth2 is not None:
        await oauth2_authenticate(
            client,
            config.oauth2,
            username=config.username,
            host=config.host,
            port=config.port,
            where=where,
        )
        return
    await client.login(config.username, config.password)


def _is_loopback(host: str) -> bool:
    """Whether *host* (a peer's IP address, never a name) is a loopback address.

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``, what a dual-stack
    socket reports) counts as the IPv4 address it maps.
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
