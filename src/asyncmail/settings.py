"""Settings: Django's names and meanings, from defaults, environment and code.

Sources, later wins::

    built-in defaults  <  environment variables of the same names
                       <  Django's settings (when Django is configured)
                       <  asyncmail.configure(NAME=value, ...)
                       <  keyword arguments of each call

Django's settings are read only when the process has already imported
Django and configured it (asyncmail never imports Django itself), and only
those the project set (see :mod:`asyncmail.django.bridge`, the one place
that knows about them; :func:`_from_django` is the hook).

``asyncmail.settings`` is a read-only view of the effective values. The
environment is read once, on first use, so variables set by a process
manager before the first send are seen.

Where asyncmail differs from Django's defaults it is on purpose and listed
here: ``EMAIL_SUBJECT_PREFIX`` is ``""`` (Django: ``"[Django] "``), and
``EMAIL_TIMEOUT`` is 60 seconds (Django: no timeout, which lets a stuck
server hang a caller forever); ``None`` still means "no timeout".

Why one module of some 500 lines: it has one job, the effective value of
each setting, and its parts are the table of settings (defaults,
validators, environment parsing, one row per name) and the object that
reads it; the checks of values are shared with the backends' options in
:mod:`asyncmail.options`, the Django side is :mod:`asyncmail.django.bridge`.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .exceptions import BadHeaderError, ConfigurationError, InvalidMailer
from .options import (
    check_bool,
    check_port,
    check_str,
    check_timeout,
    check_tls_mode,
)
from .threads import SharedLock

__all__ = [
    "DEFAULTS",
    "MASK",
    "Settings",
    "UnknownSettingWarning",
    "configure",
    "is_secret_name",
    "mask_secrets",
    "settings",
]


class UnknownSettingWarning(UserWarning):
    """An ``EMAIL_*`` environment variable that is not an asyncmail setting
    (a typo such as ``EMAIL_HOTS``): it is ignored, and this says so."""


#: What a secret is shown as.
MASK = "********"
# Names of settings and options that hold secrets, whatever their prefix or
# case: passwords, tokens (OAuth and API), secrets, API and private keys.
# Paths to key files (ssl_keyfile) name a file, not a secret.
_SECRET_NAME = re.compile(
    r"pass(?:word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|credential",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    """Whether a setting or option called *name* holds a secret."""
    return _SECRET_NAME.search(name) is not None and not name.lower().endswith(
        ("file", "path")
    )


def mask_secrets(value: Any) -> Any:
    """A copy of *value* (a mapping, list or scalar) for display, with the
    value of every secret-named key, at any depth, replaced by :data:`MASK`
    (empty secrets stay empty, so "not set" still shows)."""
    if isinstance(value, Mapping):
        return {
            key: (MASK if item else item)
            if isinstance(key, str) and is_secret_name(key)
            else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(mask_secrets(item) for item in value)
    return value


DEFAULTS: Mapping[str, Any] = {
    "EMAIL_BACKEND": "asyncmail.backends.smtp.EmailBackend",
    "EMAIL_HOST": "localhost",
    "EMAIL_PORT": 25,
    "EMAIL_HOST_USER": "",
    "EMAIL_HOST_PASSWORD": "",
    "EMAIL_USE_TLS": False,
    "EMAIL_USE_SSL": False,
    "EMAIL_SSL_CERTFILE": None,
    "EMAIL_SSL_KEYFILE": None,
    "EMAIL_TIMEOUT": 60.0,
    "EMAIL_USE_LOCALTIME": False,
    "EMAIL_SUBJECT_PREFIX": "",
    "DEFAULT_FROM_EMAIL": "webmaster@localhost",
    "SERVER_EMAIL": "root@localhost",
    "ADMINS": (),
    "MANAGERS": (),
    "EMAIL_FILE_PATH": None,
    "DEFAULT_CHARSET": "utf-8",
    "MAILERS": {},
    "EMAIL_DKIM": None,
}

_ABSENT = object()  # an environment variable that is not set
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


# -- validators: each takes (name, value) and returns the normalised value ----


# The shared ones (asyncmail.options): the same checks and messages as the
# backends' options; bound here by name, as _from_environment tells the
# kinds apart by them.
_str = check_str
_bool = check_bool
_port = check_port
_timeout = check_timeout


def _optional_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    return _str(name, value)


def _charset(name: str, value: Any) -> str:
    # The same check as every charset that reaches a header: codecs.lookup()
    # alone would accept "utf-8\r\nBcc: x" (it ignores punctuation).
    from .mimeparams import check_charset

    text = _str(name, value)
    try:
        return check_charset(name, text)
    except BadHeaderError as exc:
        raise ConfigurationError(str(exc)) from None


def _address_list(name: str, value: Any) -> tuple[str, ...]:
    """Django 6 style list of address strings; (name, address) pairs are
    accepted and turned into strings, as older Django settings hold them."""
    from .address import parse_address

    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigurationError(
            f"{name} must be a list of e-mail addresses, not {type(value).__name__}"
        )
    from .lazytext import resolve_text

    result = []
    for item in value:
        item = resolve_text(item)  # noqa: PLW2901 - Django's lazy strings
        try:
            # A pair becomes text that parses back to the same mailbox (not
            # str(mailbox), the RFC 2047 header form).
            text = item if isinstance(item, str) else parse_address(item).as_text()
            parse_address(text)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{name}: {exc}") from None
        result.append(text)
    return tuple(result)


def _address(name: str, value: Any) -> str:
    from .address import parse_address
    from .lazytext import resolve_text

    value = resolve_text(value)  # Django's lazy strings
    _str(name, value)
    try:
        parse_address(value)
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None
    return str(value)


def _backend(name: str, value: Any) -> str:
    """A dotted path that imports as an asyncmail backend class: checked
    now, so that a typo fails at configure() rather than at the first send."""
    from .mailers import import_backend

    path = _str(name, value)
    try:
        import_backend(path)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from exc.__cause__
    return path


def _mailers(name: str, value: Any) -> dict[str, dict[str, Any]]:
    """Django 6.1's MAILERS: alias -> {"BACKEND": path, "OPTIONS": {...}}.

    Only the shape is checked here; each backend checks its OPTIONS when the
    mailer is created (see :func:`asyncmail.mailers.get_connection`). Errors in
    an entry are :class:`~asyncmail.exceptions.InvalidMailer` naming it.
    """
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name} must be a dict of alias -> config")
    result: dict[str, dict[str, Any]] = {}
    for alias, config in value.items():
        if not isinstance(alias, str) or not alias:
            raise ConfigurationError(f"{name}: aliases must be non-empty str")
        where = f"{name}[{alias!r}]"
        if not isinstance(config, Mapping):
            raise InvalidMailer(f"{where} must be a dict")
        unknown = set(config) - {"BACKEND", "OPTIONS"}
        if unknown:
            raise InvalidMailer(
                f"{where} has unknown keys {sorted(unknown)}; "
                "use 'BACKEND' and 'OPTIONS'"
            )
        backend = config.get("BACKEND", DEFAULTS["EMAIL_BACKEND"])
        options = config.get("OPTIONS", {})
        if not isinstance(backend, str):
            raise InvalidMailer(f"{where}['BACKEND'] must be a str")
        try:
            _backend(f"{where}['BACKEND']", backend)
        except ConfigurationError as exc:
            raise InvalidMailer(str(exc)) from exc.__cause__
        if not isinstance(options, Mapping) or not all(
            isinstance(key, str) for key in options
        ):
            raise InvalidMailer(
                f"{where}['OPTIONS'] must be a dict of keyword arguments"
            )
        if "alias" in options:
            raise InvalidMailer(f"{where}: OPTIONS must not define 'alias'.")
        result[alias] = {"BACKEND": backend, "OPTIONS": dict(options)}
    return result


def _dkim(name: str, value: Any) -> dict[str, Any] | None:
    """EMAIL_DKIM: None, or the keyword arguments of
    :class:`asyncmail.dkim.DKIMSigner` (checked, key and all, when a backend
    is created)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigurationError(
            f"{name} must be None or a dict with selector, domain and private_key "
            "(or private_key_file)"
        )
    return dict(value)


