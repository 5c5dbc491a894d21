"""SMTP backend: options, preparing messages, delivering them, dispatch.

The protocol lives in :mod:`asyncmail.smtp` (a reply parser and a
transaction state machine fed bytes, driven by an asyncio connection; the
session set up with aiosmtplib). This module is policy on top of it:

How a message is sent: it is rendered and addressed once
(:meth:`EmailBackend._prepare`), then each attempt takes a connection from
the pool (:mod:`asyncmail.pool`), through the breaker, and runs one
transaction on it. Outcomes are recorded per recipient (see
:mod:`asyncmail.results`). Transient failures (connection lost before the
end of data, 421, 4xx on MAIL, RCPT or DATA) are retried by the backend's
:class:`~asyncmail.backends.retry.RetryPolicy`, within ``retries`` and the
per-message ``deadline``, for the recipients still pending. A recipient the
data was written for is never retried: a connection lost after the end of
data leaves it "unknown" (it may have been delivered), and a 4xx reply to
the end of data leaves it "temporary" for the caller to decide.

With ``max_connections`` above 1 the backend sends concurrently over a
bounded pool, optionally rate limited (see :mod:`asyncmail.ratelimit`); with
the default of 1 it behaves like Django's backend: one connection, made for
the first message of a ``send_messages`` call (or by ``open()``), reused
while open. Consecutive connect failures open the breaker
(:mod:`asyncmail.backends.retry`), for ``open()`` and for messages alike; a
421 greeting while other connections are open is back-pressure for the
pool. Cancelling a send publishes, first, the result of every message it
took.

Above the protocol layer asyncmail speaks anyio (task groups, cancel
scopes, locks, sleeps): shielded cleanup and nested deadlines need cancel
scopes, which asyncio lacks, and anyio runs the same code on asyncio and
uvloop. The protocol layer (:mod:`asyncmail.smtp.connection`) is an
asyncio protocol and stays asyncio.

At about 700 lines this module is longer than the house's ~400: it is one
class, :class:`EmailBackend`, whose two dozen documented options, their
validation, the connection lifecycle and the attempt loop read best
together; the protocol (:mod:`asyncmail.smtp`), one message's state
(:mod:`.delivery`) and the retry rules (:mod:`.retry`) are elsewhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio

from .. import observability
from ..dkim import DKIMSigner, signer_from_option
from ..dnsname import ascii_hostname
from ..exceptions import (
    ConfigurationError,
    DeliveryUnknownError,
    MailError,
    SMTPConnectError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPPoolTimeoutError,
    is_transient,
)
from ..oauth2 import TokenProvider, token_provider_from_option
from ..pool import ConnectionPool, Pooled, PoolLimits
from ..ratelimit import RateLimiter
from ..results import MessageResult, Outcome, RecipientResult, ResultCallback
from ..settings import settings
from ..smtp.connection import SMTPConnection, end_of_data_hook
from ..smtp.session import SessionConfig, open_session
from ..smtp.wire import valid_ehlo_name
from ..threads import run_sync
from .base import BackendState, BaseEmailBackend, failure_result
from .delivery import (
    MAX_BUSY_WAITS,
    Attempt,
    Delivery,
    payload_for,
    prepare,
)
from .retry import Breaker, RetryPolicy
from .sending import Source
from .turns import Lease, Turns

if TYPE_CHECKING:
    from ..message import BaseMessage as EmailMessage  # any sendable message

__all__ = ["EmailBackend", "SMTPConnection", "end_of_data_hook"]


class _NotGiven:
    """Sentinel: the option was not given (distinct from None)."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven()


