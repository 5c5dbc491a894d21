"""Django's settings as a source of asyncmail's (the settings bridge).

When the process has imported Django and configured it, asyncmail's own
settings (``asyncmail.settings``, so ``asyncmail.send_mail``,
``asend_mail``, ``EmailMessage.asend`` ...) read ``django.conf.settings``.
Order, later wins::

    asyncmail's defaults  <  environment variables  <  Django's settings
                          <  asyncmail.configure()  <  keyword arguments

Rules:

* A Django setting is taken when the project set it (in its settings
  module, ``settings.configure()``, ``override_settings``) or when its value
  differs from Django's global default (Django's test runner assigns
  ``EMAIL_BACKEND`` that way). Django's own defaults are not taken, so
  asyncmail's stay: a 60 s ``EMAIL_TIMEOUT`` (Django: none) and an empty
  ``EMAIL_SUBJECT_PREFIX`` (Django: ``"[Django] "``).
* ``EMAIL_BACKEND`` and the ``BACKEND`` of each ``MAILERS`` entry name
  Django backends; they are translated to the asyncmail backend doing the
  same job (:data:`BACKENDS`): Django's SMTP backend and
  ``asyncmail.django.EmailBackend`` become asyncmail's SMTP backend, Django's
  locmem backend becomes :class:`asyncmail.django.outbox.EmailBackend`, so
  that under Django's test runner asyncmail's sends land in
  ``django.core.mail.outbox``. A path of asyncmail's own is used as it is;
  any other Django backend is a ConfigurationError (asyncmail cannot send
  through it: configure asyncmail's backend with ``asyncmail.configure``).
* With Django 6.1's ``MAILERS`` defined, the deprecated ``EMAIL_*`` server
  settings are not read (Django makes them unavailable then).
* Values are read live from Django's settings object, so
  ``override_settings`` and ``setting_changed`` are followed; each value is
  translated and checked once and kept until it changes.

Reading never warns: the values come from the settings object itself, not
through ``django.conf.settings.__getattr__`` (which, on Django 6.1, warns
about the deprecated ``EMAIL_*`` names on every external read).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

import django
from django.conf import ENVIRONMENT_VARIABLE, global_settings
from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.utils.functional import Promise, empty

from ..exceptions import ConfigurationError
from ..settings import _VALIDATORS, DEFAULTS
from ..threads import SharedLock

__all__ = ["BACKENDS", "django_setting", "translate_backend"]

_SMTP: Final = "asyncmail.backends.smtp.EmailBackend"

#: Django backend paths and the asyncmail backend that does the same job.
BACKENDS: Final[Mapping[str, str]] = {
    "django.core.mail.backends.smtp.EmailBackend": _SMTP,
    "asyncmail.django.EmailBackend": _SMTP,
    "asyncmail.django.backend.EmailBackend": _SMTP,
    "django.core.mail.backends.locmem.EmailBackend": (
        "asyncmail.django.outbox.EmailBackend"
    ),
    "django.core.mail.backends.console.EmailBackend": (
        "asyncmail.backends.console.EmailBackend"
    ),
    "django.core.mail.backends.filebased.EmailBackend": (
        "asyncmail.backends.filebased.EmailBackend"
    ),
    "django.core.mail.backends.dummy.EmailBackend": (
        "asyncmail.backends.dummy.EmailBackend"
    ),
}

#: asyncmail.django.EmailBackend's paths (its OPTIONS may hold "serializer").
_DJANGO_BACKEND_PATHS: Final = frozenset(
    {"asyncmail.django.EmailBackend", "asyncmail.django.backend.EmailBackend"}
)

#: Django 6.1 makes these unavailable when MAILERS is defined.
_SERVER_SETTINGS: Final = frozenset(
    {
        "EMAIL_BACKEND",
        "EMAIL_FILE_PATH",
        "EMAIL_HOST",
        "EMAIL_HOST_PASSWORD",
        "EMAIL_HOST_USER",
        "EMAIL_PORT",
        "EMAIL_SSL_CERTFILE",
        "EMAIL_SSL_KEYFILE",
        "EMAIL_TIMEOUT",
        "EMAIL_USE_SSL",
        "EMAIL_USE_TLS",
    }
)

#: Django versions with MAILERS (on older ones a MAILERS setting is asyncmail's).
_HAS_MAILERS: Final = django.VERSION >= (6, 1)

_ABSENT: Final = object()
_NOT_FOUND: Final = (False, None)

# name -> (Django's settings object, its raw value, the answer); dropped on
# setting_changed.
_memo: dict[str, tuple[Any, Any, tuple[bool, Any]]] = {}
_memo_lock = SharedLock()


def translate_backend(path: Any, where: str) -> Any:
    """The asyncmail backend path for the Django backend path *path*."""
    if isinstance(path, Promise):
        path = str(path)
    if not isinstance(path, str):
        return path  # the validator says what is wrong
    if path in BACKENDS:
        return BACKENDS[path]
    if path.startswith("asyncmail."):
        return path
    raise ConfigurationError(
        f"Django's {where} is {path!r}, a Django backend asyncmail cannot send "
        "through; use 'asyncmail.django.EmailBackend' there, or give asyncmail "
        "its own backend with asyncmail.configure(EMAIL_BACKEND=...)"
    )


def _plain(value: Any) -> Any:
    """Lazy strings (gettext_lazy) as str, in lists and pairs too."""
    if isinstance(value, Promise):
        return str(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def _translate(name: str, raw: Any) -> Any:
    where = f"settings.{name}"
    if name == "EMAIL_BACKEND":
        value = translate_backend(raw, where)
    elif name == "MAILERS" and isinstance(raw, Mapping):
        value = {}
        for alias, config in raw.items():
            if isinstance(config, Mapping):
                backend = config.get(
                    "BACKEND", "django.core.mail.backends.smtp.EmailBackend"
                )
                where_backend = f"{where}[{alias!r}]['BACKEND']"
                value[alias] = {
                    **config,
                    "BACKEND": translate_backend(backend, where_backend),
                }
                options = config.get("OPTIONS")
                if backend in _DJANGO_BACKEND_PATHS and isinstance(options, Mapping):
                    # How Django's messages become bytes: no meaning here.
                    value[alias]["OPTIONS"] = {
                        k: v for k, v in options.items() if k != "serializer"
                    }
            else:
                value[alias] = config  # the validator says what is wrong
    else:
        value = _plain(raw)
    return _VALIDATORS[name](f"Django's {where}", value)


def _set_by_project(wrapped: Any, name: str, raw: Any) -> bool:
    if raw is _ABSENT:
        return False
    is_overridden = getattr(wrapped, "is_overridden", None)
    if is_overridden is not None and is_overridden(name):
        return True
    default = getattr(global_settings, name, _ABSENT)
    return bool(default is _ABSENT or raw != default)


def django_setting(name: str) -> tuple[bool, Any]:
    """(found, value): the asyncmail value of setting *name* from Django's
    settings, or (False, None) when Django is not configured or the project
    did not set it. Raises ConfigurationError for a value asyncmail cannot use.

    Called on every read of an asyncmail setting, so the answer is kept per
    name with the settings object and raw value it came from: a read costs
    two attribute lookups until either changes.
    """
    wrapped = django_settings._wrapped
    memo = _memo.get(name)
    if (
        memo is not None
        and memo[0] is wrapped
        and getattr(wrapped, name, _ABSENT) is memo[1]
    ):
        return memo[2]
    if name not in DEFAULTS:
        return _NOT_FOUND
    if wrapped is empty:
        if not os.environ.get(ENVIRONMENT_VARIABLE):
            return _NOT_FOUND  # imported, never configured: not a Django process
        django_settings._setup()  # what any settings access would do
        wrapped = django_settings._wrapped
    raw = getattr(wrapped, name, _ABSENT)
    answer: tuple[bool, Any]
    hidden = name in _SERVER_SETTINGS and _HAS_MAILERS and hasattr(wrapped, "MAILERS")
    if hidden or not _set_by_project(wrapped, name, raw):
        answer = _NOT_FOUND
    else:
        answer = (True, _translate(name, raw))
    with _memo_lock:
        _memo[name] = (wrapped, raw, answer)
    return answer


def _forget(*, setting: str, **kwargs: Any) -> None:
    """setting_changed receiver: drop what was kept for that setting."""
    with _memo_lock:
        _memo.pop(setting, None)


setting_changed.connect(_forget, dispatch_uid="asyncmail.django.bridge")
