"""E-mail addresses: one strict parser for headers and the SMTP envelope.

Addresses come in three forms, all accepted wherever an address is:
``"Name <local@domain>"`` strings, ``(name, address)`` pairs, and
:class:`email.headerregistry.Address` objects. Each becomes a
:class:`Mailbox`, the only form the rest of the library uses.

The parser is deliberately strict and small, and does not lean on the
stdlib's lenient header parser:

* exactly one mailbox per address (``"a@x, b@x"`` is an error, not two);
* anything ambiguous raises instead of being repaired: ``a@b@c``,
  ``x@y <z@w>``, ``@``, ``to@``, ``@example.com``, ``alice@x)<bob@y>``;
* comments ``( ... )`` are not supported (quote the display name instead);
* no control characters or line separators anywhere outside a display name
  given as a pair or ``Address`` (where they are encoded, never raw);
* RFC 5321 limits: local part <= 64 octets, domain <= 255, path <= 256, so
  oversized input fails at once;
* domains are RFC 5321 host names or address literals; non-ASCII domains
  are converted by IDNA 2008 with UTS 46 mapping, and invalid labels or
  undecodable ``xn--`` labels are refused (see
  :func:`asyncmail.dnsname.ascii_hostname`); a non-ASCII local part is
  allowed but marks the mailbox as needing SMTPUTF8.

Because the envelope address is taken from the very same :class:`Mailbox`
that renders the header, the envelope recipient always equals the header's
addr-spec.

Why one module of some 440 lines: it has one job, the grammar of an
address, and its parts (the tokenizer, the domain and local-part rules, the
Mailbox that renders both the header and the envelope) are one grammar read
together; split, each rule would be checked in one file and relied upon in
another.
"""

from __future__ import annotations

import ipaddress
import re
from email.headerregistry import Address
from functools import lru_cache
from typing import NamedTuple, TypeAlias

from .dnsname import ascii_hostname
from .exceptions import InvalidAddressError
from .headers import LINE_SEPARATORS, encode_phrase, first_word_room, fold
from .lazytext import resolve_text

__all__ = [
    "AddressLike",
    "Mailbox",
    "envelope_address",
    "format_address_header",
    "is_empty_group",
    "parse_address",
    "parse_address_list",
]

#: What users may pass wherever an address is expected.
AddressLike: TypeAlias = "str | tuple[str, str] | Address"

# The longest address string we look at: a display name of a few hundred
# characters plus a 256-octet path. Longer input fails before any parsing.
MAX_ADDRESS_LENGTH = 1024
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256  # including the angle brackets of the SMTP path

_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
# Inside quotes: printable ASCII but '"' and '\', plus non-ASCII, plus space
# and tab; a backslash may escape any printable character.
_QUOTED_CONTENT = re.compile(
    r"(?:[\x20\x21\x23-\x5b\x5d-\x7e\t\u00a0-\U0010ffff]|\\[\x20-\x7e\t])*\Z"
)
_UNSAFE_CHARS = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{LINE_SEPARATORS}]")
# A display-name word in a string address: atoms, plus "." (common in names
# such as "John Q. Public", and harmless once we quote it on output).
_PHRASE_WORD = re.compile(rf"(?:{_ATEXT}|\.)+\Z")
# A display name that can stand unquoted in an address string.
_PLAIN_PHRASE = re.compile(rf"(?:{_ATEXT}|\.)+(?: (?:{_ATEXT}|\.)+)*\Z")