class EmailBackend(BaseEmailBackend):
    """Send over SMTP (aiosmtplib underneath), Django-compatible options.

    Django's options, each defaulting to its EMAIL_* setting: ``host``,
    ``port``, ``username``, ``password``, ``use_tls`` (STARTTLS, required when
    set), ``use_ssl`` (implicit TLS; not with use_tls), ``timeout`` (seconds
    for each wait on the server; None: no timeout), ``ssl_certfile``,
    ``ssl_keyfile`` (a client certificate).

    asyncmail's own:

    :param ssl_context: your :class:`ssl.SSLContext` (replaces the verifying
        default; not with ssl_certfile/ssl_keyfile).
    :param local_hostname: the EHLO name (default: this host's FQDN).
    :param dangerously_allow_plaintext_auth: send credentials over an
        unencrypted connection to a non-loopback server. Off by default.
    :param max_connections: connections used at once (1: Django's behaviour).
    :param pipeline_depth: messages in flight at once on one connection
        (default 2): with PIPELINING, the next message's MAIL, RCPT and DATA
        follow a message's end of data without waiting for its reply, one
        round trip per message (1: each message waits for the last).
    :param max_messages_per_connection: retire a connection after this many.
    :param max_connection_lifetime: retire a connection after this many seconds.
    :param idle_timeout: close a connection idle this long (seconds).
    :param probe_after: probe (NOOP) a connection idle this long before reuse.
    :param rate_limit: at most this many messages in any one second (all
        connections together), spaced evenly.
    :param rate_limit_burst: how many messages may go back to back after a
        pause (default 1: none); never more than ``rate_limit`` a second.
    :param retries: extra attempts for transient failures (default 2).
    :param retry_backoff: first backoff in seconds, doubled each retry, with
        jitter, capped by ``retry_backoff_max``.
    :param deadline: seconds one message may take in all, connecting, TLS,
        AUTH and retries included (default: ``timeout``, so that a send fails
        within about one EMAIL_TIMEOUT; None: no bound). Waiting for the rate
        limit is not counted.
    :param breaker_threshold: consecutive connect failures after which the
        server is taken to be unreachable (see :mod:`.retry`).
    :param breaker_cooldown: seconds before an open breaker lets one message
        probe the server again.
    :param oauth2_token_provider: authenticate with OAuth2 (XOAUTH2 or
        OAUTHBEARER) instead of a password: a callable (async or not; may
        take ``refresh``) returning an access token for ``username``, called
        for each new connection (see :mod:`asyncmail.oauth2`).
    :param dkim: DKIM-sign every message: a :class:`asyncmail.dkim.DKIMSigner`
        or a dict of its arguments (``selector``, ``domain``, ``private_key``
        ...); default the EMAIL_DKIM setting (None: no signing).
    """

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        use_ssl: bool | None = None,
        timeout: float | _NotGiven | None = NOT_GIVEN,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        dangerously_allow_plaintext_auth: bool = False,
        max_connections: int = 1,
        pipeline_depth: int = 2,
        max_messages_per_connection: int | None = None,
        max_connection_lifetime: float | None = None,
        idle_timeout: float | None = 60.0,
        probe_after: float | None = 10.0,
        rate_limit: float | None = None,
        rate_limit_burst: int = 1,
        retries: int = 2,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 30.0,
        deadline: float | _NotGiven | None = NOT_GIVEN,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
        oauth2_token_provider: TokenProvider | str | None = None,
        dkim: DKIMSigner | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.host = host or settings.EMAIL_HOST
        self.port = port or settings.EMAIL_PORT
        self.username = settings.EMAIL_HOST_USER if username is None else username
        self.password = settings.EMAIL_HOST_PASSWORD if password is None else password
        self.use_tls = settings.EMAIL_USE_TLS if use_tls is None else use_tls
        self.use_ssl = settings.EMAIL_USE_SSL if use_ssl is None else use_ssl
        self.timeout: float | None = (
            settings.EMAIL_TIMEOUT if isinstance(timeout, _NotGiven) else timeout
        )
        self.ssl_keyfile = (
            settings.EMAIL_SSL_KEYFILE if ssl_keyfile is None else ssl_keyfile
        )
        self.ssl_certfile = (
            settings.EMAIL_SSL_CERTFILE if ssl_certfile is None else ssl_certfile
        )
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname
        self.dangerously_allow_plaintext_auth = dangerously_allow_plaintext_auth
        if isinstance(deadline, _NotGiven):
            deadline = self.timeout
        self.deadline = deadline
        if (
            not isinstance(pipeline_depth, int)
            or isinstance(pipeline_depth, bool)
            or pipeline_depth < 1
        ):
            raise ConfigurationError(
                f"pipeline_depth must be a whole number of at least 1, not "
                f"{pipeline_depth!r}"
            )
        self.pipeline_depth = pipeline_depth
        if breaker_threshold < 1:
            raise ConfigurationError("breaker_threshold must be at least 1")
        if breaker_cooldown < 0:
            raise ConfigurationError("breaker_cooldown must be 0 or more seconds")
        self._validate()
        # OAuth2 (asyncmail/oauth2.py): a token per connection, never kept.
        self.oauth2 = token_provider_from_option(oauth2_token_provider)
        if self.oauth2 is not None and (self.password or not self.username):
            raise ConfigurationError(
                "oauth2_token_provider needs username (the mailbox the token is "
                "for) and no password"
            )
        # DKIM (asyncmail/dkim.py): the key is read and checked here.
        self.dkim = signer_from_option(settings.EMAIL_DKIM if dkim is None else dkim)
        try:
            self.retry = RetryPolicy(retries, retry_backoff, retry_backoff_max)
            self.limits = PoolLimits(
                max_connections=max_connections,
                max_messages=max_messages_per_connection,
                max_lifetime=max_connection_lifetime,
                idle_timeout=idle_timeout,
                probe_after=probe_after,
            )
            self.rate_limiter = (
                None
                if rate_limit is None
                else RateLimiter(rate_limit, burst=rate_limit_burst)
            )
        except ValueError as exc:  # a bad option, as the others are
            raise ConfigurationError(str(exc)) from exc
        self._pool: ConnectionPool[SMTPConnection] | None = None
        self._tls_context: ssl.SSLContext | None = None
        # Opens after consecutive connect failures: then messages needing a
        # new connection fail fast, until a probe after the cooldown connects.
        self._breaker = Breaker(breaker_threshold, breaker_cooldown)
        # The clock of deadlines (loop time, as anyio.current_time() reads
        # it): the bound loop's own ``time`` once open, which spares each
        # message anyio's look-up of the running library (a measurable share
        # of the send path's CPU).
        self._clock: Callable[[], float] = anyio.current_time

    def _validate(self) -> None:
        if self.use_tls and self.use_ssl:
            raise ConfigurationError(
                "use_tls (STARTTLS) and use_ssl (implicit TLS) are mutually "
                "exclusive; set only one"
            )
        if self.ssl_context is not None and (self.ssl_certfile or self.ssl_keyfile):
            raise ConfigurationError(
                "Give either ssl_context or ssl_certfile/ssl_keyfile, not both"
            )
        if (
            not isinstance(self.port, int)
            or isinstance(self.port, bool)
            or not 0 < self.port < 65536
        ):
            raise ConfigurationError(f"Invalid SMTP port {self.port!r}")
        if self.local_hostname is not None and not valid_ehlo_name(self.local_hostname):
            raise ConfigurationError(
                f"Invalid local_hostname {self.local_hostname!r}: use a host name "
                "or an address literal such as [192.0.2.1]"
            )
        for name in ("host", "username", "password"):
            value = getattr(self, name)
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise ConfigurationError(f"Invalid SMTP {name}")
        if not self.host.isascii():
            # The same IDNA 2008 conversion as every address's domain (the
            # resolver would otherwise apply the stdlib's IDNA 2003 codec).
            ascii_host = ascii_hostname(self.host)
            if ascii_host is None:
                raise ConfigurationError(
                    f"Invalid SMTP host {self.host!r}: not a valid host name"
                )
            self.host = ascii_host
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigurationError("timeout must be positive or None")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigurationError("deadline must be positive or None")

    def __repr__(self) -> str:
        return (
            f"<{type(self).__module__}.{type(self).__qualname__} "
            f"{self.host}:{self.port} {self.state.value}>"
        )

    # The retry options are views of the one policy (:attr:`retry`).

    @property
    def retries(self) -> int:
        """Extra attempts for transient failures."""
        return self.retry.retries

    @retries.setter
    def retries(self, value: int) -> None:
        self.retry = dataclasses.replace(self.retry, retries=value)

    @property
    def retry_backoff(self) -> float:
        """The first backoff, in seconds."""
        return self.retry.backoff

    @retry_backoff.setter
    def retry_backoff(self, value: float) -> None:
        self.retry = dataclasses.replace(self.retry, backoff=value)

    @property
    def retry_backoff_max(self) -> float:
        """The longest backoff, in seconds."""
        return self.retry.backoff_max

    @retry_backoff_max.setter
    def retry_backoff_max(self, value: float) -> None:
        self.retry = dataclasses.replace(self.retry, backoff_max=value)

    # -- connections ---------------------------------------------------------------

    async def _tls(self) -> ssl.SSLContext:
        if self.ssl_context is not None:
            return self.ssl_context
        if self._tls_context is None:
            # Loading the CA store reads files: keep it off the event loop.
            self._tls_context = await run_sync(self._build_tls_context)
        return self._tls_context

    def _build_tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    @observability.traced_connect  # logs it; with OpenTelemetry, a span
    async def connect(self, deadline: float | None = None) -> SMTPConnection:
        """Open a new, fully set-up connection (TLS and AUTH done) or raise
        (see :mod:`asyncmail.smtp.session`).

        *deadline* (a loop time) bounds the whole set-up; ``timeout`` still
        bounds each wait on the server, and ``deadline`` the whole.
        """
        if deadline is None and self.deadline is not None:
            deadline = anyio.current_time() + self.deadline
        try:
            tls = await self._tls() if (self.use_tls or self.use_ssl) else None
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigurationError(
                f"SMTP {self.host}:{self.port}: cannot set up TLS with ssl_certfile="
                f"{self.ssl_certfile!r}, ssl_keyfile={self.ssl_keyfile!r}: {exc}"
            ) from exc
        config = SessionConfig(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            use_ssl=self.use_ssl,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
            dangerously_allow_plaintext_auth=self.dangerously_allow_plaintext_auth,
            oauth2=self.oauth2,
        )
        return await open_session(config, tls, deadline)

    def _new_pool(self) -> ConnectionPool[SMTPConnection]:
        return ConnectionPool(
            connect=self.connect,
            close=SMTPConnection.close,
            is_usable=lambda connection: connection.usable,
            probe=SMTPConnection.noop,
            limits=self.limits,
            detach=SMTPConnection.detach,
        )

    @property
    def pool(self) -> ConnectionPool[SMTPConnection] | None:
        """The connection pool while the backend is open (None when closed)."""
        return None if self.state is BackendState.CLOSED else self._pool

    def _start(self) -> ConnectionPool[SMTPConnection]:
        """A new pool for a backend opening on this loop (no other loop may
        use it meanwhile)."""
        self.check_loop()
        pool = self._pool = self._new_pool()
        loop = self.bound_loop = asyncio.get_running_loop()
        self._clock = loop.time
        return pool

    async def open(self) -> bool | None:
        """Connect (one connection; a pool grows on demand) and keep it open.

        Returns True if connected now, False if already open (or opening),
        None if the connection failed and ``fail_silently`` is set.
        """
        self.check_loop()
        if self.state is not BackendState.CLOSED:
            return False
        self.state = BackendState.OPENING
        pool = self._start()
        try:
            entry = await self._first_connection(pool)
        except BaseException as exc:
            # Not open after all (failed, or cancelled mid-way).
            self.state = BackendState.CLOSED
            self._pool = None
            self.bound_loop = None
            if isinstance(exc, MailError) and self.fail_silently:
                self.open_error = exc
                return None
            raise
        self.open_error = None
        await pool.release(entry, reusable=True)
        await super().open()
        return True

    async def open_for_sending(self) -> bool | None:
        """What ``send_messages`` does on a closed backend: open the pool
        without connecting. The first message connects, within its own
        deadline, so that one send's time (connecting included) is bounded
        by one deadline."""
        self.check_loop()
        if self.state is not BackendState.CLOSED:
            return False
        self._start()
        self.open_error = None
        await BaseEmailBackend.open(self)
        return True

    def forget_inherited(self) -> None:
        """In a forked child: the parent's pool (already orphaned, see
        :meth:`ConnectionPool.orphan`) is dropped; the next send opens
        connections of the child's own."""
        self._pool = None
        super().forget_inherited()

    async def _first_connection(
        self, pool: ConnectionPool[SMTPConnection]
    ) -> Pooled[SMTPConnection]:
        """Connect for ``open()``, retrying transient failures (421 greeting,
        silence, a dropped connection) as a message would be, within the
        deadline, through the same retry policy and breaker."""
        deadline = (
            None if self.deadline is None else anyio.current_time() + self.deadline
        )
        entries: list[Pooled[SMTPConnection]] = []

        async def attempt(number: int) -> MailError | None:
            try:
                entries.append(await self._acquire(pool, deadline))
            except _Blocked as blocked:
                raise blocked.error from None
            except _Busy as busy:
                return busy.error  # a 421 greeting: transient
            except MailError as exc:
                if not is_transient(exc):
                    raise
                return exc
            return None

        try:
            error = await self.retry.run(attempt, lambda: deadline)
        finally:
            self._breaker.reset()  # nothing of open() stays behind
        if error is not None:
            raise error
        return entries[0]

    async def close(self) -> None:
        """QUIT and close every connection (from the loop that opened them)."""
        self.check_loop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self.bound_loop = None
        await super().close()

    async def _acquire(
        self, pool: ConnectionPool[SMTPConnection], deadline: float | None
    ) -> Pooled[SMTPConnection]:
        """A connection from *pool*, through the breaker: the one place that
        consults and informs it.

        Raises :class:`_Blocked` (the breaker is open: fail fast),
        :class:`_Busy` (the server is at its connection limit: wait for one
        of ours), or the connect failure, as a MailError without the
        traceback through these frames (kept in a result, it would keep
        them, and the batch's state, alive as long as the result lives).
        """
        breaker = self._breaker
        probe = False
        if not pool.idle:
            blocked, probe = breaker.check()
            if blocked is not None:
                # Not raised again as is: a shared exception would collect a
                # traceback per message.
                raise _Blocked(blocked)
        opened = pool.opened
        try:
            entry = await pool.acquire(deadline)
        except MailError as exc:
            exc.__traceback__ = None
            if _busy(exc) and (pool.connections or pool.connecting):
                # A server at its connection limit (it takes, or is taking,
                # our other connections): back-pressure, not down.
                breaker.abandoned(probe=probe)
                pool.hold(breaker.cooldown or 1.0)
                raise _Busy(exc) from None
            if is_transient(exc):
                breaker.failed(exc, probe=probe)
            else:
                breaker.connected()  # it answered (TLS, AUTH...): it is up
            raise
        except TimeoutError:
            # Waiting for a busy pool says nothing about the server.
            breaker.abandoned(probe=probe)
            raise SMTPPoolTimeoutError(
                "The message's deadline passed while waiting for a connection"
            ) from None
        except BaseException:
            breaker.abandoned(probe=probe)
            raise
        if pool.opened != opened:
            breaker.connected()
        else:
            breaker.abandoned(probe=probe)
        return entry

    # -- sending -------------------------------------------------------------------

    async def deliver(self, message: EmailMessage) -> MessageResult:
        delivery = await self._begin(message)
        await self._deliver(delivery)
        return delivery.result()

    async def _begin(self, message: EmailMessage) -> Delivery:
        # BadHeaderError etc.: nothing on the wire
        prepared = await prepare(message, self.dkim)
        return Delivery(prepared, list(prepared.recipients))

    async def _deliver(self, delivery: Delivery) -> None:
        """Attempt *delivery* until done, out of retries or out of time.

        The first attempt is made here, before the retry loop: the common
        case (nothing to retry) then costs no closure and no extra
        coroutine per message."""
        if self.deadline is not None:
            delivery.deadline = self._clock() + self.deadline
        error = await self._try(delivery, 1)
        if error is None:
            return

        async def attempt(number: int) -> MailError | None:
            return await self._try(delivery, number)

        def retrying(number: int, delay: float, error: MailError) -> None:
            observability.retrying(delivery.prepared.message_id, number, delay, error)

        await self.retry.run(
            attempt, lambda: delivery.deadline, on_retry=retrying, first_error=error
        )

    async def _try(self, delivery: Delivery, number: int) -> MailError | None:
        """Attempt number *number* at *delivery*: None when nothing is left
        to retry, else the error to retry after (see RetryPolicy.run)."""
        delivery.attempts = number
        step = await self._attempt(delivery)
        while step.busy and delivery.busy_waits < MAX_BUSY_WAITS:
            # Back-pressure: wait for one of the open connections (the
            # pool holds its size); not a failed try.
            delivery.busy_waits += 1
            step = await self._attempt(delivery)
        settled = delivery.settled
        settled.update(step.written)
        if not isinstance(delivery.error, DeliveryUnknownError):
            # A later success keeps what failed.
            delivery.error = step.error or delivery.error
        delivery.reply = step.reply or delivery.reply
        # Only what failed transiently is tried again, and never a
        # recipient the data was written for (unknown: it may have been
        # delivered; or refused after the data: asyncmail never resends
        # once the end of data was written).
        outcome = delivery.outcome
        retry = [
            a
            for a in delivery.pending
            if outcome[a].outcome is Outcome.TEMPORARY and a not in settled
        ]
        if not retry or step.fail_fast:
            return None
        delivery.pending = retry
        return step.error or delivery.error or SMTPError("not delivered")

    async def _attempt(self, delivery: Delivery) -> Attempt:
        """One try at the delivery's pending recipients; fills its outcome."""
        pool = self._pool if self.state is BackendState.OPEN else None
        if pool is None:
            return self._failed(
                delivery, SMTPConnectError("The backend was closed while sending")
            )
        if delivery.deadline is not None and self._clock() >= delivery.deadline:
            return self._failed(
                delivery,
                SMTPDeadlineExceededError(
                    "The message's deadline passed before it was sent"
                ),
            )
        try:
            entry = await self._acquire(pool, delivery.deadline)
        except _Blocked as blocked:
            return self._failed(delivery, blocked.error, fail_fast=True)
        except _Busy as busy:
            return self._failed(delivery, busy.error)._replace(busy=True)
        except MailError as exc:
            exc.__traceback__ = None
            return self._failed(delivery, exc)
        reusable = False
        lease: Lease | None = None
        try:
            connection = entry.connection
            if self.pipeline_depth > 1 and connection.pipelining:
                lease = Lease(pool, entry)
            try:
                data, eight_bit = payload_for(delivery.prepared, connection, self.dkim)
            except MailError as problem:
                # Refused before a byte was written: the connection is fine.
                reusable = True
                return self._failed(delivery, problem, outcome=Outcome.PERMANENT)
            if self.rate_limiter is not None:
                # Taken last, just before the first byte, so that messages
                # reach the server as evenly spaced as the limiter grants
                # them; waiting for it is queueing, not the message's time.
                waited = self._clock()
                await self.rate_limiter.acquire()
                if delivery.deadline is not None:
                    delivery.deadline += self._clock() - waited
            prepared = delivery.prepared
            transaction = delivery.transaction = connection.transaction(
                prepared.sender,
                delivery.pending,
                data,
                eight_bit=eight_bit,
                smtputf8=prepared.smtputf8,
            )
            collateral = await connection.run(
                transaction,
                deadline=delivery.deadline,
                handoff=None if lease is None else lease.lend,
            )
            if lease is None or not lease.lent:
                entry.messages += 1
            reusable = transaction.reusable
            delivery.outcome.update(transaction.recipients)
            delivery.transaction = None
            if transaction.end_written:
                written = transaction.data_recipients
            elif collateral:
                # The session ended before this message's turn (the one
                # ahead of it got a 421, or the connection dropped while
                # that one's replies were due): nothing of it reached the
                # end of data, so it is tried again at once, as if it had
                # waited for the next connection; not a failed try, and the
                # time it waited behind the other is not its own (its
                # deadline starts again, as if it had not been taken yet).
                if self.deadline is not None:
                    delivery.deadline = self._clock() + self.deadline
                return Attempt(transaction.error, busy=True)
            else:
                written = ()
            return Attempt(transaction.error, transaction.reply, written=written)
        finally:
            if lease is None or not lease.lent:
                await pool.release(entry, reusable=reusable)
            elif not reusable:
                entry.connection.retire()  # lent already: the pool closes it

    @staticmethod
    def _failed(
        delivery: Delivery,
        failure: MailError,
        *,
        outcome: Outcome | None = None,
        fail_fast: bool = False,
    ) -> Attempt:
        """An attempt that ended before its transaction: every pending
        recipient gets *failure* (temporary when it is transient)."""
        if outcome is None:
            outcome = Outcome.TEMPORARY if is_transient(failure) else Outcome.PERMANENT
        for address in delivery.pending:
            delivery.outcome[address] = RecipientResult.failure(
                address, outcome, failure
            )
        return Attempt(failure, fail_fast=fail_fast)

    @observability.traced_delivery  # with OpenTelemetry installed: a span
    async def _deliver_message(
        self, message: EmailMessage, started: list[Delivery]
    ) -> MessageResult:
        """Prepare and deliver *message*; its delivery goes in *started* as
        soon as it exists, for :meth:`_send_one` to report if cancelled."""
        delivery = await self._begin(message)
        started.append(delivery)
        await self._deliver(delivery)
        return delivery.result()

    async def _send_one(self, message: EmailMessage, publish: ResultCallback) -> None:
        """Deliver one message (it has recipients: the base class skipped
        those without) and publish its result; cancelled, publish what is
        known of it first (see :meth:`Delivery.interrupted`)."""
        started: list[Delivery] = []  # the delivery, once prepared
        try:
            result = await self._deliver_message(message, started)
        except BaseException as exc:
            failed = failure_result(message, exc)
            if failed is not None:
                publish(failed)
                return
            if started:
                publish(started[0].interrupted())
            raise
        publish(result)

    async def dispatch(
        self,
        messages: AsyncIterator[EmailMessage],
        publish: ResultCallback,
    ) -> None:
        """Send over up to ``max_connections`` connections at once.

        One worker per connection slot takes the next message only when it is
        free, so a huge or endless iterator is never materialised and a slow
        relay slows the producer (backpressure). The lock only matters for
        async sources (an async generator must not be entered twice).

        Cancelled, every message already taken gets its result (published
        before the cancellation propagates): see :meth:`Delivery.interrupted`.
        """
        self._breaker.reset()
        try:
            await self._dispatch(messages, publish)
        finally:
            # Nothing of this call stays behind (the breaker's error and its
            # traceback would keep the call's frames, and messages, alive).
            self._breaker.reset()

    async def _dispatch(
        self,
        messages: AsyncIterator[EmailMessage],
        publish: ResultCallback,
    ) -> None:
        # One worker per message in flight: with pipelining a connection
        # carries up to pipeline_depth of them (a worker whose message is
        # written lends the connection to the next while it awaits the reply).
        connections = self.limits.max_connections
        workers = connections * self.pipeline_depth
        if workers == 1:
            async for message in messages:
                await self._send_one(message, publish)
            return
        # At most max_connections messages of the batch are before their end
        # of data at once (taken, connecting, in the envelope or the data),
        # as without pipelining; the other workers' messages only await
        # their last reply (see turns.py).
        turns = Turns(connections) if workers > connections else None
        lock = anyio.Lock(fast_acquire=True)
        errors: list[Exception] = []
        # A plain iterable (a list...) is taken from with no await: the lock
        # and the coroutine per message are not needed.
        take = (
            messages.take
            if isinstance(messages, Source) and messages.synchronous
            else None
        )

        async def work() -> None:
            turn = None if turns is None else turns.join()
            try:
                while not errors:
                    if turn is not None:
                        await turn.take()
                    try:
                        if take is not None:
                            message = take()
                        else:
                            async with lock:
                                message = (
                                    None if errors else await anext(messages, None)
                                )
                        if message is None:
                            return
                        await self._send_one(message, publish)
                    finally:
                        if turn is not None:
                            turn.give_back()
            except Exception as exc:
                # E.g. a failing source: the other workers finish what they
                # are sending (no result is lost mid-transaction) and take
                # nothing more.
                errors.append(exc)

        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(work)
        if errors:
            raise errors[0]  # as the one-connection path raises it


class _Blocked(Exception):  # noqa: N818 - a signal, not an error
    """The breaker is open: fail at once with *error* (not retried)."""

    def __init__(self, error: MailError) -> None:
        self.error = error


class _Busy(Exception):  # noqa: N818 - a signal, not an error
    """A 421 greeting while our other connections are open: back-pressure."""

    def __init__(self, error: MailError) -> None:
        self.error = error


def _busy(error: MailError) -> bool:
    """A 421 greeting: the server is up but will not take one more session."""
    return isinstance(error, SMTPConnectError) and error.code == 421
