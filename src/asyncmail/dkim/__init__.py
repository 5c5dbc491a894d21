"""DKIM signing (RFC 6376; Ed25519 per RFC 8463) of the messages a backend sends.

A :class:`DKIMSigner` holds a domain, a selector and a private key (RSA,
1024 bits or more, or Ed25519), checked when it is created: a key that
cannot be read or used fails at configuration, never at the first send.
The SMTP backend takes one as its ``dkim=`` option (or a dict of the
signer's keyword arguments, or the ``EMAIL_DKIM`` setting) and signs every
message it sends, built or raw, with streamed attachments or not.

Memory stays bounded: the body hash is computed incrementally, block by
block, over what will be written (a file attachment is read once to hash it
and once more while it is sent, never held whole), with the canonicalisation
done per block on whole lines. The header signature is made here with
:mod:`cryptography`; :func:`verify` checks a message with dkimpy, the
reference implementation (both come with ``pip install asyncmail[dkim]``).

Messages are signed in their 7-bit form where they have one (quoted-printable
or base64 text parts), so that no relay that lacks 8BITMIME can break the
signature by re-encoding them; a :class:`~asyncmail.message.RawMessage` is
signed exactly as given.

The signer (options, the DKIM-Signature field, signing rendered messages) is
here; :mod:`asyncmail.dkim.canon` holds the canonicalisation and the
incremental body hash, :mod:`asyncmail.dkim.keys` reading and checking keys.
This module is longer than most because :class:`DKIMSigner` is one class:
its option checks, DNS record and signature field read best side by side.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..exceptions import ConfigurationError, InvalidMessageError
from ..message import (
    BaseMessage,
    RawMessage,
    RenderedMessage,
    render_is_heavy,
)
from .canon import CRLF, BodyHash, header_fields, relaxed_field, split_message
from .keys import load_key, read_key

__all__ = [
    "DEFAULT_HEADERS",
    "DEFAULT_OVERSIGN",
    "DKIMSigner",
    "signer_from_option",
    "verify",
]

#: Header fields signed by default, each as many times as the message holds
#: it: the originator and recipients, the subject, date and identifiers, the
#: MIME structure and the list headers a receiver acts on.
DEFAULT_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
    "resent-date",
    "resent-from",
    "resent-to",
    "resent-cc",
    "resent-message-id",
)

#: Header fields signed once more than they occur (oversigned), so that no
#: relay can add another one without breaking the signature.
DEFAULT_OVERSIGN: tuple[str, ...] = ("from",)

# Fields a signature must not cover: added or changed in transit (RFC 6376
# 5.4), the signature itself, or never meant to be seen.
_NEVER_SIGNED = frozenset(
    {"return-path", "received", "comments", "keywords", "dkim-signature", "bcc"}
)
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext
_SELECTOR = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*"
)
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_CANONICALIZATIONS = (
    "relaxed/relaxed",
    "relaxed/simple",
    "simple/simple",
    "simple/relaxed",
)
_OPTIONS = frozenset(
    {
        "selector",
        "domain",
        "private_key",
        "private_key_file",
        "canonicalization",
        "headers",
        "oversign",
        "identity",
        "signature_lifetime",
    }
)


def _header_names(option: str, names: Iterable[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ConfigurationError(f"DKIM: {option} must be a list of header names")
    result: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise ConfigurationError(f"DKIM: invalid header name {name!r} in {option}")
        lowered = name.lower()
        if lowered in _NEVER_SIGNED:
            raise ConfigurationError(f"DKIM: the {name} header must not be signed")
        if lowered not in result:
            result.append(lowered)
    return tuple(result)


class DKIMSigner:
    """Signs messages for one domain and selector.

    :param selector: the selector (``s=``): the key's public half is
        published at ``<selector>._domainkey.<domain>``.
    :param domain: the signing domain (``d=``), usually the From domain.
    :param private_key: the key, PEM text or bytes (RSA or Ed25519,
        unencrypted) or an Ed25519 key in dkimpy's base64 form, or a
        :class:`~pathlib.Path` to its file.
    :param private_key_file: a path to the key's file (instead of
        private_key). Either is read and checked now.
    :param canonicalization: ``"relaxed/relaxed"`` (the default, which
        survives the re-folding and whitespace changes relays make) or
        another header/body pair of ``relaxed`` and ``simple``.
    :param headers: the header fields to sign (:data:`DEFAULT_HEADERS`);
        From is required.
    :param oversign: fields signed once more than present
        (:data:`DEFAULT_OVERSIGN`: From), so none can be added.
    :param identity: the agent or user identity (``i=``), ending with the
        domain (default: none, which means ``@domain``).
    :param signature_lifetime: seconds after signing when the signature
        expires (``x=``); None (default): no expiry.
    """

    __slots__ = (
        "_key",
        "algorithm",
        "canonicalization",
        "domain",
        "headers",
        "identity",
        "oversign",
        "selector",
        "signature_lifetime",
    )

    def __init__(
        self,
        *,
        selector: str,
        domain: str,
        private_key: str | bytes | os.PathLike[str] | None = None,
        private_key_file: str | os.PathLike[str] | None = None,
        canonicalization: str = "relaxed/relaxed",
        headers: Iterable[str] = DEFAULT_HEADERS,
        oversign: Iterable[str] = DEFAULT_OVERSIGN,
        identity: str | None = None,
        signature_lifetime: float | None = None,
    ) -> None:
        if not isinstance(selector, str) or not _SELECTOR.fullmatch(selector):
            raise ConfigurationError(f"DKIM: invalid selector {selector!r}")
        if not isinstance(domain, str):
            raise ConfigurationError(f"DKIM: invalid domain {domain!r}")
        from ..dnsname import ascii_hostname

        ascii_domain = domain if domain.isascii() else ascii_hostname(domain)
        if (
            ascii_domain is None
            or len(ascii_domain) > 253
            or not _DOMAIN.fullmatch(ascii_domain)
        ):
            raise ConfigurationError(f"DKIM: invalid domain {domain!r}")
        if canonicalization not in _CANONICALIZATIONS:
            raise ConfigurationError(
                "DKIM: canonicalization must be one of "
                f"{', '.join(_CANONICALIZATIONS)}, not {canonicalization!r}"
            )
        self.selector = selector
        self.domain = ascii_domain.lower()
        self.canonicalization = canonicalization
        self.headers = _header_names("headers", headers)
        if "from" not in self.headers:
            raise ConfigurationError("DKIM: the From header must be signed (RFC 6376)")
        self.oversign = _header_names("oversign", oversign)
        if identity is not None and (
            not isinstance(identity, str)
            or "@" not in identity
            or any(c in identity for c in "\r\n\0; \t")
            or not (
                (at := identity.rpartition("@")[2].lower()) == self.domain
                or at.endswith("." + self.domain)
            )
        ):
            raise ConfigurationError(
                f"DKIM: identity {identity!r} must be an address at "
                f"{self.domain} or a subdomain of it"
            )
        self.identity = identity
        if signature_lifetime is not None and (
            isinstance(signature_lifetime, bool)
            or not isinstance(signature_lifetime, (int, float))
            or signature_lifetime <= 0
        ):
            raise ConfigurationError(
                "DKIM: signature_lifetime must be positive seconds"
            )
        self.signature_lifetime = signature_lifetime
        self._key = load_key(read_key(private_key, private_key_file))
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self.algorithm = (
            "ed25519-sha256"
            if isinstance(self._key, ed25519.Ed25519PrivateKey)
            else "rsa-sha256"
        )

    def __repr__(self) -> str:  # never the key
        return (
            f"<DKIMSigner d={self.domain} s={self.selector} a={self.algorithm} "
            f"c={self.canonicalization}>"
        )

    def __reduce__(self) -> Any:
        raise TypeError("A DKIMSigner holds a private key and is not pickled")

    # -- the DNS side ----------------------------------------------------------

    @property
    def dns_name(self) -> str:
        """Where the public key is published: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record to publish at :attr:`dns_name` (``v=DKIM1; k=...; p=...``)."""
        from cryptography.hazmat.primitives import serialization

        public = self._key.public_key()
        if self.algorithm == "ed25519-sha256":
            raw = public.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            kind = "ed25519"
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            kind = "rsa"
        return f"v=DKIM1; k={kind}; p={base64.b64encode(raw).decode('ascii')}"

    # -- signing -----------------------------------------------------------------

    def body_hasher(self) -> BodyHash:
        """A fresh incremental body hasher for this signer's canonicalisation."""
        return BodyHash(relaxed=self.canonicalization.endswith("/relaxed"))

    def signature(
        self, head: bytes, body_hash: bytes, *, now: float | None = None
    ) -> bytes:
        """The ``DKIM-Signature`` field (folded, with its CRLF) for the header
        block *head* (CRLF-ended fields) and the body's hash *body_hash*."""
        fields = header_fields(head)
        present = [name.decode("ascii", "replace") for name, _ in fields]
        if "from" not in present:
            raise InvalidMessageError(
                "Cannot DKIM-sign a message without a From header"
            )
        signed: list[str] = []
        for name in self.headers:
            signed += [name] * present.count(name)
            if name in self.oversign:
                signed.append(name)
        stamp = int(time.time() if now is None else now)
        tags = [
            "v=1",
            f"a={self.algorithm}",
            f"c={self.canonicalization}",
            f"d={self.domain}",
            f"s={self.selector}",
            f"t={stamp}",
        ]
        if self.signature_lifetime is not None:
            tags.append(f"x={stamp + max(1, int(self.signature_lifetime))}")
        if self.identity is not None:
            tags.append(f"i={self.identity}")
        lines: list[str] = []
        line = ""
        for tag in tags:  # folded so that no line grows long
            # The first line also holds "DKIM-Signature: " (16 characters).
            if line and len(line) + len(tag) > (52 if not lines else 68):
                lines.append(line.rstrip())
                line = ""
            line += tag + "; "
        lines.append(line.rstrip())
        # h= folded at the colons.
        line = "h="
        for index, name in enumerate(signed):
            piece = name + (":" if index < len(signed) - 1 else ";")
            if len(line) + len(piece) > 70:
                lines.append(line)
                line = ""
            line += piece
        lines.append(line)
        lines.append(f"bh={base64.b64encode(body_hash).decode('ascii')};")
        lines.append("b=")
        unsigned = ("DKIM-Signature: " + "\r\n\t".join(lines)).encode("ascii")
        # The fields in h= order, each taken from the bottom up; a name with
        # no instance left (an oversigned one) contributes nothing.
        relaxed = self.canonicalization.startswith("relaxed/")
        remaining: dict[str, list[bytes]] = {}
        for raw_name, field in fields:
            remaining.setdefault(raw_name.decode("ascii", "replace"), []).append(field)
        data = bytearray()
        for name in signed:
            instances = remaining.get(name)
            if instances:
                field = instances.pop()
                data += relaxed_field(field) if relaxed else field
        own = relaxed_field(unsigned + CRLF)[:-2] if relaxed else unsigned
        data += own
        signature = self._sign(bytes(data))
        encoded = base64.b64encode(signature).decode("ascii")
        folded = "\r\n\t ".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))
        return unsigned + folded.encode("ascii") + CRLF

    def _sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ed25519, padding

        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            # RFC 8463: Ed25519 signs the SHA-256 digest of the header data.
            return self._key.sign(hashlib.sha256(data).digest())
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def _signed(
        self, rendered: RenderedMessage, head: bytes, body_hash: bytes
    ) -> RenderedMessage:
        first = rendered.chunks[0]
        assert isinstance(first, bytes)  # split_message found the header block there
        return RenderedMessage(
            (self.signature(head, body_hash) + first, *rendered.chunks[1:]),
            rendered.eight_bit,
            rendered.smtputf8,
            rendered.message_id,
        )

    def sign(self, rendered: RenderedMessage) -> RenderedMessage:
        """*rendered* with a DKIM-Signature in front (blocking: streamed file
        attachments are read to hash them; use :meth:`asign` on a loop)."""
        head, start, rest = split_message(rendered.chunks)
        hasher = self.body_hasher()
        hasher.update(start)
        for chunk in rendered.chunks[rest:]:
            for block in (chunk,) if isinstance(chunk, bytes) else chunk.blocks():
                hasher.update(block)
        return self._signed(rendered, head, hasher.digest())

    async def asign(self, rendered: RenderedMessage) -> RenderedMessage:
        """:meth:`sign`, reading streamed file attachments off the event loop,
        one block at a time."""
        head, start, rest = split_message(rendered.chunks)
        hasher = self.body_hasher()
        hasher.update(start)
        for chunk in rendered.chunks[rest:]:
            if isinstance(chunk, bytes):
                hasher.update(chunk)
            else:
                async for block in chunk.ablocks():
                    hasher.update(block)
        return self._signed(rendered, head, hasher.digest())

    def sign_bytes(self, message: bytes) -> bytes:
        """A whole message (CRLF line endings) with its DKIM-Signature in front."""
        return self.sign(RenderedMessage((message,), False, False, "")).data

    @staticmethod
    def render(message: BaseMessage) -> RenderedMessage:
        """Render *message* for signing: 7-bit where it can be (a relay
        without 8BITMIME would otherwise re-encode it and break the
        signature), a RawMessage as given."""
        if isinstance(message, RawMessage):
            return message.render()
        try:
            return message.render(allow_8bit=False)
        except InvalidMessageError:
            return message.render()  # content that needs 8bit; raises if bad

    async def arender(self, message: BaseMessage) -> RenderedMessage:
        """Render and sign *message*; big content is rendered and hashed in a
        worker thread, streamed attachments read block by block."""
        import anyio

        if render_is_heavy(message):
            rendered = await anyio.to_thread.run_sync(self.render, message)
            if not rendered.streamed:
                return await anyio.to_thread.run_sync(self.sign, rendered)
        else:
            rendered = self.render(message)
        return await self.asign(rendered)