class Mailbox(NamedTuple):
    """One parsed mailbox: display name and address, ready for the wire.

    ``local_part`` is in its wire form (a dot-atom, or a quoted string);
    ``domain`` is ASCII (IDNA-encoded when the input was not).
    """

    display_name: str
    local_part: str
    domain: str

    @property
    def addr_spec(self) -> str:
        """``local@domain`` as used in the SMTP envelope."""
        return f"{self.local_part}@{self.domain}"

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is not ASCII (only SMTPUTF8 can carry it)."""
        return not self.local_part.isascii()

    def header_words(self, first: int = 75) -> list[str]:
        """The mailbox as foldable words for an address header; the first
        encoded word (if any) is at most *first* characters."""
        if not self.display_name:
            return [self.addr_spec]
        return [*encode_phrase(self.display_name, first), f"<{self.addr_spec}>"]

    def as_text(self) -> str:
        """``Name <local@domain>`` as a person writes it, which
        :func:`parse_address` reads back as this same mailbox.

        ``str()`` gives the header form instead, where a non-ASCII display
        name is an RFC 2047 encoded word: parsed again, that would be taken
        literally.
        """
        if not self.display_name:
            return self.addr_spec
        name = self.display_name
        if _PLAIN_PHRASE.match(name) is None:
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.addr_spec}>"

    def __str__(self) -> str:
        return " ".join(self.header_words())


def _fail(value: object, reason: str) -> InvalidAddressError:
    shown = repr(value)
    if len(shown) > 200:  # never echo a huge hostile input in full
        shown = shown[:200] + "..."
    return InvalidAddressError(f"Invalid address {shown}: {reason}")


def parse_address(value: AddressLike) -> Mailbox:
    """Parse one address in any accepted form into a :class:`Mailbox`.

    Raises :class:`~asyncmail.exceptions.InvalidAddressError` (a
    ``BadHeaderError`` and ``ValueError``) with the reason when the value is
    not exactly one well-formed mailbox. Lazy strings (Django's
    ``gettext_lazy`` and the like) are taken as their text.
    """
    value = resolve_text(value)
    if isinstance(value, str):
        return _parse_mailbox_string(value)
    if isinstance(value, Address):
        return _mailbox_from_parts(
            value, value.display_name, value.username, value.domain, quote=True
        )
    if isinstance(value, tuple) and len(value) == 2:
        name, address = resolve_text(value[0]), resolve_text(value[1])
        if not isinstance(name, str) or not isinstance(address, str):
            raise _fail(value, "a (name, address) pair must hold two strings")
        local, domain = _split_addr_spec(value, address.strip(" \t"))
        return _mailbox_from_parts(value, name, local, domain, quote=False)
    raise TypeError(
        "An address must be a str, a (name, address) pair or an "
        f"email.headerregistry.Address, not {type(value).__name__}"
    )


def _check_display_name(value: object, name: str) -> None:
    if len(name) > MAX_ADDRESS_LENGTH:
        raise InvalidAddressError(
            f"Invalid address: the display name is longer than "
            f"{MAX_ADDRESS_LENGTH} characters ({name[:40]!r}...)"
        )
    for separator in LINE_SEPARATORS:
        if separator in name:
            raise _fail(value, "the display name contains a line break")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(value, "the display name is not valid Unicode") from None


@lru_cache(maxsize=4096)
def _parse_mailbox_string(value: str) -> Mailbox:
    # Cached: bulk sends repeat the same From and admin addresses, and
    # Mailbox is immutable. Failures are not cached (they raise).
    if len(value) > MAX_ADDRESS_LENGTH:
        raise _fail(value[:60] + "...", f"longer than {MAX_ADDRESS_LENGTH} characters")
    if _UNSAFE_CHARS.search(value) is not None:
        raise _fail(value, "it contains a line break or a control character")
    text = value.strip(" \t")
    if not text:
        raise _fail(value, "it is empty")
    if _find_unquoted(text, ",") != -1:
        raise _fail(
            value,
            "it holds more than one address (',' outside quotes); "
            "give each address as its own list item",
        )
    if not text.endswith(">"):
        # A bare addr-spec: no display name, no brackets.
        if "<" in text or ">" in text:
            raise _fail(value, "unbalanced angle brackets")
        local, domain = _split_addr_spec(value, text)
        return _mailbox_from_parts(value, "", local, domain, quote=False)
    opening = _find_unquoted(text, "<")
    if opening == -1:
        raise _fail(value, "unbalanced angle brackets")
    spec = text[opening + 1 : -1]
    if "<" in spec or ">" in spec:
        raise _fail(value, "more than one pair of angle brackets")
    name = _parse_phrase(value, text[:opening].strip(" \t"))
    local, domain = _split_addr_spec(value, spec)
    return _mailbox_from_parts(value, name, local, domain, quote=False)


def _find_unquoted(text: str, char: str) -> int:
    """Index of the first *char* outside a quoted string, or -1."""
    quoted = escaped = False
    for index, current in enumerate(text):
        if escaped:
            escaped = False
        elif current == "\\" and quoted:
            escaped = True
        elif current == '"':
            quoted = not quoted
        elif current == char and not quoted:
            return index
    return -1


def _split_unquoted(text: str, char: str) -> list[str]:
    """Split *text* at each *char* outside quoted strings, in one pass."""
    items: list[str] = []
    quoted = escaped = False
    start = 0
    for index, current in enumerate(text):
        if escaped:
            escaped = False
        elif current == "\\" and quoted:
            escaped = True
        elif current == '"':
            quoted = not quoted
        elif current == char and not quoted:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return items


def _parse_phrase(value: str, phrase: str) -> str:
    """Decode a display name: atoms and quoted strings, separated by spaces."""
    words: list[str] = []
    position = 0
    length = len(phrase)
    while position < length:
        char = phrase[position]
        if char in " \t":
            position += 1
            continue
        if char == '"':
            end, content = _read_quoted(value, phrase, position)
            words.append(content)
            position = end
            continue
        end = position
        while end < length and phrase[end] not in ' \t"':
            end += 1
        word = phrase[position:end]
        if _PHRASE_WORD.match(word) is None:
            raise _fail(
                value,
                f"the display name {phrase!r} has special characters; quote it "
                '("...") or pass a (name, address) pair',
            )
        words.append(word)
        position = end
    return " ".join(words)


def _read_quoted(value: str, text: str, start: int) -> tuple[int, str]:
    """Read the quoted string at *start*; return (index after it, content)."""
    chars: list[str] = []
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == "\\":
            if position + 1 >= len(text):
                break
            chars.append(text[position + 1])
            position += 2
            continue
        if char == '"':
            return position + 1, "".join(chars)
        chars.append(char)
        position += 1
    raise _fail(value, "unterminated quoted string")


def _split_addr_spec(value: object, spec: str) -> tuple[str, str]:
    """Split ``local@domain`` at its one unquoted '@'."""
    if spec.startswith('"'):
        end, _ = _read_quoted(str(value), spec, 0)
        if spec[end : end + 1] != "@":
            raise _fail(value, "expected '@' after the quoted local part")
        return spec[:end], spec[end + 1 :]
    local, at, domain = spec.partition("@")
    if not at:
        raise _fail(value, "it has no '@'")
    if "@" in domain:
        raise _fail(value, "it has more than one '@'")
    return local, domain


def _mailbox_from_parts(
    value: object, name: str, local: str, domain: str, *, quote: bool
) -> Mailbox:
    """Validate the parts and build the Mailbox.

    With ``quote`` the local part is the *unquoted* text (as in
    ``Address.username``) and gets quoted when it is not a dot-atom.
    """
    if _UNSAFE_CHARS.search(local) or _UNSAFE_CHARS.search(domain):
        raise _fail(value, "it contains a line break or a control character")
    _check_display_name(value, name)
    if not local:
        raise _fail(value, "the local part (before '@') is empty")
    if quote and _DOT_ATOM.match(local) is None:
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if local.startswith('"'):
        if (
            len(local) < 2
            or not local.endswith('"')
            or _QUOTED_CONTENT.match(local[1:-1]) is None
            or local[1:-1].endswith("\\")
        ):
            raise _fail(value, "the quoted local part is malformed")
    elif _DOT_ATOM.match(local) is None:
        raise _fail(value, f"the local part {local!r} is not valid")
    if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_PART:
        raise _fail(value, f"the local part is longer than {MAX_LOCAL_PART} octets")
    ascii_domain = _ascii_domain(value, domain)
    if (
        len(local.encode("utf-8", "surrogatepass")) + 1 + len(ascii_domain) + 2
        > MAX_PATH
    ):
        raise _fail(value, f"the address is longer than {MAX_PATH - 2} octets")
    try:
        local.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(value, "the local part is not valid Unicode") from None
    return Mailbox(name, local, ascii_domain)


@lru_cache(maxsize=1024)
def _ascii_domain_cached(domain: str) -> str | None:
    """The ASCII (IDNA) form of a valid domain, or None."""
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal[:5].lower() == "ipv6:":
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            return None
        return domain
    return ascii_hostname(domain)


def _ascii_domain(value: object, domain: str) -> str:
    if not domain:
        raise _fail(value, "the domain (after '@') is empty")
    if len(domain) > MAX_DOMAIN:
        raise _fail(value, f"the domain is longer than {MAX_DOMAIN} octets")
    ascii_domain = _ascii_domain_cached(domain)
    if ascii_domain is None:
        raise _fail(value, f"the domain {domain!r} is not a valid host name")
    return ascii_domain


def envelope_address(value: AddressLike) -> str:
    """The addr-spec to put in ``MAIL FROM`` / ``RCPT TO``, strictly checked.

    Exactly one mailbox, no parser defects, no control characters, RFC 5321
    length limits, IDNA-encoded domain. A non-ASCII local part is returned as
    is; the caller must then use SMTPUTF8.
    """
    return parse_address(value).addr_spec


def parse_address_list(value: str, header: str = "To") -> list[Mailbox]:
    """Parse a header value holding a comma-separated list of mailboxes.

    Used for ``headers={"To": ...}`` style overrides; each item must be a
    single well-formed mailbox. An empty RFC 5322 group
    (``undisclosed-recipients:;``) yields no mailboxes.
    """
    if len(value) > MAX_ADDRESS_LENGTH * 64:
        raise InvalidAddressError(f"Header {header!r} is too long", header=header)
    items = _split_unquoted(value, ",")
    if len(items) == 1 and is_empty_group(items[0]):
        return []
    mailboxes = []
    for item in items:
        try:
            mailboxes.append(_parse_mailbox_string(item))
        except InvalidAddressError as exc:
            raise InvalidAddressError(
                f"{exc} (in header {header!r})", header=header
            ) from None
    return mailboxes


# The group name, with no surrounding whitespace: a class that cannot
# overlap with what is stripped around it, so matching is linear.
_GROUP_CHAR = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]"
_GROUP_NAME = re.compile(rf"{_GROUP_CHAR}(?:(?:{_GROUP_CHAR}| )*{_GROUP_CHAR})?\Z")


def is_empty_group(text: str) -> bool:
    """True for an empty RFC 5322 group such as ``undisclosed-recipients:;``.

    Linear in the length of *text* (whitespace is stripped with str methods,
    the name matched by a regex that cannot backtrack), and bounded by a
    length guard.
    """
    if len(text) > MAX_ADDRESS_LENGTH:
        return False
    stripped = text.strip(" \t")
    if not stripped.endswith(";"):
        return False
    name, colon, rest = stripped[:-1].partition(":")
    if not colon or rest.strip(" \t"):
        return False
    return _GROUP_NAME.match(name.rstrip(" \t")) is not None


def format_address_header(name: str, mailboxes: list[Mailbox]) -> str:
    """Render an address header (From, To, Cc, Reply-To, ...) as folded lines."""
    pieces: list[tuple[str, str]] = []
    last = len(mailboxes) - 1
    for index, mailbox in enumerate(mailboxes):
        words = mailbox.header_words(first_word_room(name) if index == 0 else 75)
        if index < last:
            words[-1] += ","
        pieces.extend((" ", word) for word in words)
    return fold(name, pieces)