_VALIDATORS: dict[str, Callable[[str, Any], Any]] = {
    "EMAIL_BACKEND": _backend,
    "EMAIL_HOST": _str,
    "EMAIL_PORT": _port,
    "EMAIL_HOST_USER": _str,
    "EMAIL_HOST_PASSWORD": _str,
    "EMAIL_USE_TLS": _bool,
    "EMAIL_USE_SSL": _bool,
    "EMAIL_SSL_CERTFILE": _optional_str,
    "EMAIL_SSL_KEYFILE": _optional_str,
    "EMAIL_TIMEOUT": _timeout,
    "EMAIL_USE_LOCALTIME": _bool,
    "EMAIL_SUBJECT_PREFIX": _str,
    "DEFAULT_FROM_EMAIL": _address,
    "SERVER_EMAIL": _address,
    "ADMINS": _address_list,
    "MANAGERS": _address_list,
    "EMAIL_FILE_PATH": _optional_str,
    "DEFAULT_CHARSET": _charset,
    "MAILERS": _mailers,
    "EMAIL_DKIM": _dkim,
}


def _from_environment(name: str, raw: str) -> Any:
    """Turn an environment variable's text into a value of the setting's type."""
    validator = _VALIDATORS[name]
    if validator is _port:
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(
                f"${name} must be a port number, not {raw!r}"
            ) from None
    if validator is _bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigurationError(f"${name} must be true or false (1/0), not {raw!r}")
    if validator is _timeout:
        if raw.strip().lower() in ("", "none"):
            return None
        try:
            return float(raw)
        except ValueError:
            raise ConfigurationError(f"${name} must be seconds, not {raw!r}") from None
    if validator is _optional_str:
        return raw or None
    if validator is _address_list:
        from .address import parse_address_list

        if not raw.strip():
            return ()
        try:
            return tuple(mailbox.as_text() for mailbox in parse_address_list(raw, name))
        except ValueError as exc:
            raise ConfigurationError(f"${name}: {exc}") from None
    if validator is _mailers or validator is _dkim:
        if validator is _dkim and not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(f"${name} must be JSON: {exc}") from None
    return raw


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, DEFAULTS, n=1)
    return f"; did you mean {close[0]}?" if close else ""


