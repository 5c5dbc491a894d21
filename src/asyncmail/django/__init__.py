"""asyncmail for Django projects (the ``asyncmail[django]`` extra).

* :class:`EmailBackend` (``EMAIL_BACKEND = "asyncmail.django.EmailBackend"``,
  or a Django 6.1 ``MAILERS`` ``BACKEND``): Django's own mail functions send
  through asyncmail's pooled, pipelined SMTP path, with Django's blocking
  contract. See :mod:`asyncmail.django.backend`.
* :func:`asend_messages`: send Django messages from async views.
* The settings bridge (:mod:`asyncmail.django.bridge`): in a configured
  Django process, asyncmail's own API (``asyncmail.send_mail``,
  ``asend_mail``, ``EmailMessage.asend`` ...) reads Django's settings, and
  under Django's test runner lands in ``django.core.mail.outbox``.

Only this subpackage imports Django; the rest of asyncmail never does. The
names are loaded lazily, so that the settings bridge can be imported
without loading Django's mail package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import EmailBackend, asend_messages

__all__ = ["EmailBackend", "asend_messages"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