def signer_from_option(value: Any, where: str = "dkim") -> DKIMSigner | None:
    """A backend's ``dkim=`` option (a signer, a dict of its keyword
    arguments, or None) as a signer; a ConfigurationError names what is wrong."""
    if value is None or isinstance(value, DKIMSigner):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{where} must be a DKIMSigner or a dict with selector, domain and "
            f"private_key, not {type(value).__name__}"
        )
    unknown = set(value) - _OPTIONS
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown keys {sorted(unknown)}; use {sorted(_OPTIONS)}"
        )
    missing = {"selector", "domain"} - set(value)
    if missing:
        raise ConfigurationError(f"{where}: missing {sorted(missing)}")
    return DKIMSigner(**value)


def verify(
    message: bytes,
    dns: Mapping[str, str] | Callable[[str], str | None],
) -> bool:
    """Whether the first DKIM signature of *message* verifies, with dkimpy.

    *dns* answers the key lookups: a mapping of names
    (``sel._domainkey.example.com``) to TXT records (as
    :meth:`DKIMSigner.dns_record` gives), or a function of the name. No
    network is used.
    """
    try:
        import dkim as dkimpy
    except ImportError as exc:
        raise ConfigurationError(
            "DKIM verification needs dkimpy: pip install 'asyncmail[dkim]'"
        ) from exc

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        text = name.decode("ascii").rstrip(".")
        answer = dns(text) if callable(dns) else dns.get(text)
        return None if answer is None else answer.encode("ascii")

    try:
        return bool(dkimpy.verify(message, dnsfunc=lookup))
    except Exception:
        # dkimpy turns its own errors into False, not all its libraries' ones.
        return False
