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

__all__ = ["is_lazy_text", "resolve_text"]


def is_lazy_text(value: object) -> bool:
    """Whether *value* is a lazy string: not a ``str``, but text on ``str()``.

    That is a Django promise of a string (``gettext_lazy``, ``format_lazy``,
    ``lazy(..., str)``), a :class:`collections.UserString`, or any object
    that has a ``__str__`` of its own and the ``str`` methods ``encode`` and
    ``format`` (how lazy-string proxies of other libraries look). Bytes,
    numbers and arbitrary objects are not text.
    """
    if isinstance(value, (str, bytes, bytearray, memoryview, int, float)):
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