# -- the Django bridge hook ------------------------------------------------------


_django_setting: Callable[[str], tuple[bool, Any]] | None = None


def _from_django(name: str) -> tuple[bool, Any]:
    """(found, value) of one setting in Django's settings, when Django is
    already imported (never imported here) and configured; the translation
    lives in :mod:`asyncmail.django.bridge`."""
    global _django_setting  # noqa: PLW0603 - imported once, on first use
    if _django_setting is None:
        if "django.conf" not in sys.modules:
            return False, None
        from .django.bridge import django_setting

        _django_setting = django_setting
    return _django_setting(name)


def _check_name(name: str) -> None:
    if name not in DEFAULTS:
        raise ConfigurationError(f"Unknown setting {name!r}{_did_you_mean(name)}")


def _warn_unknown_environment() -> None:
    """Warn once per read of the environment about EMAIL_* variables that are
    no setting (settings.md: environment names are validated too)."""
    for name in sorted(os.environ):
        if name.startswith("EMAIL_") and name not in DEFAULTS:
            warnings.warn(
                f"Unknown environment variable ${name} is ignored{_did_you_mean(name)}",
                UnknownSettingWarning,
                stacklevel=4,
            )


class Settings:
    """Read-only view of the effective settings (``asyncmail.settings``)."""

    __slots__ = ("_configured", "_environment", "_lock")

    def __init__(self) -> None:
        # Reset in a forked child (see SharedLock): a parent thread may hold it.
        object.__setattr__(self, "_lock", SharedLock())
        object.__setattr__(self, "_configured", {})
        object.__setattr__(self, "_environment", None)

    def _from_environment(self, name: str) -> tuple[bool, Any]:
        """(found, value) of one setting's environment variable.

        Each variable is parsed once, on first use, and on its own: a bad
        value fails the reads of that setting only, naming the variable.
        """
        environment: dict[str, Any] | None = self._environment
        if environment is None:
            environment = {}
            object.__setattr__(self, "_environment", environment)
            _warn_unknown_environment()
        if name not in environment:
            raw = os.environ.get(name)
            if raw is None:
                environment[name] = _ABSENT
            else:
                value = _from_environment(name, raw)
                environment[name] = _VALIDATORS[name](f"${name}", value)
        value = environment[name]
        return value is not _ABSENT, value

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            if name.startswith("_"):
                # Protocol probes (hasattr(obj, "__wrapped__") in inspect and
                # doctest, copy, pickle) must see a plain AttributeError.
                raise AttributeError(name)
            _check_name(name)
        configured: dict[str, Any] = self._configured
        if name in configured:
            return configured[name]
        return self._effective(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"asyncmail.settings is read-only; use asyncmail.configure({name}=...)"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(
            f"asyncmail.settings is read-only; use asyncmail.configure({name}=...)"
        )

    def __dir__(self) -> list[str]:
        return sorted(DEFAULTS)

    def as_dict(self) -> dict[str, Any]:
        """Every effective setting, for display: every secret masked
        (EMAIL_HOST_PASSWORD, and passwords or tokens in MAILERS options)."""
        values: dict[str, Any] = mask_secrets(
            {name: getattr(self, name) for name in DEFAULTS}
        )
        return values

    def __repr__(self) -> str:
        return "<asyncmail.settings (see as_dict(); secrets masked)>"

    def configure(self, **values: Any) -> None:
        """Set settings in code; see :func:`asyncmail.configure`."""
        checked = {}
        for name, value in values.items():
            _check_name(name)
            checked[name] = _VALIDATORS[name](name, value)
        with self._lock:
            merged = {**self._configured, **checked}
            use_tls = merged.get("EMAIL_USE_TLS", self._effective("EMAIL_USE_TLS"))
            use_ssl = merged.get("EMAIL_USE_SSL", self._effective("EMAIL_USE_SSL"))
            check_tls_mode(use_tls, use_ssl, names=("EMAIL_USE_TLS", "EMAIL_USE_SSL"))
            self._configured.update(checked)

    def _effective(self, name: str) -> Any:
        """A setting's value from Django, the environment or the defaults."""
        found, value = _from_django(name)
        if found:
            return value
        found, value = self._from_environment(name)
        return value if found else DEFAULTS[name]

    @contextlib.contextmanager
    def override(self, **values: Any) -> Iterator[None]:
        """Temporarily configure settings (for tests); restores on exit."""
        with self._lock:
            saved = dict(self._configured)
        try:
            self.configure(**values)
            yield
        finally:
            with self._lock:
                self._configured.clear()
                self._configured.update(saved)

    def reload_environment(self) -> None:
        """Forget the environment read so far; it is read again on next use."""
        object.__setattr__(self, "_environment", None)


settings = Settings()
"""The effective settings (``asyncmail.settings``): read them as attributes
(``settings.EMAIL_HOST``), change them with :func:`configure` or, in tests,
``with settings.override(...)``."""


def configure(**values: Any) -> None:
    """Set asyncmail settings in code, by their Django names.

    Example::

        asyncmail.configure(EMAIL_HOST="smtp.example.com", EMAIL_PORT=587,
                            EMAIL_USE_TLS=True, DEFAULT_FROM_EMAIL="app@example.com")

    Every name is checked (a typo raises
    :class:`~asyncmail.exceptions.ConfigurationError` suggesting the closest
    name) and every value's type is validated. Values given here win over
    environment variables and defaults; keyword arguments of a call win over
    them all.
    """
    settings.configure(**values)
