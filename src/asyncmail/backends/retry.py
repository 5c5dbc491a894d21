"""The unreachable-server breaker shared by a backend's concurrent senders.

The rule (documented in docs/pages/backends.md):

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
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..exceptions import MailError

__all__ = ["Breaker"]


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
