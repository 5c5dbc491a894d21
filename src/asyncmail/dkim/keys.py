"""DKIM private keys: read from the option or a file and checked when the
signer is created, so a bad key fails at configuration, never at a send.

RSA keys (1024 bits or more) and Ed25519 keys, as PEM or as dkimpy writes an
Ed25519 key (the base64 of its seed); :mod:`cryptography` loads them. No
error message ever quotes the key.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = ["load_key", "read_key"]


def read_key(
    private_key: str | bytes | os.PathLike[str] | None,
    private_key_file: str | os.PathLike[str] | None,
) -> bytes:
    if (private_key is None) == (private_key_file is None):
        raise ConfigurationError(
            "DKIM: give exactly one of private_key (the key itself, or a "
            "pathlib.Path to it) and private_key_file (a path)"
        )
    if isinstance(private_key, os.PathLike):
        private_key_file, private_key = private_key, None
    if private_key_file is not None:
        try:
            return Path(private_key_file).read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                "DKIM: cannot read the private key file "
                f"{os.fspath(private_key_file)!r}: {exc.strerror or exc}"
            ) from exc
    if isinstance(private_key, str):
        return private_key.encode("ascii", "replace")
    if isinstance(private_key, bytes):
        return private_key
    raise ConfigurationError(
        "DKIM: private_key must be str, bytes or a Path, not "
        f"{type(private_key).__name__}"
    )


def load_key(data: bytes) -> RSAPrivateKey | Ed25519PrivateKey:
    """A private key from PEM (PKCS#1 or PKCS#8, unencrypted), or an Ed25519
    key as dkimpy writes it (the base64 of its 32-octet seed)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError as exc:
        raise ConfigurationError(
            "DKIM signing needs the cryptography package: pip install 'asyncmail[dkim]'"
        ) from exc
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = load_pem_private_key(stripped, password=None)
        except (ValueError, TypeError) as exc:
            # The message never quotes the key (a secret).
            raise ConfigurationError(
                f"DKIM: the private key cannot be loaded ({type(exc).__name__}: "
                "not an unencrypted PEM RSA or Ed25519 private key)"
            ) from None
    else:
        try:
            seed = base64.b64decode(stripped, validate=True)
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise ConfigurationError(
                "DKIM: the private key is neither PEM nor a base64 Ed25519 key "
                "(give the key's text or a path to its file)"
            )
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ConfigurationError(
                f"DKIM: an RSA key of {key.key_size} bits is too short; "
                "verifiers refuse keys under 1024 bits (use 2048)"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigurationError(
        f"DKIM: unsupported key type {type(key).__name__}; use RSA or Ed25519"
    )
