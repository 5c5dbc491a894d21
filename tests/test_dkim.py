"""DKIM signing: what the server received verifies with dkimpy, tampering breaks it.

Every signed message goes through a real aiosmtpd on 127.0.0.1 and the bytes
the server got are verified by dkimpy's verifier, its DNS lookups answered
from a dict (no network). The incremental body hash is checked against
dkimpy's own canonicalisation over hostile bodies split at every kind of
place, and a 50 MB file attachment is signed without being held in memory.
"""

from __future__ import annotations

import base64
import hashlib
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy

from asyncmail import (
    ConfigurationError,
    EmailMessage,
    EmailMultiAlternatives,
    InvalidMessageError,
    RawMessage,
    configure,
    get_connection,
)
from asyncmail.backends.smtp import EmailBackend
from asyncmail.dkim import DKIMSigner, signer_from_option, verify
from asyncmail.settings import MASK, mask_secrets
from scriptserver import DEFAULT_EXTENSIONS, ScriptServer
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio

FROM = "sender@example.com"
CANONICALIZATIONS = [
    "relaxed/relaxed",
    "simple/simple",
    "relaxed/simple",
    "simple/relaxed",
]


def _pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


RSA_KEY = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
ED_KEY = _pem(ed25519.Ed25519PrivateKey.generate())
KEYS = {"rsa": RSA_KEY, "ed25519": ED_KEY}


def signer(kind: str = "rsa", **options: Any) -> DKIMSigner:
    options.setdefault("selector", "mail")
    options.setdefault("domain", "example.com")
    return DKIMSigner(private_key=KEYS[kind], **options)


def dns_of(*signers: DKIMSigner) -> dict[str, str]:
    return {s.dns_name: s.dns_record() for s in signers}


def backend_for(port: int, **options: Any) -> EmailBackend:
    options.setdefault("timeout", 10)
    options.setdefault("retries", 0)
    options.setdefault("local_hostname", "client.example")
    return EmailBackend(host="127.0.0.1", port=port, **options)


@pytest.fixture
def server() -> Iterator[SMTPServer]:
    with SMTPServer() as running:
        yield running


def rich_message(path: Path | None = None) -> EmailMultiAlternatives:
    mail = EmailMultiAlternatives(
        "Grüße,   the  report\t ",
        "Plain text  \t\nwith trailing blanks   \n\n\n",
        FROM,
        ["to@example.org"],
        cc=["Zoë Ćopy <cc@example.net>"],
        bcc=["hidden@example.net"],
        headers={"List-Unsubscribe": "<mailto:unsub@example.com>"},
    )
    mail.attach_alternative("<p>Hello <b>world</b></p>\n", "text/html")
    mail.attach("notes.txt", "line  one  \n\n\n\n", "text/plain")
    if path is not None:
        mail.attach_file(path)
    return mail


# -- on the wire ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("canonicalization", CANONICALIZATIONS)
async def test_received_message_verifies(
    server: SMTPServer, kind: str, canonicalization: str
) -> None:
    sign = signer(kind, canonicalization=canonicalization)
    backend = backend_for(server.port, dkim=sign)

    assert await backend.send_messages([rich_message()]) == 1

    (received,) = server.messages
    data = received.data
    assert data.startswith(b"DKIM-Signature: v=1; a=" + sign.algorithm.encode())
    assert verify(data, dns_of(sign))
    assert b"hidden@example.net" not in data  # Bcc still never on the wire
    fields = dkimpy.util.parse_tag_value(
        data.split(b"\r\nMIME-Version:")[0].partition(b":")[2]
    )
    assert fields[b"c"] == canonicalization.encode()
    signed = fields[b"h"].replace(b"\r\n\t", b"").split(b":")
    # From is oversigned; the other present fields are signed once each.
    assert signed.count(b"from") == 2
    for name in (b"to", b"cc", b"subject", b"date", b"message-id", b"mime-version"):
        assert signed.count(name) == 1, name
    assert b"list-unsubscribe" in signed
    assert b"bcc" not in signed


def tampered(data: bytes) -> Iterator[tuple[str, bytes]]:
    head, _, body = data.partition(b"\r\n\r\n")
    yield "body changed", head + b"\r\n\r\n" + body.replace(b"Plain", b"Plane", 1)
    yield "body appended", data + b"one more line\r\n"
    yield "subject changed", data.replace(b"Subject: ", b"Subject: Re: ", 1)
    yield "second From added", head + b"\r\nFrom: evil@example.net\r\n\r\n" + body
    yield "To replaced", data.replace(b"to@example.org", b"tx@example.org", 1)
    yield "signature mangled", data.replace(b"b=", b"b=A", 1)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
