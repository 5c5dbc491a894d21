"""``asyncmail worker`` and ``asyncmail outbox``: the queue's command line.

::

    asyncmail worker --url sqlite:///outbox.db --concurrency 10 --rate-limit 14
    asyncmail outbox status
    asyncmail outbox list --state dead
    asyncmail outbox show 42
    asyncmail outbox retry 42 43          # or: --state dead
    asyncmail outbox purge --state sent --older-than 604800

The outbox URL comes from ``--url``, else ``ASYNCMAIL_QUEUE_URL``, else the
queue backend's default. The worker delivers through the SMTP backend set up
by the EMAIL_* settings (``--host``/``--port`` override them) or through
``--backend``; SIGTERM or SIGINT stops it gracefully (a second one at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

from .model import FINAL_STATES, RetryPolicy, State

__all__ = ["add_commands"]


def _url(args: argparse.Namespace) -> str:
    from ..backends.queue import DEFAULT_URL

    return str(args.url or os.environ.get("ASYNCMAIL_QUEUE_URL") or DEFAULT_URL)


def _state(value: str) -> State:
    try:
        return State(value)
    except ValueError:
        names = ", ".join(state.value for state in State)
        raise argparse.ArgumentTypeError(
            f"unknown state {value!r} (one of {names})"
        ) from None


def add_commands(commands: Any) -> None:
    """Add ``worker`` and ``outbox`` to the ``asyncmail`` sub-commands."""
    worker = commands.add_parser(
        "worker",
        help="deliver the outbox's messages",
        description="Claim due messages from the outbox and deliver them; "
        "SIGTERM or SIGINT stops it gracefully (a second one at once).",
    )
    worker.add_argument(
        "--url", help="the outbox (default: ASYNCMAIL_QUEUE_URL, else the default)"
    )
    worker.add_argument(
        "--backend", help="a backend's dotted path (default: the pooled SMTP backend)"
    )
    worker.add_argument("--host", help="the SMTP host (default: EMAIL_HOST)")
    worker.add_argument("--port", type=int, help="the SMTP port (default: EMAIL_PORT)")
    worker.add_argument(
        "--timeout",
        type=float,
        help="the SMTP timeout in seconds (default: EMAIL_TIMEOUT)",
    )
    worker.add_argument(
        "--concurrency", type=int, default=10,
        help="SMTP connections at once, each carrying the backend's "
        "pipeline_depth messages at once (default: %(default)s)",
    )  # fmt: skip
    worker.add_argument(
        "--batch", type=int,
        help="messages claimed at once (default: twice the messages in "
        "flight at once)",
    )  # fmt: skip
    worker.add_argument(
        "--lease", type=float, default=60.0,
        help="seconds a claim lasts without a heartbeat before another worker "
        "may take it (default: %(default)s)",
    )  # fmt: skip
    worker.add_argument(
        "--poll-interval", type=float, default=1.0,
        help="seconds between looks for due messages when not woken "
        "(default: %(default)s)",
    )  # fmt: skip
    worker.add_argument(
        "--rate-limit", type=float,
        help="at most this many messages a second, shared by every worker on "
        "the store with the same --rate-name (default: no limit)",
    )  # fmt: skip
    worker.add_argument(
        "--burst", type=int, default=1,
        help="messages the shared rate limit lets go at once (default: %(default)s)",
    )  # fmt: skip
    worker.add_argument(
        "--rate-name", default="default",
        help="the shared rate limit's name (default: %(default)s)",
    )  # fmt: skip
    worker.add_argument(
        "--name",
        help="a stable worker name: a restarted worker takes back its claims "
        "at once (default: host and process id)",
    )
    worker.add_argument(
        "--max-attempts", type=int, default=10,
        help="attempts before a message is dead-lettered (default: %(default)s)",
    )  # fmt: skip
    worker.add_argument(
        "--backoff", type=float, default=60.0,
        help="seconds before the first retry, doubling after (default: %(default)s)",
    )  # fmt: skip
    worker.add_argument(
        "--backoff-max", type=float, default=3600.0,
        help="the longest wait between retries, seconds (default: %(default)s)",
    )  # fmt: skip
    worker.add_argument(
        "--until-idle", action="store_true",
        help="stop when nothing is due (default: run until stopped)",
    )  # fmt: skip
    worker.set_defaults(run=_worker)

    outbox = commands.add_parser("outbox", help="inspect and manage the outbox")
    outbox.add_argument(
        "--url", help="the outbox (default: ASYNCMAIL_QUEUE_URL, else the default)"
    )
    actions = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("status", help="messages per state")
    listing = actions.add_parser("list", help="list messages")
    listing.add_argument(
        "--state", type=_state, action="append", default=[],
        help="only messages in this state (repeatable; default: all)",
    )  # fmt: skip
    listing.add_argument(
        "--limit", type=int, default=100,
        help="at most this many messages (default: %(default)s)",
    )  # fmt: skip
    listing.add_argument(
        "--json", action="store_true",
        help="one JSON object per line (default: a table)",
    )  # fmt: skip
    show = actions.add_parser("show", help="a message and its results")
    show.add_argument("id", type=int, help="the message's id")
    retry = actions.add_parser("retry", help="queue final messages again")
    retry.add_argument("ids", type=int, nargs="*", help="the messages' ids")
    retry.add_argument(
        "--state", type=_state, action="append", default=[],
        help="every message in this final state (repeatable; default: none)",
    )  # fmt: skip
    purge = actions.add_parser("purge", help="delete final messages")
    purge.add_argument(
        "--state", type=_state, action="append", default=[],
        help="messages in this final state (repeatable; required)",
    )  # fmt: skip
    purge.add_argument(
        "--older-than", type=float, default=0.0,
        help="only those settled more than this many seconds ago "
        "(default: %(default)s)",
    )  # fmt: skip
    outbox.set_defaults(run=_outbox)


def _run(main: Any, args: argparse.Namespace) -> int:
    from ..cli import _run as run_async
    from ..exceptions import MailError

    try:
        return run_async(main, args)
    except MailError as exc:
        print(f"asyncmail: {exc}", file=sys.stderr)
        return 2


def _worker(args: argparse.Namespace) -> int:
    return _run(_aworker, args)


async def _aworker(args: argparse.Namespace) -> int:
    from . import open_store
    from .worker import Worker

    options: dict[str, Any] = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "timeout": args.timeout,
        }.items()
        if value is not None
    }
    if args.backend is None:
        options["max_connections"] = args.concurrency
    store = open_store(_url(args))
    worker = Worker(
        store,
        backend=args.backend,
        backend_options=options,
        concurrency=args.concurrency,
        batch=args.batch,
        lease=args.lease,
        poll_interval=args.poll_interval,
        policy=RetryPolicy(
            max_attempts=args.max_attempts,
            backoff=args.backoff,
            backoff_max=args.backoff_max,
        ),
        rate_limit=args.rate_limit,
        burst=args.burst,
        rate_name=args.rate_name,
        name=args.name,
    )
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            worker.stop()
        elif task is not None:
            task.cancel()

    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, on_signal)
    print(f"asyncmail worker {worker.name} delivering from {store.safe_url}")
    sys.stdout.flush()
    try:
        await worker.run(until_idle=args.until_idle)
    except asyncio.CancelledError:
        print("asyncmail worker: stopped at once", file=sys.stderr)
        return 1
    finally:
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)
    print(f"asyncmail worker {worker.name}: delivered {worker.delivered}, stopped")
    return 0


def _outbox(args: argparse.Namespace) -> int:
    return _run(_aoutbox, args)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


async def _aoutbox(args: argparse.Namespace) -> int:
    from . import open_store

    store = open_store(_url(args))
    action = args.action
    if action == "status":
        for state, count in (await store.counts()).items():
            print(f"{state.value:9} {count}")
        return 0
    if action == "list":
        for message in await store.messages(args.state, limit=args.limit):
            if args.json:
                print(
                    json.dumps(
                        {
                            "id": message.id,
                            "key": message.key,
                            "state": message.state.value,
                            "priority": message.priority,
                            "due_at": message.due_at,
                            "attempts": message.attempts,
                            "recipients": message.recipients,
                            "outcomes": message.outcomes,
                            "subject": message.subject,
                            "last_error": message.last_error,
                        }
                    )
                )
                continue
            print(
                f"{message.id:>6} {message.state.value:9} attempts={message.attempts}"
                f" priority={message.priority} due={_when(message.due_at)}"
                f" to={','.join(message.recipients)} subject={message.subject!r}"
                + (f" error={message.last_error!r}" if message.last_error else "")
            )
        return 0
    if action == "show":
        found = await store.get(args.id)
        if found is None:
            print(f"asyncmail: no message {args.id} in the outbox", file=sys.stderr)
            return 1
        print(f"id: {found.id}\nkey: {found.key}\nstate: {found.state.value}")
        print(f"message-id: {found.message_id}\nsubject: {found.subject}")
        print(f"from: {found.sender}\nto: {', '.join(found.recipients)}")
        print(f"attempts: {found.attempts}\ndue: {_when(found.due_at)}")
        if found.last_error:
            print(f"last error: {found.last_error}")
        for result in await store.results(found.id):
            detail = " ".join(
                str(part)
                for part in (result.code, result.text)
                if part not in (None, "")
            )
            print(
                f"  attempt {result.attempt} {_when(result.at)} {result.recipient}: "
                f"{result.outcome}" + (f" ({detail})" if detail else "")
            )
        return 0
    if action == "retry":
        if not args.ids and not args.state:
            print("asyncmail: give message ids or --state", file=sys.stderr)
            return 2
        count = await store.retry(ids=args.ids, states=args.state)
        print(f"queued again: {count}")
        return 0
    # purge: only what is named (dead letters and unknowns need a decision)
    if not args.state:
        names = ", ".join(sorted(state.value for state in FINAL_STATES))
        print(f"asyncmail: give --state (one of {names})", file=sys.stderr)
        return 2
    count = await store.purge(args.state, older_than=args.older_than)
    print(f"purged: {count}")
    return 0
