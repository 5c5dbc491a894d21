"""Retries and the unreachable-server breaker: one of each per backend,
shared by connection set-up (``open()``) and delivery.

:class:`RetryPolicy` decides whether and when a transient failure is tried
again: at most ``retries`` extra attempts, exponential backoff from
``backoff`` seconds, capped at ``backoff_max``, with jitter, and never a wait
that would end past the deadline. :meth:`RetryPolicy.run` is the one retry
loop.

:class:`Breaker`, the rule (documented in docs/pages/backends.md):

* It counts *consecutive connect failures* (refused, timed out, lost during
  set-up, a 4xx greeting while no other connection to the server is open)
  across every message of a send. Any connection made, or any answer from
  the server that proves it is up, resets the count. Failures inside a
  session (4xx at RCPT, a lost connection mid-message) never count: the
  server was reachable.
* It opens after ``threshold`` consecutive connect failures. While open,
  messages that need a new connection fail at once (temporary, with the
  error that opened it) instead of each spending its own retries; messages
  that find an idle connection still use it.
* After ``cooldown`` seconds it half-opens: the next message probes (tries
  to connect) while the others still fail fast. A connection made closes the
  breaker; a failure opens it for another ``cooldown``.

A 421 greeting while other connections to the server are open is the server
at its connection limit: back-pressure for the pool (it stops growing and the
message waits for an open connection), not a failure that counts here.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ..exceptions import MailError

__all__ = ["Breaker", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried (see the module docstring)."""

    retries: int = 2
    backoff: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number *attempt* (from 1):
        exponential, capped, with jitter so that retries spread out."""
        delay = min(self.backoff * 2.0 ** (attempt - 1), self.backoff_max)
        return delay * random.uniform(0.5, 1.0)

    def next_delay(self, attempt: int, deadline: float | None) -> float | None:
        """The wait before retrying after failed attempt *attempt*, or None:
        no retry (the retries are spent, or the wait would reach *deadline*,
        a loop time)."""
        if attempt > self.retries:
            return None
        delay = self.delay(attempt)
        if deadline is not None and anyio.current_time() + delay >= deadline:
            return None
        return delay

    async def run(
        self,
        attempt: Callable[[int], Awaitable[MailError | None]],
        deadline: Callable[[], float | None],
        *,
        on_retry: Callable[[int, float, MailError], None] | None = None,
        first_error: MailError | None = None,
    ) -> MailError | None:
        """Await ``attempt(number)`` (from 1) until it returns None (nothing
        left to retry) or no retry is allowed; return the transient error of
        the last attempt in that case. *deadline* is asked after each
        attempt (a delivery's deadline moves while it waits for the rate
        limit); *on_retry* is told of each retry before its wait.

        *first_error*: the caller made attempt 1 itself (its common case,
        nothing to retry, then needs no closure) and it failed with this;
        the loop starts with the retry after it."""
        number = 1
        error = first_error
        if error is None:
            error = await attempt(number)
        while error is not None:
            delay = self.next_delay(number, deadline())
            if delay is None:
                return error
            if on_retry is not None:
                on_retry(number, delay, error)
            await anyio.sleep(delay)
            number += 1
            error = await attempt(number)
        return None


class Breaker:
    """Counts consecutive connect failures; fails fast once the server
    looks unreachable, and probes again after a cooldown."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.error: MailError | None = None  # set while open
        self._opened_at = 0.0
        self._probing = False

    @property
    def open(self) -> bool:
        return self.error is not None

    def reset(self) -> None:
        """Closed, with no failures counted (a new send starts afresh)."""
        self.failures = 0
        self.error = None
        self._probing = False

    def check(self) -> tuple[MailError | None, bool]:
        """Before connecting: (the error to fail with at once, or None to go
        ahead; whether this attempt is the half-open probe)."""
        error = self.error
        if error is None:
            return None, False
        if self._probing or time.monotonic() - self._opened_at < self.cooldown:
            return error, False
        self._probing = True
        return None, True

    def connected(self) -> None:
        """A connection was made (or the server answered): it is up."""
        self.reset()

    def failed(self, error: MailError, *, probe: bool) -> None:
        """A connect attempt failed with a transient *error*."""
        self.failures += 1
        if probe or (self.error is None and self.failures >= self.threshold):
            # The messages failed fast share this error: a copy without the
            # original's traceback, which would keep the frames (and the
            # message) of the attempt that raised it alive with every one.
            self.error = copy.copy(error)
            self._opened_at = time.monotonic()
        if probe:
            self._probing = False

    def abandoned(self, *, probe: bool) -> None:
        """The attempt ended without an answer either way (cancelled, or its
        deadline passed while waiting): let the next one probe."""
        if probe:
            self._probing = False
