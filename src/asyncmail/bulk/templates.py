"""The templates of a bulk send: :class:`string.Template` subject, text and
HTML bodies; one row's values become one message, as text only (escaped
in HTML, refused where they would break a header)."""

from __future__ import annotations

import html
import string
from dataclasses import dataclass
from pathlib import Path

from ..address import parse_address_list
from ..message import EmailMessage, EmailMultiAlternatives
from .rows import BulkError, Row

RECIPIENT_COLUMNS = ("cc", "bcc")


@dataclass(frozen=True, slots=True)
class Templates:
    """The subject, text and HTML templates of a bulk send."""

    subject: string.Template
    text: string.Template | None
    html: string.Template | None
    from_email: str | None = None
    to_column: str = "to"

    @classmethod
    def of(
        cls,
        subject: str,
        text: str | None,
        html_body: str | None,
        *,
        from_email: str | None = None,
        to_column: str = "to",
    ) -> Templates:
        """Check and compile the templates (a :class:`BulkError` says which
        one is malformed)."""
        if text is None and html_body is None:
            raise BulkError("Give a body: --text/--text-file or --html/--html-file")
        compiled: dict[str, string.Template | None] = {}
        for name, source in (("subject", subject), ("text", text), ("html", html_body)):
            if source is None:
                compiled[name] = None
                continue
            template = string.Template(source)
            if not template.is_valid():
                raise BulkError(
                    f"The {name} template has a malformed placeholder: use $name, "
                    "${name} or $$ for a dollar sign"
                )
            compiled[name] = template
        subject_template = compiled["subject"]
        assert subject_template is not None
        return cls(
            subject_template,
            compiled["text"],
            compiled["html"],
            from_email=from_email,
            to_column=to_column,
        )

    @property
    def variables(self) -> set[str]:
        """Every variable the templates use."""
        names: set[str] = set()
        for template in (self.subject, self.text, self.html):
            if template is not None:
                names.update(template.get_identifiers())
        return names

    def check_columns(self, columns: list[str], path: Path) -> None:
        """Refuse, before sending, a template variable or recipient column
        that the file's header does not have."""
        missing = sorted(self.variables - set(columns))
        if missing:
            raise BulkError(
                f"{path} has no column for the template variable(s) "
                f"{', '.join(missing)} (its columns: "
                # repr: a column name is data, never terminal control codes
                f"{', '.join(repr(column) for column in columns)})"
            )
        if self.to_column not in columns:
            raise BulkError(
                f"{path} has no {self.to_column!r} column for the recipients "
                "(choose another with --to-column)"
            )

    def message(self, row: Row) -> EmailMessage:
        """The message for *row* (KeyError: a variable missing in the row;
        a :class:`~asyncmail.exceptions.MailError`: a bad address)."""
        values = row.values
        recipients = values.get(self.to_column, "")
        if not recipients.strip():
            raise BulkError(f"no recipient in the {self.to_column!r} column")
        text = self.text.substitute(values) if self.text is not None else None
        message = EmailMultiAlternatives(
            self.subject.substitute(values),
            text if text is not None else "",
            self.from_email,
            _addresses(recipients, "To"),
            cc=_addresses(values.get("cc", ""), "Cc"),
            bcc=_addresses(values.get("bcc", ""), "Bcc"),
        )
        if self.html is not None:
            escaped = {name: html.escape(value) for name, value in values.items()}
            body = self.html.substitute(escaped)
            if text is None:
                message.body = body
                message.content_subtype = "html"
            else:
                message.attach_alternative(body, "text/html")
        return message


def _addresses(cell: str, header: str) -> list[str]:
    """The addresses of one cell: one, or several separated by commas."""
    if not cell.strip():
        return []
    return [mailbox.as_text() for mailbox in parse_address_list(cell, header)]
