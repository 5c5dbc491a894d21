"""Soak test: many messages through a seeded fault-injecting SMTP server,
then reconciliation of every result with what the server stored.

Not part of the test suite (it runs for a while); ``nox -s soak`` runs it::

    nox -s soak                               # 20,000 messages, seed 1
    nox -s soak -- --messages 5000 --seed 7   # any size, any seed
    python benchmarks/soak.py --help

The server (asyncio, in a thread of this process) answers like a small MTA
and, drawing from its own seeded random stream, injects faults: 421 or a
hang-up at the greeting, 4xx or a hang-up at MAIL, 450/452/550 or a hang-up
at RCPT, 451 or 554 to DATA, a hang-up mid-body, 451 or 554 after the final
dot, a hang-up after the final dot *having stored the message* (the client
cannot know: "unknown"), a reply slower than the client's timeout, and now
and then a server "restart" that drops every open session at once.

asyncmail sends over a pool, with retries, the breaker and a deadline.
Afterwards, per message and recipient (keyed by Message-ID):

* a **mismatch** is a result that contradicts the server: accepted but not
  stored, stored but reported temporary or permanent, or a message with no
  result at all;
* a **duplicate** is a (message, recipient) the server stored more than
  once: a resend after the end of data, which asyncmail must never do.

The run prints its figures and exits non-zero unless both counts are 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from asyncmail import EmailMessage, MessageResult, Outcome
from asyncmail.backends.smtp import EmailBackend

MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)>", re.MULTILINE)
ADDRESS = re.compile(r"<([^>]*)>")


@dataclass
class Rates:
    """Probability of each fault, per occasion."""

    greet_421: float = 0.01
    greet_close: float = 0.005
    mail_451: float = 0.01
    mail_close: float = 0.003
    rcpt_550: float = 0.02
    rcpt_450: float = 0.02
    rcpt_452: float = 0.005
    rcpt_close: float = 0.003
    data_451: float = 0.005
    data_554: float = 0.002
    body_close: float = 0.004
    dot_451: float = 0.01
    dot_554: float = 0.003
    dot_close_stored: float = 0.004
    slow_reply: float = 0.0005
    restart: float = 0.0003  # per command: drop every open session


@dataclass
class Store:
    """What the server did, shared with the reconciliation."""

    stored: Counter[tuple[str, str]] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    sessions: int = 0


class FaultServer:
    def __init__(self, seed: int, rates: Rates, slow: float) -> None:
        self.random = random.Random(seed)
        self.rates = rates
        self.slow = slow
        self.store = Store()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, "127.0.0.1", 0, limit=1 << 20),
            self._loop,
        )
        self._server = future.result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _fault(self, name: str) -> bool:
        if self.random.random() < getattr(self.rates, name):
            self.store.faults[name] += 1
            return True
        return False

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.store.sessions += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _say(self, writer: asyncio.StreamWriter, line: str) -> None:
        if self._fault("slow_reply"):
            await asyncio.sleep(self.slow)
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._fault("greet_421"):
            await self._say(writer, "421 4.3.2 Not now")
            return
        if self._fault("greet_close"):
            return
        await self._say(writer, "220 soak.example ESMTP")
        sender: str | None = None
        recipients: list[str] = []
        while line := await reader.readline():
            if self._fault("restart"):
                for other in list(self._writers):
                    other.transport.abort()
                return
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                await self._say(writer, "250-soak.example")
                await self._say(writer, "250-PIPELINING")
                await self._say(writer, "250-8BITMIME")
                await self._say(writer, "250 SIZE 10485760")
            elif verb == "MAIL":
                if self._fault("mail_close"):
                    return
                if self._fault("mail_451"):
                    await self._say(writer, "451 4.3.0 Try again")
                    continue
                sender, recipients = ADDRESS.findall(command)[0], []
                await self._say(writer, "250 2.1.0 OK")
            elif verb == "RCPT":
                if self._fault("rcpt_close"):
                    return
                if sender is None:
                    await self._say(writer, "503 5.5.1 MAIL first")
                elif self._fault("rcpt_550"):
                    await self._say(writer, "550 5.1.1 No such user")
                elif self._fault("rcpt_450"):
                    await self._say(writer, "450 4.2.1 Mailbox busy")
                elif self._fault("rcpt_452"):
                    await self._say(writer, "452 4.5.3 Too many recipients")
                else:
                    recipients.append(ADDRESS.findall(command)[0])
                    await self._say(writer, "250 2.1.5 OK")
            elif verb == "DATA":
                if not recipients:
                    await self._say(writer, "554 5.5.1 No valid recipients")
                elif self._fault("data_451"):
                    await self._say(writer, "451 4.3.0 Not now")
                elif self._fault("data_554"):
                    await self._say(writer, "554 5.3.0 No")
                else:
                    await self._say(writer, "354 Go ahead")
                    if not await self._receive(reader, writer, recipients):
                        return
                sender, recipients = None, []
            elif verb == "RSET":
                sender, recipients = None, []
                await self._say(writer, "250 2.0.0 Reset")
            elif verb == "NOOP":
                await self._say(writer, "250 2.0.0 OK")
            elif verb == "QUIT":
                await self._say(writer, "221 2.0.0 Bye")
                return
            else:
                await self._say(writer, "500 5.5.2 What?")

    async def _receive(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        recipients: list[str],
    ) -> bool:
        cut = self._fault("body_close")
        body = bytearray()
        while (line := await reader.readline()) != b".\r\n":
            if not line or (cut and len(body) > 200):
                return False  # hung up mid-body: nothing stored
            body += line
        found = MESSAGE_ID.search(bytes(body))
        key = found.group(1).decode() if found else "?"
        if self._fault("dot_451"):
            await self._say(writer, "451 4.3.0 Queue full")
            return True
        if self._fault("dot_554"):
            await self._say(writer, "554 5.6.0 Rejected")
            return True
        for address in recipients:
            self.store.stored[key, address] += 1
        if self._fault("dot_close_stored"):
            return False  # stored, but the client never hears of it
        await self._say(writer, "250 2.0.0 Queued")
        return True


def messages(count: int, seed: int) -> Iterator[EmailMessage]:
    chance = random.Random(seed + 1)
    for number in range(count):
        to = [f"r{number}-{k}@example.com" for k in range(chance.randint(1, 3))]
        yield EmailMessage(
            f"Soak {number}",
            f"Message {number}.\n" * chance.randint(1, 40),
            f"s{number}@example.com",
            to,
            headers={"Message-ID": f"<soak.{seed}.{number}@soak.example>"},
        )


def reconcile(
    results: list[MessageResult], count: int, store: Store
) -> tuple[int, int, Counter[str]]:
    mismatches = 0
    outcomes: Counter[str] = Counter()
    seen = set()
    for result in results:
        message = result.message
        assert message is not None
        key = message.extra_headers["Message-ID"].strip("<>")
        if key in seen:
            mismatches += 1  # one result per message
        seen.add(key)
        for address, recipient in result.recipients.items():
            outcomes[recipient.outcome.value] += 1
            stored = store.stored[key, address]
            refused = recipient.outcome in (Outcome.TEMPORARY, Outcome.PERMANENT)
            if (recipient.outcome is Outcome.ACCEPTED and stored == 0) or (
                refused and stored > 0
            ):
                mismatches += 1
    mismatches += count - len(seen)  # messages without a result
    duplicates = sum(1 for times in store.stored.values() if times > 1)
    return mismatches, duplicates, outcomes


async def send(port: int, args: argparse.Namespace) -> list[MessageResult]:
    backend = EmailBackend(
        host="127.0.0.1",
        port=port,
        local_hostname="client.example",
        max_connections=args.connections,
        retries=3,
        retry_backoff=0.01,
        retry_backoff_max=0.2,
        timeout=args.timeout,
        deadline=10 * args.timeout,
        breaker_cooldown=0.2,
    )
    results: list[MessageResult] = []
    await backend.send_messages(
        messages(args.messages, args.seed), fail_silently=True, on_result=results.append
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    random.seed(args.seed)  # the client's backoff jitter too

    server = FaultServer(args.seed, Rates(), slow=args.timeout * 1.5)
    server.start()
    started = time.monotonic()
    try:
        results = asyncio.run(send(server.port, args))
    finally:
        elapsed = time.monotonic() - started
        server.stop()
    mismatches, duplicates, outcomes = reconcile(results, args.messages, server.store)
    store = server.store
    print(f"messages        {args.messages} (seed {args.seed})")
    print(f"results         {len(results)}")
    print(
        f"recipients      {sum(outcomes.values())}: "
        + ", ".join(
            f"{name} {outcomes[name]}"
            for name in ("accepted", "temporary", "permanent", "unknown")
        )
    )
    print(f"server stored   {sum(store.stored.values())} (message, recipient) pairs")
    print(f"sessions        {store.sessions}")
    print(
        f"faults injected {sum(store.faults.values())}: "
        + ", ".join(f"{name} {n}" for name, n in sorted(store.faults.items()))
    )
    print(f"time            {elapsed:.1f} s ({args.messages / elapsed:.0f} msg/s)")
    print(f"mismatches      {mismatches}")
    print(f"duplicates      {duplicates}")
    return 0 if mismatches == 0 and duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
