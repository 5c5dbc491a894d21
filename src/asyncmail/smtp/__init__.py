"""The SMTP engine: a protocol testable by feeding bytes, and its asyncio driver.

    parser.py       replies from bytes (no asyncio)
    transaction.py  one MAIL..end-of-data exchange as a state machine
    wire.py         dot-stuffing, payload sizing, command argument checks
    errors.py       foreign errors (aiosmtplib, ssl, OS) mapped at the boundary
    connection.py   the asyncio protocol driving the parser and transactions
    session.py      greeting, EHLO, STARTTLS, AUTH with aiosmtplib, then the
                    hand-off of its transport to connection.py

The backend (:mod:`asyncmail.backends.smtp`) is policy on top of this:
options, the pool, retries, the breaker and results.
"""