async def test_tampering_breaks_verification(server: SMTPServer, kind: str) -> None:
    sign = signer(kind)
    await backend_for(server.port, dkim=sign).send_messages([rich_message()])
    (received,) = server.messages
    assert verify(received.data, dns_of(sign))
    for what, data in tampered(received.data):
        assert data != received.data
        assert not verify(data, dns_of(sign)), what
    # Another key published under the name: not verified either.
    assert not verify(
        received.data, dns_of(signer("rsa" if kind != "rsa" else "ed25519"))
    )


async def test_relaxed_survives_refolding_simple_does_not(server: SMTPServer) -> None:
    relaxed, simple = signer(), signer(canonicalization="simple/simple")
    await backend_for(server.port, dkim=relaxed).send_messages([rich_message()])
    await backend_for(server.port, dkim=simple).send_messages([rich_message()])
    first, second = (m.data for m in server.messages)

    def refold(data: bytes) -> bytes:
        # What relays do: whitespace changed in a header, one folded anew.
        data = data.replace(b"Subject: ", b"Subject:   ", 1)
        return data.replace(b"\r\nTo: ", b"\r\nTo:\r\n\t", 1)

    assert refold(first) != first
    assert verify(refold(first), dns_of(relaxed))
    assert not verify(refold(second), dns_of(simple))


async def test_raw_message_is_signed_as_given(server: SMTPServer) -> None:
    sign = signer("ed25519")
    raw = (
        b"From: Sender <sender@example.com>\r\nTo: to@example.org\r\n"
        b"Subject: raw\r\nMessage-ID: <raw@example.com>\r\n\r\n"
        b"Body with  spaces \r\n.leading dot\r\n\r\n\r\n"
    )
    backend = backend_for(server.port, dkim=sign)
    assert await backend.send_messages([RawMessage(raw, FROM, ["to@example.org"])]) == 1
    (received,) = server.messages
    assert received.data.endswith(raw)  # unchanged behind the signature
    assert verify(received.data, dns_of(sign))


async def test_raw_message_without_from_fails_and_sends_nothing(
    server: SMTPServer,
) -> None:
    backend = backend_for(server.port, dkim=signer())
    raw = RawMessage(b"Subject: no from\r\n\r\nbody\r\n", FROM, ["to@example.org"])
    with pytest.raises(InvalidMessageError, match="without a From header"):
        await backend.send_messages([raw])
    assert server.messages == []


async def test_streamed_file_attachment_verifies(
    server: SMTPServer, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(14).randbytes(3 * 1024 * 1024 + 17))
    sign = signer()
    mail = rich_message(path)
    assert mail.render().streamed  # the attachment is encoded while sent
    assert await backend_for(server.port, dkim=sign).send_messages([mail]) == 1
    (received,) = server.messages
    assert verify(received.data, dns_of(sign))
    assert base64.b64encode(path.read_bytes()[:57]) in received.data


async def test_pooled_sends_all_verify(server: SMTPServer) -> None:
    sign = signer("ed25519")
    backend = backend_for(server.port, dkim=sign, max_connections=4)
    messages = [
        EmailMessage(f"n{i}", f"body {i}\n", FROM, [f"r{i}@example.org"])
        for i in range(16)
    ]
    async with backend:
        assert await backend.send_messages(messages) == 16
    assert len(server.messages) == 16
    assert server.sessions > 1
    for received in server.messages:
        assert verify(received.data, dns_of(sign))


async def test_without_8bitmime_the_signed_message_is_7bit() -> None:
    # Signed in its 7-bit form up front: a relay without 8BITMIME cannot
    # break the signature by re-encoding it.
    extensions = tuple(e for e in DEFAULT_EXTENSIONS if e != "8BITMIME")
    sign = signer()
    with ScriptServer(extensions) as script:
        mail = EmailMessage("Köln", "Grüße aus Köln\n", FROM, ["to@example.org"])
        assert await backend_for(script.port, dkim=sign).send_messages([mail]) == 1
    (accepted,) = script.accepted
    assert accepted.data.isascii()
    assert verify(accepted.data, dns_of(sign))


async def test_mailer_options_and_setting(server: SMTPServer, tmp_path: Path) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(RSA_KEY)
    option = {
        "selector": "s1",
        "domain": "example.com",
        "private_key_file": str(key_file),
    }
    configure(
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=server.port,
        EMAIL_DKIM=option,
        MAILERS={
            "signed": {
                "OPTIONS": {
                    "host": "127.0.0.1",
                    "port": server.port,
                    "dkim": {**option, "selector": "s2"},
                }
            }
        },
    )
    default = get_connection()
    assert isinstance(default, EmailBackend)
    assert default.dkim is not None
    assert default.dkim.selector == "s1"
    await default.send_messages([EmailMessage("a", "b\n", FROM, ["t@example.org"])])
    mailer = get_connection(using="signed")
    await mailer.send_messages([EmailMessage("a", "b\n", FROM, ["t@example.org"])])
    first, second = server.messages
    s1 = signer_from_option(option)
    s2 = signer_from_option({**option, "selector": "s2"})
    assert s1 is not None
    assert s2 is not None
    assert verify(first.data, dns_of(s1))
    assert b"s=s1;" in first.data
    assert verify(second.data, dns_of(s2))
    assert b"s=s2;" in second.data
    assert not verify(second.data, {s2.dns_name: s1.dns_record().replace("p=", "p=A")})


