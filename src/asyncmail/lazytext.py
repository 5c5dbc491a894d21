"""Lazy strings: values that are not ``str`` but stand for text.

Django code passes ``gettext_lazy("Welcome")`` and other *promises* where a
string is expected: subjects, bodies, addresses, header values, ADMINS
entries. Other libraries have their own (babel's and flask-babel's
``LazyString``, :class:`collections.UserString`). asyncmail accepts them
wherever it accepts text and turns them into ``str`` where the value is
checked, so every check (CR/LF injection, address syntax) sees the real
text.

Django is never imported here: a Django promise can only exist once Django
is imported, so the check looks for its class in :data:`sys.modules`.
"""

from __future__ import annotations

import sys
from collections import UserString
from typing import Any

__all__ = ["freeze_call", "is_lazy_text", "resolve_text"]

# Types that are never lazy strings: the common values, checked first.
_NOT_LAZY = (str, bytes, bytearray, memoryview, int, float, list, dict, tuple)


def is_lazy_text(value: object) -> bool:
    """Whether *value* is a lazy string: not a ``str``, but text on ``str()``.

    That is a Django promise of a string (``gettext_lazy``, ``format_lazy``,
    ``lazy(..., str)``), a :class:`collections.UserString`, or any object
    that has a ``__str__`` of its own and the ``str`` methods ``encode`` and
    ``format`` (how lazy-string proxies of other libraries look). Bytes,
    numbers and arbitrary objects are not text.
    """
    if value is None or isinstance(value, _NOT_LAZY):
        return False
    if isinstance(value, UserString):
        return True
    functional = sys.modules.get("django.utils.functional")
    promise = getattr(functional, "Promise", None)
    if isinstance(promise, type) and isinstance(value, promise):
        # A promise of another type (lazy(f, int)) has no ``encode``.
        return hasattr(value, "encode")
    kind = type(value)
    return (
        kind.__str__ is not object.__str__
        and callable(getattr(value, "encode", None))
        and callable(getattr(value, "format", None))
    )


def resolve_text(value: Any) -> Any:
    """``str(value)`` for a lazy string (see :func:`is_lazy_text`), else
    *value* itself, so the caller's type checks still apply to it."""
    return str(value) if is_lazy_text(value) else value


def freeze_call(
    function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Resolve the lazy strings of a blocking call now, in the calling thread.

    A blocking call runs on the library's event loop thread, where Django's
    per-thread state (the active translation, set by ``translation.override``
    or the locale middleware) is not visible: a ``gettext_lazy`` subject
    would come out in the default language. So the blocking twins resolve
    lazy strings first: in the arguments (recipient lists and ``send_mass_mail``
    tuples included) and in the messages being sent, whose lazy attributes
    are replaced by their text. Messages given by an iterator are consumed on
    the loop thread and are not resolved here.
    """

    def freeze(value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str or value is None:
            return value
        if (kind is list or kind is tuple) and depth < 4:
            items = [freeze(item, depth + 1) for item in value]
            return items if kind is list else tuple(items)
        # An asyncmail message (any kind: asyncmail.message.BaseMessage)
        # freezes its own text; looked up by its method, so that this module
        # needs no import of the message package (which imports it).
        freeze_message = getattr(value, "freeze_lazy_text", None)
        if callable(freeze_message):
            freeze_message()
            return value
        return str(value) if is_lazy_text(value) else value

    freeze(getattr(function, "__self__", None), 0)
    return (
        tuple(freeze(value, 0) for value in args),
        {name: freeze(value, 0) for name, value in kwargs.items()},
    )
