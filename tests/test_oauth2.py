"""OAuth2 AUTH (XOAUTH2, OAUTHBEARER) against aiosmtpd on 127.0.0.1.

The server's mechanisms decode the SASL string and check it field by field
against tokens a fake identity provider issued; tokens expire on demand, so
the refresh path (one new token, one more AUTH, never a second message) is
taken for real, in Gmail's style (334 error challenge, then 535) and in
Microsoft's (535 at once). Tokens must never show in logs, errors or reprs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult

from asyncmail import (
    ConfigurationError,
    EmailMessage,
    InsecureAuthError,
    MessageStatus,
    SMTPAuthenticationError,
)
from asyncmail.backends.smtp import EmailBackend
from asyncmail.settings import MASK, mask_secrets
from asyncmail.smtp import session as smtp
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio

USER = "app@example.com"
FROM = "app@example.com"


@dataclass
class IdentityProvider:
    """Issues tokens, and knows which are still valid (the server asks it)."""

    valid: set[str] = field(default_factory=set)
    issued: int = 0
    calls: list[bool] = field(default_factory=list)  # refresh flag of each call
    threads: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, refresh: bool = False) -> str:
        with self.lock:
            self.calls.append(refresh)
            self.threads.append(threading.current_thread().name)
            self.issued += 1
            token = f"ya29.token-{self.issued}-secretpart"
            self.valid.add(token)
            return token

    def expire_all(self) -> None:
        with self.lock:
            self.valid.clear()


@dataclass
class AuthLog:
    attempts: list[tuple[str, bytes]] = field(default_factory=list)  # (mech, raw)
    continuations: list[bytes] = field(default_factory=list)


class OAuthServer(SMTPServer):
    """aiosmtpd offering XOAUTH2 and/or OAUTHBEARER, checked against *idp*."""

    def __init__(
        self,
        idp: IdentityProvider,
        *,
        mechanisms: tuple[str, ...] = ("XOAUTH2", "OAUTHBEARER"),
        style: str = "gmail",  # gmail: 334 challenge then 535; microsoft: 535
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.idp = idp
        self.log = AuthLog()
        self.mechanisms = mechanisms
        self.style = style

    def _factory(self) -> SMTP:
        protocol = super()._factory()
        server = self

        async def check(smtp_server: SMTP, mechanism: str, raw: bytes) -> AuthResult:
            server.log.attempts.append((mechanism, raw))
            text = raw.decode()
            if mechanism == "XOAUTH2":
                expected_prefix = f"user={USER}\x01auth=Bearer "
            else:
                port = server.port
                expected_prefix = (
                    f"n,a={USER},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer "
                )
            token = text.removeprefix(expected_prefix).removesuffix("\x01\x01")
            ok = (
                text.startswith(expected_prefix)
                and text.endswith("\x01\x01")
                and token in server.idp.valid
            )
            if ok:
                return AuthResult(success=True, auth_data=USER)
            if server.style == "gmail":
                error = json.dumps({"status": "401", "schemes": "bearer"})
                answer = await smtp_server.challenge_auth(error)
                server.log.continuations.append(
                    answer if isinstance(answer, bytes) else b"<missing>"
                )
            return AuthResult(
                success=False, handled=False, message="535 5.7.8 Bad credentials"
            )

        async def auth_XOAUTH2(self: SMTP, _: SMTP, args: list[str]) -> AuthResult:
            return await check(self, "XOAUTH2", base64.b64decode(args[1]))

        async def auth_OAUTHBEARER(self: SMTP, _: SMTP, args: list[str]) -> AuthResult:
            return await check(self, "OAUTHBEARER", base64.b64decode(args[1]))

        methods = {"XOAUTH2": auth_XOAUTH2, "OAUTHBEARER": auth_OAUTHBEARER}
        # Only the mechanisms asked for (no PLAIN/LOGIN: a password would fail).
        protocol._auth_methods = {
            name: type(protocol._auth_methods["PLAIN"])(
                methods[name].__get__(protocol), True
            )
            for name in self.mechanisms
        }
        return protocol


def backend_for(port: int, provider: Any, **options: Any) -> EmailBackend:
    options.setdefault("timeout", 10)
    options.setdefault("local_hostname", "client.example")
    return EmailBackend(
        host="127.0.0.1",
        port=port,
        username=USER,
        oauth2_token_provider=provider,
        **options,
    )


def mail(n: int = 0) -> EmailMessage:
    return EmailMessage(f"Hi {n}", "Body\n", FROM, [f"to{n}@example.org"])


@pytest.fixture
def idp() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture
def gmail(idp: IdentityProvider) -> Iterator[OAuthServer]:
    with OAuthServer(idp) as server:
        yield server


# -- the happy paths -------------------------------------------------------------------


async def test_xoauth2_with_an_async_provider(
    gmail: OAuthServer, idp: IdentityProvider
) -> None:
    async def provider(*, refresh: bool) -> str:
        return idp.issue(refresh)

    assert await backend_for(gmail.port, provider).send_messages([mail()]) == 1

    ((mechanism, raw),) = gmail.log.attempts
    assert mechanism == "XOAUTH2"  # preferred where offered (Gmail, Microsoft)
    assert raw == f"user={USER}\x01auth=Bearer ya29.token-1-secretpart\x01\x01".encode()
    assert idp.calls == [False]
    assert len(gmail.messages) == 1


async def test_sync_provider_runs_off_the_event_loop(
    gmail: OAuthServer, idp: IdentityProvider
) -> None:
    loop_thread = threading.current_thread().name

    def provider() -> str:  # no refresh keyword: called without arguments
        return idp.issue()

    assert await backend_for(gmail.port, provider).send_messages([mail()]) == 1
    assert idp.threads
    assert all(name != loop_thread for name in idp.threads)


async def test_oauthbearer_when_only_it_is_offered(idp: IdentityProvider) -> None:
    with OAuthServer(idp, mechanisms=("OAUTHBEARER",)) as server:
        assert await backend_for(server.port, idp.issue).send_messages([mail()]) == 1
    ((mechanism, raw),) = server.log.attempts
    assert mechanism == "OAUTHBEARER"
    assert (
        raw
        == (
            f"n,a={USER},\x01host=127.0.0.1\x01port={server.port}\x01"
            "auth=Bearer ya29.token-1-secretpart\x01\x01"
        ).encode()
    )


async def test_a_token_per_new_connection(
    gmail: OAuthServer, idp: IdentityProvider
) -> None:
    backend = backend_for(gmail.port, idp.issue, max_connections=3)
    async with backend:
        assert await backend.send_messages([mail(n) for n in range(12)]) == 12
    assert gmail.sessions >= 2
    assert len(idp.calls) == gmail.sessions == len(gmail.log.attempts)
    assert len(gmail.messages) == 12


# -- refresh ---------------------------------------------------------------------------


@pytest.mark.parametrize("mechanisms", [("XOAUTH2",), ("OAUTHBEARER",)])
@pytest.mark.parametrize("style", ["gmail", "microsoft"])
async def test_expired_token_is_refreshed_once(
    idp: IdentityProvider, style: str, mechanisms: tuple[str, ...]
) -> None:
    stale = idp.issue()
    idp.expire_all()
    idp.calls.clear()

    def provider(*, refresh: bool) -> str:
        # A caching provider: hands out its cached (expired) token until told
        # that the server refused it.
        idp.calls.append(refresh)
        if not refresh:
            return stale
        return idp.issue(refresh=True)

    with OAuthServer(idp, mechanisms=mechanisms, style=style) as server:
        assert await backend_for(server.port, provider).send_messages([mail()]) == 1

    assert [a[1].count(b"token-1-") for a in server.log.attempts] == [1, 0]
    assert len(server.log.attempts) == 2
    assert idp.calls[:2] == [False, True]
    if style == "gmail":
        # The error challenge was answered as the mechanism requires.
        expected = b"" if mechanisms == ("XOAUTH2",) else b"\x01"
        assert server.log.continuations == [expected]
    assert len(server.messages) == 1  # the message went once
    assert server.sessions == 1  # on the same connection


async def test_refused_twice_fails_without_any_retry(idp: IdentityProvider) -> None:
    def provider(*, refresh: bool) -> str:
        idp.calls.append(refresh)
        return "ya29.never-valid"

    with OAuthServer(idp, style="microsoft") as server:
        message = mail()
        with pytest.raises(SMTPAuthenticationError, match="535") as info:
            await backend_for(server.port, provider, retries=3).send_messages([message])

    assert len(server.log.attempts) == 2  # one AUTH, one after the refresh
    assert idp.calls == [False, True]
    assert server.sessions == 1  # no new connection, no message retry
    assert server.messages == []
    assert b"MAIL FROM" not in server.recorder.wire
    assert message.result is not None
    assert message.result.status is MessageStatus.FAILED
    assert "never-valid" not in str(info.value)


async def test_server_without_oauth_mechanisms(idp: IdentityProvider) -> None:
    with (
        SMTPServer(credentials=("u", "p")) as server,  # PLAIN and LOGIN only
        pytest.raises(SMTPAuthenticationError, match="neither XOAUTH2 nor"),
    ):
        await backend_for(server.port, idp.issue).send_messages([mail()])
    assert idp.calls == []  # no token fetched for nothing


# -- secrets ---------------------------------------------------------------------------


async def test_tokens_never_in_logs_errors_or_reprs(
    idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    idp.issue()
    idp.expire_all()
    with OAuthServer(idp, style="gmail") as server:

        async def provider(*, refresh: bool) -> str:
            return "ya29.expired-secretpart"

        backend = backend_for(server.port, provider, retries=0)
        with pytest.raises(SMTPAuthenticationError) as info:
            await backend.send_messages([mail()])
        ok = backend_for(server.port, idp.issue)
        assert await ok.send_messages([mail()]) == 1

    sasl = [base64.b64encode(raw) for _, raw in server.log.attempts]
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    shown = "\n".join(
        [r.getMessage() for r in ours]
        + [str(info.value), repr(info.value), repr(backend), repr(ok)]
        + [repr(backend.oauth2), str(vars(info.value))]
    )
    assert "secretpart" not in shown
    for blob in sasl:
        assert blob.decode() not in shown
    assert mask_secrets({"OPTIONS": {"oauth2_token_provider": idp.issue}}) == {
        "OPTIONS": {"oauth2_token_provider": MASK}
    }


@pytest.mark.parametrize(
    ("token", "what"),
    [
        ("has space", "not a bearer token"),
        ("ctl\x01injected", "not a bearer token"),
        ("", "0 characters"),
        (None, "NoneType"),
        (b"bytes", "bytes"),
    ],
)
async def test_bad_token_from_the_provider(
    gmail: OAuthServer, token: Any, what: str
) -> None:
    with pytest.raises(SMTPAuthenticationError, match=what) as info:
        await backend_for(gmail.port, lambda: token).send_messages([mail()])
    assert gmail.log.attempts == []  # nothing sent with it
    if isinstance(token, str) and token:
        assert token not in str(info.value)


async def test_provider_failure_is_an_auth_error(gmail: OAuthServer) -> None:
    async def provider() -> str:
        raise RuntimeError("identity provider down")

    with pytest.raises(SMTPAuthenticationError, match=r"provider .* failed") as info:
        await backend_for(gmail.port, provider).send_messages([mail()])
    assert isinstance(info.value.__cause__, RuntimeError)


# -- TLS, as for passwords -------------------------------------------------------------


@pytest.fixture
def remote_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the backend see the 127.0.0.1 server as another host."""
    monkeypatch.setattr(smtp, "_is_loopback", lambda host: False)