# -- the body hash, piece by piece --------------------------------------------------

BODIES = [
    b"",
    b"\r\n",
    b"\r\n\r\n\r\n",
    b"one line",
    b"one line  \t",
    b"a  \t b \t\r\n\r\n  \r\n \t \r\nc\r\n\r\n\r\n",
    b"trailing blanks   \r\n\t\r\n",
    b"bare\rCR and\nLF \r\r\n\r\n",
    b"\r\r\n",
    b"x\r\n\r",
    b" leading and internal    spaces\r\n" * 50,
    b"\r\n" * 5000 + b"late text\r\n" + b"\r\n" * 3,
]


@pytest.mark.parametrize("relaxed", [True, False], ids=["relaxed", "simple"])
@pytest.mark.parametrize("index", range(len(BODIES)))
def test_incremental_body_hash_matches_dkimpy(relaxed: bool, index: int) -> None:
    body = BODIES[index]
    c = b"relaxed/relaxed" if relaxed else b"simple/simple"
    # A last line without CRLF gets one on the wire (SMTP's end of data
    # needs it), and that is what a receiver canonicalises.
    on_the_wire = body if not body or body.endswith(b"\r\n") else body + b"\r\n"
    expected = hashlib.sha256(
        CanonicalizationPolicy.from_c_value(c).canonicalize_body(on_the_wire)
    ).digest()
    sign = signer(canonicalization=c.decode())
    rng = random.Random(index)
    splits = [[body], [body[i : i + 1] for i in range(min(len(body), 400))]]
    for _ in range(30):
        cuts = sorted(rng.sample(range(len(body) + 1), min(len(body) + 1, 4)))
        splits.append(
            [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        )
    for pieces in splits:
        if b"".join(pieces) != body:
            continue  # the one-byte split covers short bodies only
        hasher = sign.body_hasher()
        for piece in pieces:
            hasher.update(piece)
        assert hasher.digest() == expected, pieces


def test_sign_bytes_verifies_odd_headers() -> None:
    sign = signer()
    message = (
        b"from: a@example.com\r\nSubject:   folded\r\n   over\r\n\tlines  \r\n"
        b"X-Empty:\r\nTo: b@example.org\r\n\r\n"
    )
    assert verify(sign.sign_bytes(message), dns_of(sign))
    assert verify(sign.sign_bytes(b"From: a@example.com\r\n\r\n"), dns_of(sign))


async def test_50mb_file_is_hashed_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "huge.bin"
    with path.open("wb") as file:
        block = random.Random(50).randbytes(1024 * 1024)
        for _ in range(50):
            file.write(block)
    sign = signer("ed25519")
    mail = EmailMessage("big", "see attached\n", FROM, ["to@example.org"])
    mail.attach_file(path)
    tracemalloc.start()
    try:
        signed = await sign.arender(mail)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak  # blocks of ~300 KB, never the file
    assert signed.streamed
    # The same body hash as the whole message, hashed by dkimpy.
    data = signed.data
    fields = dkimpy.util.parse_tag_value(data.split(b"\r\nMIME-Version:")[0][15:])
    body = data.partition(b"\r\n\r\n")[2]
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    assert (
        base64.b64decode(fields[b"bh"])
        == hashlib.sha256(policy.canonicalize_body(body)).digest()
    )
    assert verify(data, dns_of(sign))


# -- configuration --------------------------------------------------------------


def _prime(bits: int, rng: random.Random) -> int:
    while True:
        n = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23)):
            return n


