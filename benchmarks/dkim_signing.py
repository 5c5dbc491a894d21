"""DKIM signing cost per message, next to the cost of building it (same run).

For each message shape of the build benchmark, three things are timed in
interleaved rounds: building the message (render: what every send does),
building and signing it with an RSA 2048 key, and with an Ed25519 key (the
SMTP backend's path when ``dkim=`` is set: render 7-bit, body hash, header
signature). Printed: the median time per message (min-max over the rounds)
and each signed figure as a ratio to the build of the same round.

    python benchmarks/dkim_signing.py [--rounds 5] [--count 300]

Needs ``asyncmail[dkim]``; no root, no network, no server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from _shapes import SHAPES, Shape
from asyncmail import EmailMultiAlternatives
from asyncmail.dkim import DKIMSigner


def message(shape: Shape) -> EmailMultiAlternatives:
    msg = EmailMultiAlternatives(
        shape.subject, shape.body, shape.from_email, list(shape.to)
    )
    if shape.html is not None:
        msg.attach_alternative(shape.html, "text/html")
    for a in shape.attachments:
        msg.attach(a.filename, a.content, a.mimetype)
    return msg


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def per_message(work: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        work()
    return (time.perf_counter() - start) / count


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--rounds", type=int, default=5)
    args.add_argument("--count", type=int, default=300)
    options = args.parse_args()
    signers = {
        "rsa2048": DKIMSigner(
            selector="s",
            domain="example.com",
            private_key=pem(
                rsa.generate_private_key(public_exponent=65537, key_size=2048)
            ),
        ),
        "ed25519": DKIMSigner(
            selector="s",
            domain="example.com",
            private_key=pem(ed25519.Ed25519PrivateKey.generate()),
        ),
    }
    print(
        f"{'shape':<12} {'case':<16} {'us/msg (median)':>16} {'min-max':>16} "
        f"{'x build':>8}"
    )
    for shape in SHAPES.values():
        mail = message(shape)
        cases: dict[str, Callable[[], object]] = {
            "build": lambda mail=mail: mail.render(),
            **{
                f"build+{name}": (
                    lambda mail=mail, signer=signer: signer.sign(signer.render(mail))
                )
                for name, signer in signers.items()
            },
        }
        count = max(10, options.count // (10 if shape.attachments else 1))
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(options.rounds):  # interleaved: the same load for each
            for name, work in cases.items():
                times[name].append(per_message(work, count))
        base = statistics.median(times["build"])
        for name, samples in times.items():
            median = statistics.median(samples)
            spread = f"{min(samples) * 1e6:.0f}-{max(samples) * 1e6:.0f}"
            print(
                f"{shape.name:<12} {name:<16} {median * 1e6:>16.0f} {spread:>16} "
                f"{median / base:>8.2f}"
            )
        ratios = [
            statistics.median(
                (s - b) * 1e6 for s, b in zip(times[name], times["build"], strict=True)
            )
            for name in cases
            if name != "build"
        ]
        print(
            f"{'':<12} signing alone (median of per-round differences): "
            + ", ".join(
                f"{name} {ratio:.0f} us"
                for name, ratio in zip(signers, ratios, strict=True)
            )
        )


if __name__ == "__main__":
    main()
