"""Helpers shared by the contender scripts in benchmarks/contenders/.

A contender is a script that does one measured thing and prints exactly one
JSON line on stdout.  Keys every contender prints:

    name         str    what was measured
    seconds      float  wall time of the measured part only (no start-up)
    cpu_seconds  float  CPU time of the client process (all threads and
                        children) over the same part

Sending contenders add ``sent`` (messages handed to the library) and
``accepted`` (messages the server answered 250 to, as far as the client
knows); the harness checks ``accepted`` against the sink's own count.
Build and call contenders add ``ops``; memory contenders add
``baseline_kb``, ``peak_kb`` and ``growth_kb``.  Any other key is carried
into the JSON report untouched.

The harness runs contenders with PYTHONPATH pointing at benchmarks/, so they
can import this module and ``_shapes``.  Only the standard library is used
here: contenders run under several interpreters with different packages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every contender accepts (unused ones are simply ignored)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=25)
    p.add_argument("--count", type=int, default=2000, help="messages (or ops)")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    return p


class Stopwatch:
    """Wall and CPU time of a block; CPU includes threads and waited children."""

    seconds: float
    cpu_seconds: float

    @staticmethod
    def _cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def __enter__(self) -> Stopwatch:
        self._cpu0 = self._cpu()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = self._cpu() - self._cpu0


def emit(name: str, watch: Stopwatch, **fields: Any) -> None:
    """Print the contender's one JSON result line."""
    result = {
        "name": name,
        "seconds": round(watch.seconds, 6),
        "cpu_seconds": round(watch.cpu_seconds, 6),
        "python": sys.version.split()[0],
        **fields,
    }
    print(json.dumps(result), flush=True)


def run(coro: Coroutine[Any, Any, T], loop: str) -> T:
    """Run a coroutine on the asyncio or the uvloop event loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


BUILDS = ("fresh", "objects", "bytes")
INPUTS = ("list", "generator")


def honest_flags(p: argparse.ArgumentParser, *, builds: tuple[str, ...]) -> None:
    """The honest harness's two choices, the same for every contender.

    --build: ``fresh`` constructs and serialises every message inside the
    timer; ``objects`` constructs each library's own message objects before
    the timer and lets the send serialise them inside it; ``bytes``
    serialises before the timer and sends bytes (libraries that accept
    them).  --input: the messages handed over as a list, or as a generator
    that builds (fresh) or releases (prebuilt) one message at a time.
    ``--prebuilt`` is the older spelling of ``--build bytes``.
    """
    p.add_argument("--build", choices=builds, default="fresh")
    p.add_argument("--input", choices=INPUTS, default="list")
    p.add_argument("--prebuilt", action="store_const", const="bytes", dest="build")


def drain(ready: list[T]) -> Iterator[T]:
    """Yield prebuilt items and let go of each one (a generator over a queue
    of ready messages, not over a list that keeps them all alive)."""
    ready.reverse()
    while ready:
        yield ready.pop()


def subject(i: int) -> str:
    """The throughput scenarios' subject for message number i."""
    from _shapes import LOOPBACK_SUBJECT

    return f"{LOOPBACK_SUBJECT} #{i}"


def split(count: int, parts: int) -> list[int]:
    """Split count into parts as evenly as possible (for N connections)."""
    base, extra = divmod(count, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# --- memory (scenario 4) -------------------------------------------------


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def rss_kb() -> int:
    """Current resident set size (VmRSS) in KiB."""
    return _status_kb("VmRSS")


def peak_kb() -> int:
    """Peak resident set size since start or the last reset (VmHWM), in KiB."""
    return _status_kb("VmHWM")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs).

    Returns False where that is not allowed; the peak then also covers
    whatever happened before the baseline, which the caller must report.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