def short_rsa() -> bytes:
    """A 512-bit key: cryptography will not generate one, but loads one."""
    rng = random.Random(512)
    e = 65537
    while True:
        p, q = _prime(256, rng), _prime(256, rng)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=d % (p - 1),
        dmq1=d % (q - 1),
        iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return _pem(numbers.private_key())


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"private_key": "not a key"}, "neither PEM nor a base64 Ed25519 key"),
        (
            {"private_key": RSA_KEY.replace(b"MII", b"XXX", 1)},
            "cannot be loaded",
        ),
        ({"private_key_file": "/nonexistent/dkim.pem"}, "cannot read the private key"),
        ({"private_key": Path("/nonexistent/dkim.pem")}, "cannot read the private key"),
        ({"private_key": RSA_KEY, "private_key_file": "x"}, "exactly one of"),
        ({}, "exactly one of"),
        ({"private_key": RSA_KEY, "selector": "bad selector"}, "invalid selector"),
        ({"private_key": RSA_KEY, "domain": "exa mple.com"}, "invalid domain"),
        ({"private_key": RSA_KEY, "headers": ["to", "subject"]}, "From header must"),
        ({"private_key": RSA_KEY, "headers": ["from", "bcc"]}, "must not be signed"),
        ({"private_key": RSA_KEY, "headers": ["from", "x\r\ny"]}, "invalid header"),
        ({"private_key": RSA_KEY, "canonicalization": "loose"}, "canonicalization"),
        ({"private_key": RSA_KEY, "identity": "a@other.org"}, "identity"),
        ({"private_key": RSA_KEY, "signature_lifetime": -1}, "signature_lifetime"),
        ({"private_key": RSA_KEY, "key": "x"}, "unknown keys"),
    ],
)
def test_bad_configuration_fails_when_the_backend_is_created(
    option: dict[str, Any], message: str
) -> None:
    config = {"selector": "mail", "domain": "example.com", **option}
    with pytest.raises(ConfigurationError, match=message) as info:
        EmailBackend(host="127.0.0.1", port=2525, dkim=config)
    assert "PRIVATE KEY" not in str(info.value)


def test_short_rsa_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="too short"):
        EmailBackend(
            host="127.0.0.1",
            port=2525,
            dkim={"selector": "s", "domain": "example.com", "private_key": short_rsa()},
        )


def test_bad_setting_fails_at_configuration() -> None:
    with pytest.raises(ConfigurationError, match="EMAIL_DKIM must be None or a dict"):
        configure(EMAIL_DKIM="selector=mail")


def test_key_forms_and_secrecy(tmp_path: Path) -> None:
    seed = ed25519.Ed25519PrivateKey.generate()
    raw = seed.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    dkimpy_form = base64.b64encode(raw)  # what dkimpy's dknewkey writes
    path = tmp_path / "k.pem"
    path.write_bytes(RSA_KEY)
    forms = [
        DKIMSigner(selector="a", domain="example.com", private_key=dkimpy_form),
        DKIMSigner(selector="b", domain="example.com", private_key=RSA_KEY.decode()),
        DKIMSigner(selector="c", domain="example.com", private_key=path),
        DKIMSigner(selector="d", domain="example.com", private_key_file=path),
        DKIMSigner(selector="e", domain="bücher.example", private_key=ED_KEY),
    ]
    for sign in forms:
        message = sign.sign_bytes(b"From: a@example.com\r\nSubject: x\r\n\r\nhi\r\n")
        assert verify(message, dns_of(sign)), sign
        assert "PRIVATE" not in repr(sign)
    assert forms[4].domain == "xn--bcher-kva.example"
    masked = mask_secrets({"EMAIL_DKIM": {"private_key": "secret", "selector": "s"}})
    assert masked == {"EMAIL_DKIM": {"private_key": MASK, "selector": "s"}}
    with pytest.raises(TypeError, match="not pickled"):
        __import__("pickle").dumps(forms[0])


def test_signature_lifetime_and_identity() -> None:
    sign = signer(identity="news@mail.example.com", signature_lifetime=3600)
    message = sign.sign_bytes(b"From: news@mail.example.com\r\n\r\nhi\r\n")
    assert b"i=news@mail.example.com;" in message
    fields = dkimpy.util.parse_tag_value(message.split(b"\r\nFrom:")[0][15:])
    assert int(fields[b"x"]) - int(fields[b"t"]) == 3600
    assert verify(message, dns_of(sign))


def test_cli_signs_with_the_environment_setting(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    import asyncmail
    from asyncmail.cli import main
    from asyncmail.server import BANNER, FOOTER

    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(ED_KEY)
    option = {
        "selector": "cli",
        "domain": "example.com",
        "private_key_file": str(key_file),
    }
    monkeypatch.setenv("EMAIL_DKIM", json.dumps(option))
    asyncmail.settings.reload_environment()
    args = ["send", "--from", FROM, "--to", "ada@example.com", "--subject", "Hi"]
    assert main([*args, "--body", "Signed.", "--debug-server"]) == 0
    printed = capsys.readouterr().out.split(BANNER, 1)[1].split(FOOTER, 1)[0]
    # The debug server shows its X- lines, a blank line, then the message.
    message = printed.split("\n\n", 1)[1].strip("\n") + "\n"
    assert message.startswith("DKIM-Signature: v=1; a=ed25519-sha256;")
    data = message.replace("\n", "\r\n").encode()
    sign = signer_from_option(option)
    assert sign is not None
    assert verify(data, dns_of(sign))
