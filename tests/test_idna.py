"""IDNA 2008 with UTS 46 mapping (issue #8, class 5), for headers and the
SMTP envelope alike: domains map as the idna package says (never as the
stdlib's IDNA 2003 codec, which turns faß.de into another domain, fass.de),
and invalid labels or undecodable A-labels are refused before anything is
sent."""

from __future__ import annotations

from email.headerregistry import Address
from typing import Any

import idna
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import asyncmail
from asyncmail import ConfigurationError, EmailMessage, InvalidAddressError
from asyncmail.address import envelope_address, parse_address
from asyncmail.dnsname import ascii_hostname
from hostile import FROM, send_batch
from smtpserver import SMTPServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Any:
    with SMTPServer() as running:
        yield running


MAPPED = [
    ("fa\u00df.de", "xn--fa-hia.de"),  # IDNA 2003 would give fass.de
    ("b\u00fccher.de", "xn--bcher-kva.de"),
    ("B\u00dcCHER.de", "xn--bcher-kva.de"),  # UTS 46 case mapping
    ("\uff41\uff42\uff43\u3002de", "abc.de"),  # full-width letters and dot
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("XN--BCHER-KVA.de", "xn--bcher-kva.de"),
    ("\u03b5\u03bb.gr", "xn--qxam.gr"),
    ("example.com", "example.com"),
    ("Example.COM", "Example.COM"),  # plain ASCII names are kept as given
]
INVALID = [
    "xn--a.com",  # an A-label that does not decode
    "xn--.com",
    "xn--zzzzzzz-.de",
    "-b\u00fccher.de",
    "b\u00fccher-.de",
    "ab--c\u00fc.de",  # hyphens in the 3rd and 4th positions
    "\U0001f4a9.la",  # not a valid IDNA 2008 code point
    "xn--ls8h.la",  # its A-label
    "a_b.de",
    "-a.de",
    "a-.de",
    "a..de",
    ".de",
    "\u00fc" * 64 + ".de",
    ("a" * 63 + ".") * 4 + "de",
    "exa mple.com",
    "xn--bcher-kva.xn--a.de",
]


@pytest.mark.parametrize(("domain", "ascii"), MAPPED)
def test_domains_map_by_idna_2008(domain: str, ascii: str) -> None:
    assert ascii_hostname(domain) == ascii
    for form in (f"user@{domain}", ("Name", f"user@{domain}"), f"N <user@{domain}>"):
        assert parse_address(form).domain == ascii
        assert envelope_address(form) == f"user@{ascii}"
    address = Address("Name", "user", domain)
    assert parse_address(address).domain == ascii


@pytest.mark.parametrize("domain", INVALID)
def test_invalid_domains_are_refused_in_every_form(domain: str) -> None:
    assert ascii_hostname(domain) is None
    for form in (f"user@{domain}", ("Name", f"user@{domain}")):
        with pytest.raises(InvalidAddressError):
            parse_address(form)
        with pytest.raises(InvalidAddressError):
            envelope_address(form)
    with pytest.raises(ConfigurationError):
        asyncmail.configure(DEFAULT_FROM_EMAIL=f"app@{domain}")
    mail = EmailMessage("s", "b", FROM, ["ok@example.com"], cc=[f"user@{domain}"])
    with pytest.raises(InvalidAddressError):
        mail.as_bytes()
    mail = EmailMessage("s", "b", FROM, ["ok@example.com"])
    mail.extra_headers["Reply-To"] = f"user@{domain}"
    with pytest.raises(InvalidAddressError):
        mail.as_bytes()


@hsettings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_domain_is_refused_or_a_valid_idna_2008_name(label: str) -> None:
    domain = f"{label}.de"
    result = ascii_hostname(domain)
    if result is None:
        return
    assert result.isascii()
    # What we send decodes, by IDNA 2008, back to a name.
    idna.decode(result)
    for part in result.split("."):
        assert 0 < len(part) <= 63
        assert not part.startswith("-")
        assert not part.endswith("-")


async def test_envelope_and_headers_agree_on_the_wire(server: SMTPServer) -> None:
    good = [
        EmailMessage("s", "b", f"from@{domain}", [f"to@{domain}"])
        for domain, _ in MAPPED
    ]
    bad = [EmailMessage("s", "b", FROM, [f"to@{domain}"]) for domain in INVALID]
    failed = await send_batch(server, [*good, *bad])
    assert failed == bad
    received = server.messages[: len(good)]
    for message, (_, ascii) in zip(received, MAPPED, strict=True):
        assert message.mail_from == f"from@{ascii}"
        assert message.rcpt_tos == [f"to@{ascii}"]
        assert f"\r\nTo: to@{ascii}\r\n".encode() in message.data
    wire = bytes(server.recorder.wire)
    assert b"fass.de" not in wire
    for domain in INVALID:
        assert f"to@{domain}".encode("utf-8", "replace") not in wire


def test_the_stdlib_codec_is_never_used(monkeypatch: Any) -> None:
    # faß.de through the IDNA 2003 codec is fass.de: a different domain.
    assert "fa\u00df.de".encode("idna") == b"fass.de"
    assert envelope_address("a@fa\u00df.de") == "a@xn--fa-hia.de"


def test_a_non_ascii_smtp_host_is_converted_by_idna_2008() -> None:
    from asyncmail.backends.smtp import EmailBackend

    assert EmailBackend(host="fa\u00df.example").host == "xn--fa-hia.example"
    assert EmailBackend(host="127.0.0.1").host == "127.0.0.1"
    for host in ("-b\u00fccher.example", "ab--c\u00fc.example"):
        with pytest.raises(ConfigurationError, match="not a valid host name"):
            EmailBackend(host=host)


def test_make_msgid_converts_its_domain() -> None:
    from asyncmail import make_msgid

    assert make_msgid(domain="fa\u00df.de").endswith("@xn--fa-hia.de>")
    with pytest.raises(ValueError, match="Message-ID"):
        make_msgid(domain="-b\u00fccher.de")