@pytest.mark.usefixtures("remote_peer")
async def test_no_token_over_clear_text_to_a_remote_host(
    gmail: OAuthServer, idp: IdentityProvider
) -> None:
    with pytest.raises(InsecureAuthError, match="unencrypted"):
        await backend_for(gmail.port, idp.issue).send_messages([mail()])
    assert idp.calls == []
    assert b"AUTH" not in gmail.recorder.wire


@pytest.mark.usefixtures("remote_peer")
async def test_token_over_starttls_to_a_remote_host(idp: IdentityProvider) -> None:
    ca = trustme.CA()
    server_context = __import__("ssl").create_default_context(
        __import__("ssl").Purpose.CLIENT_AUTH
    )
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = __import__("ssl").create_default_context()
    ca.configure_trust(client_context)
    with OAuthServer(
        idp, starttls_context=server_context, require_starttls=True
    ) as server:
        backend = backend_for(
            server.port, idp.issue, use_tls=True, ssl_context=client_context
        )
        assert await backend.send_messages([mail()]) == 1
    assert server.messages[0].tls
    assert b"AUTH" not in b"".join(server.recorder.plaintext)


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"oauth2_token_provider": "not.a.module.fn"}, "cannot be imported"),
        ({"oauth2_token_provider": 42}, "must be a callable"),
        ({"oauth2_token_provider": str, "password": "x"}, "no password"),
        ({"oauth2_token_provider": str, "username": ""}, "needs username"),
    ],
)
def test_bad_configuration(options: dict[str, Any], message: str) -> None:
    options.setdefault("username", USER)
    with pytest.raises(ConfigurationError, match=message):
        EmailBackend(host="127.0.0.1", port=2525, **options)


def test_dotted_path_for_settings_files() -> None:
    backend = EmailBackend(
        host="127.0.0.1",
        port=2525,
        username=USER,
        oauth2_token_provider="secrets.token_urlsafe",
    )
    assert backend.oauth2 is not None
    assert "token_urlsafe" in repr(backend.oauth2)


async def test_provider_is_bounded_by_the_deadline(gmail: OAuthServer) -> None:
    async def provider() -> str:
        await asyncio.sleep(30)
        return "late"

    backend = backend_for(gmail.port, provider, deadline=0.5, retries=0)
    with pytest.raises(Exception, match=r"timed out|deadline"):
        await backend.send_messages([mail()])
    assert gmail.log.attempts == []
