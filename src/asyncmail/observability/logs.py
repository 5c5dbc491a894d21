"""The log records: one per message outcome, retry and connection event,
with structured fields, secrets never and addresses masked above DEBUG
(the table is in :mod:`asyncmail.observability`)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..results import MessageResult

logger: Final = logging.getLogger("asyncmail")
send_logger: Final = logging.getLogger("asyncmail.send")
smtp_logger: Final = logging.getLogger("asyncmail.smtp")

_REPLY_LIMIT = 200  # characters of a server reply or error kept in a record
_ADDRESS = re.compile(r"([^\s<>\"'(),;:@]+)@([A-Za-z0-9.\-\[\]:]+)")


def _mask(match: re.Match[str]) -> str:
    return f"{match.group(1)[:1]}***@{match.group(2)}"


def _safe(text: str, *, full: bool) -> str:
    """*text* bounded in length, with addresses masked unless *full*."""
    text = " ".join(text.split())
    if len(text) > _REPLY_LIMIT:
        text = text[: _REPLY_LIMIT - 1] + "…"
    return text if full else _ADDRESS.sub(_mask, text)


class _Repeats:
    """The error of the last failed message: when a whole batch fails with
    one and the same error (the server is unreachable, or the backend could
    not open), the first message is a WARNING and the others DEBUG."""

    # (type, text), not the error itself: holding it would keep its
    # traceback's frames (and the messages they hold) alive. Not its id
    # either: each message of a batch that meets a dead server fails with an
    # error of its own, all saying the same thing.
    key: tuple[type[BaseException], str] | None = None


def _outcome_counts(result: MessageResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for recipient in result.recipients.values():
        name = recipient.outcome.value
        counts[name] = counts.get(name, 0) + 1
    return counts


def retrying(
    message_id: str | None, attempt: int, delay: float, error: BaseException | None
) -> None:
    """A transient failure: attempt number *attempt* is retried in *delay* s."""
    if not send_logger.isEnabledFor(logging.INFO):
        return
    full = send_logger.isEnabledFor(logging.DEBUG)
    reason = "" if error is None else f": {_safe(str(error), full=full)}"
    send_logger.info(
        "message %s: attempt %d failed%s; retrying in %.2fs",
        message_id or "(no Message-ID)",
        attempt,
        reason,
        delay,
        extra={
            "mail_message_id": message_id,
            "mail_attempts": attempt,
            "mail_error": None if error is None else type(error).__name__,
        },
    )


def connection_closed(client: Any, *, broken: bool) -> None:
    """An SMTP connection (its aiosmtplib client) closed politely, or
    discarded when *broken*."""
    level = logging.INFO if broken else logging.DEBUG
    if smtp_logger.isEnabledFor(level):
        host, port = str(client.hostname), int(client.port or 0)
        smtp_logger.log(
            level,
            "SMTP connection to %s:%d %s",
            host,
            port,
            "discarded (broken)" if broken else "closed",
            extra={"smtp_host": host, "smtp_port": port},
        )


def _connection_opened(host: str, port: int, seconds: float, tls: str) -> None:
    if smtp_logger.isEnabledFor(logging.DEBUG):
        smtp_logger.debug(
            "SMTP connection to %s:%d opened in %.3fs (%s)",
            host,
            port,
            seconds,
            tls,
            extra={"smtp_host": host, "smtp_port": port},
        )


def _connection_failed(host: str, port: int, error: BaseException) -> None:
    if smtp_logger.isEnabledFor(logging.WARNING):
        full = smtp_logger.isEnabledFor(logging.DEBUG)
        smtp_logger.warning(
            "SMTP connection to %s:%d failed: %s: %s",
            host,
            port,
            type(error).__name__,
            _safe(str(error), full=full),
            extra={
                "smtp_host": host,
                "smtp_port": port,
                "mail_error": type(error).__name__,
            },
        )
