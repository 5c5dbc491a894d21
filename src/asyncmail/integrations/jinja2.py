"""Messages from Jinja2 templates: subject, text and HTML, HTML autoescaped.

``pip install "asyncmail[jinja2]"``. One message is three templates that
share a name: ``<name>.subject.txt`` (one line), ``<name>.txt`` (the text
body) and, optionally, ``<name>.html`` (the HTML alternative)::

    from asyncmail.integrations.jinja2 import MailTemplates

    templates = MailTemplates(directory="templates/mail")
    message = templates.message("welcome", {"name": "Ada"}, to=["ada@example.com"])

    # Personalised bulk: one message per row, built as the backend takes them.
    rows = [{"email": "ada@example.com", "name": "Ada"}, ...]
    await backend.send_messages(templates.messages("welcome", rows))

Safe by default:

* HTML templates are autoescaped (``{{ name }}`` holding ``<script>`` comes
  out as ``&lt;script&gt;``); text and subject templates are not (they are
  not HTML). An environment you pass must autoescape ``.html`` too, or it
  is refused.
* A variable missing from the context is an error (``StrictUndefined``),
  not an empty string in a million mails.
* The subject's line breaks and runs of whitespace become single spaces, so
  a template's trailing newline cannot turn into a header-injection error.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import jinja2

from ..address import AddressLike
from ..exceptions import ConfigurationError
from ..message import EmailMultiAlternatives

__all__ = ["MailTemplates", "RenderedMail"]


class RenderedMail(NamedTuple):
    """The three parts of a message, rendered."""

    subject: str
    text: str
    html: str | None


class MailTemplates:
    """Renders messages from templates found by a Jinja2 loader.

    :param directory: a directory of templates (a ``FileSystemLoader``).
    :param loader: any Jinja2 loader, instead of *directory*.
    :param environment: your own :class:`jinja2.Environment` (its filters,
        globals, loader); it must autoescape ``.html`` templates.
    :param to_key: the row key that holds a row's recipient in
        :meth:`messages` (a string, or a list of addresses).
    """

    def __init__(
        self,
        *,
        directory: str | os.PathLike[str] | None = None,
        loader: jinja2.BaseLoader | None = None,
        environment: jinja2.Environment | None = None,
        to_key: str = "email",
    ) -> None:
        given = sum(item is not None for item in (directory, loader, environment))
        if given != 1:
            raise ConfigurationError(
                "MailTemplates needs exactly one of directory=, loader= or environment="
            )
        if environment is None:
            if directory is not None:
                loader = jinja2.FileSystemLoader(os.fspath(directory))
            environment = jinja2.Environment(
                loader=loader,
                autoescape=jinja2.select_autoescape(
                    enabled_extensions=("html", "htm", "xml"),
                    default_for_string=False,
                    default=False,
                ),
                undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True,
            )
        elif not _autoescapes_html(environment):
            raise ConfigurationError(
                "The Jinja2 environment does not autoescape .html templates; "
                "create it with autoescape=jinja2.select_autoescape() (HTML mail "
                "built from user data must be escaped)"
            )
        self.environment = environment
        self.to_key = to_key

    def render(
        self, name: str, context: Mapping[str, Any] | None = None
    ) -> RenderedMail:
        """Render ``<name>.subject.txt``, ``<name>.txt`` and ``<name>.html``
        (the last only if it exists) with *context*."""
        values = dict(context or {})
        subject = self.environment.get_template(f"{name}.subject.txt").render(values)
        text = self.environment.get_template(f"{name}.txt").render(values)
        try:
            html_template = self.environment.get_template(f"{name}.html")
        except jinja2.TemplateNotFound:
            html = None
        else:
            html = html_template.render(values)
        return RenderedMail(" ".join(subject.split()), text, html)

    def message(
        self,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        to: Iterable[AddressLike] | None = None,
        from_email: AddressLike | None = None,
        cc: Iterable[AddressLike] | None = None,
        bcc: Iterable[AddressLike] | None = None,
        reply_to: Iterable[AddressLike] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> EmailMultiAlternatives:
        """A message rendered from the templates *name* with *context*."""
        rendered = self.render(name, context)
        message = EmailMultiAlternatives(
            rendered.subject,
            rendered.text,
            from_email,
            to,
            cc=cc,
            bcc=bcc,
            reply_to=reply_to,
            headers=headers,
        )
        if rendered.html is not None:
            message.attach_alternative(rendered.html, "text/html")
        return message

    def messages(
        self,
        name: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        from_email: AddressLike | None = None,
        context: Mapping[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> Iterator[EmailMultiAlternatives]:
        """One message per row, rendered lazily (a generator: hand it to
        ``send_messages`` and rows are rendered as the backend takes them).

        Each row is the template context (over *context*, shared by all),
        and its ``to_key`` entry is the recipient.
        """
        for number, row in enumerate(rows, 1):
            recipient = row.get(self.to_key)
            if not recipient:
                raise ConfigurationError(
                    f"Row {number} has no {self.to_key!r} (the recipient)"
                )
            to = [recipient] if isinstance(recipient, (str, tuple)) else list(recipient)
            yield self.message(
                name,
                {**(context or {}), **row},
                to=to,
                from_email=from_email,
                headers=dict(headers) if headers else None,
            )


def _autoescapes_html(environment: jinja2.Environment) -> bool:
    autoescape = environment.autoescape
    if callable(autoescape):
        return bool(autoescape("message.html"))
    return bool(autoescape)
