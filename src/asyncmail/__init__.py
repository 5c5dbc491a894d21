"""asyncmail: async-first e-mail for asyncio applications.

Django's ``django.core.mail`` API, async-first: every I/O call has an
``a``-prefixed async twin (``asend_mail``) and a blocking name (``send_mail``)
that works from any synchronous code. See the README and ``docs/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import (
    amail_admins,
    amail_managers,
    asend_mail,
    asend_mass_mail,
    get_connection,
)
from .exceptions import (
    BadHeaderError,
    ConfigurationError,
    DataRefusedError,
    DeliveryUnknownError,
    InsecureAuthError,
    InvalidAddressError,
    InvalidMailer,
    InvalidMessageError,
    MailerDoesNotExist,
    MailError,
    MessageRefusedError,
    RecipientsRefusedError,
    SenderRefusedError,
    SendError,
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPDeadlineExceededError,
    SMTPError,
    SMTPNotSupportedError,
    SMTPPoolTimeoutError,
    SMTPReadTimeoutError,
    SMTPResponseError,
    SMTPServerDisconnectedError,
    SMTPTimeoutError,
    TLSError,
)
from .message import (
    DEFAULT_ATTACHMENT_MIME_TYPE,
    EmailAlternative,
    EmailAttachment,
    EmailMessage,
    EmailMultiAlternatives,
    RawMessage,
    make_msgid,
)
from .results import (
    MessageResult,
    MessageStatus,
    Outcome,
    RecipientResult,
    collect_results,
)
from .settings import configure, settings
from .sync import mail_admins, mail_managers, send_mail, send_mass_mail

if TYPE_CHECKING:
    from .message import BaseMessage

outbox: list[BaseMessage] = []
"""Messages sent through the locmem backend (deep copies), for tests."""

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ATTACHMENT_MIME_TYPE",
    "BadHeaderError",
    "ConfigurationError",
    "DataRefusedError",
    "DeliveryUnknownError",
    "EmailAlternative",
    "EmailAttachment",
    "EmailMessage",
    "EmailMultiAlternatives",
    "InsecureAuthError",
    "InvalidAddressError",
    "InvalidMailer",
    "InvalidMessageError",
    "MailError",
    "MailerDoesNotExist",
    "MessageRefusedError",
    "MessageResult",
    "MessageStatus",
    "Outcome",
    "RawMessage",
    "RecipientResult",
    "RecipientsRefusedError",
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPConnectTimeoutError",
    "SMTPDeadlineExceededError",
    "SMTPError",
    "SMTPNotSupportedError",
    "SMTPPoolTimeoutError",
    "SMTPReadTimeoutError",
    "SMTPResponseError",
    "SMTPServerDisconnectedError",
    "SMTPTimeoutError",
    "SendError",
    "SenderRefusedError",
    "TLSError",
    "amail_admins",
    "amail_managers",
    "asend_mail",
    "asend_mass_mail",
    "collect_results",
    "configure",
    "get_connection",
    "mail_admins",
    "mail_managers",
    "make_msgid",
    "outbox",
    "send_mail",
    "send_mass_mail",
    "settings",
]
