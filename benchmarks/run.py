"""asyncmail's benchmark suite: one entry point for all scenarios.

    python benchmarks/run.py [--scenario loopback|relay|build|memory|blocking|all]
        [--rounds 3] [--count 2000] [--json out.json] [--py312 PATH]

Scenarios (see shared/design/BENCHMARKS.md):

* loopback: ~2 KB messages to Postfix's smtp-sink on 127.0.0.1 (client CPU
  bound), 1, 10 and 50 connections.
* relay: the same to relay_sink.c, which delays MAIL, RCPT and end-of-DATA
  replies by 10 ms each (latency bound; ~33 msg/s per connection at most).
  A contender with N connections sends min(--count, --relay-per-conn * N)
  messages so that one-connection runs stay short.
* build: build and serialise one message, per shape (plain, html,
  attachment, unicode) from _shapes.py.
* memory: peak RSS growth while sending one message with a 50 MB attachment.
* blocking: blocking send_mail() to Django's locmem and dummy backends.

Every contender is a subprocess that prints one JSON line (see
_contender.py); sinks are started fresh for every run and their message
count must equal what the client reports, or the row is flagged.  The
client is pinned to one CPU and the sink to the other.

This file is run by the interpreter that has Django 5.2 and aiosmtplib
(the ``bench`` extra); --py312 names a Python 3.12+ with Django 6.x, and
--fastapi-mail-python one with fastapi-mail, if not this one.  Contenders
whose interpreter lacks their packages are skipped with a note.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _harness import (
    BUILD_RATE,
    PER_CALL,
    RSS_GROWTH,
    THROUGHPUT,
    Contender,
    Measured,
    run_all,
    table,
    write_json,
)
from _shapes import SHAPES
from _sinks import Placement, RelaySink, Sink, SmtpSink, ensure_postfix, relay_binary

HERE = Path(__file__).resolve().parent
CONTENDERS = HERE / "contenders"
SCENARIOS = ("honest", "loopback", "relay", "build", "memory", "blocking")


# ---------------------------------------------------------------------------
# asyncmail contenders: REGISTER THEM HERE.
#
# Each entry is a function (args, python) -> list[Contender], like the
# reference builders below, called once; rows of tables outside the chosen
# --scenario are dropped.  python is the interpreter run.py was given.  The scripts are
# subprocesses printing one JSON line (see _contender.py) and take
#   --host --port --count --connections N --loop {asyncio,uvloop}
# Give them the same table names as the references ("loopback", "relay",
# "build: <shape>", "memory", "blocking") so they land in the same tables.
def asyncmail_contenders(args: argparse.Namespace, python: str) -> list[Contender]:
    """asyncmail's rows for every scenario, beside the references."""
    loops = ("asyncio", "uvloop")
    out: list[Contender] = []
    for scenario in ("loopback", "relay"):
        for n in (1, 10, 50):
            count = (
                args.count
                if scenario == "loopback"
                else min(args.count, args.relay_per_conn * n)
            )
            for loop in loops:
                argv = (python, script("asyncmail_send.py"), "--connections", str(n))
                out.append(
                    Contender(
                        f"asyncmail, {n} conn, {loop}",
                        (*argv, "--loop", loop),
                        scenario,
                        THROUGHPUT,
                        count,
                        scenario,
                    )
                )
                if scenario == "loopback" and n == 10:
                    out.append(
                        Contender(
                            f"asyncmail, {n} conn, {loop}, prebuilt bytes",
                            (*argv, "--loop", loop, "--prebuilt"),
                            scenario,
                            THROUGHPUT,
                            count,
                            scenario,
                        )
                    )
    for shape in SHAPES:
        n = (
            args.build_count
            if shape != "attachment"
            else max(args.build_count // 10, 50)
        )
        out.append(
            Contender(
                "asyncmail",
                (python, script("asyncmail_build.py"), "--shape", shape),
                f"build: {shape}",
                BUILD_RATE,
                n,
            )
        )
    size = ("--size", str(args.attachment_mb * 1024 * 1024))
    for source in ("bytes", "file"):
        out.append(
            Contender(
                f"asyncmail, from {source}",
                (python, script("asyncmail_memory.py"), "--source", source, *size),
                "memory",
                RSS_GROWTH,
                1,
                "loopback",
            )
        )
    for backend in ("locmem", "dummy"):
        for mode in ("blocking", "async"):
            label = "send_mail" if mode == "blocking" else "asend_mail (awaited)"
            out.append(
                Contender(
                    f"asyncmail {label}, {backend}",
                    (
                        python,
                        script("asyncmail_blocking.py"),
                        "--backend",
                        backend,
                        "--mode",
                        mode,
                    ),
                    "blocking",
                    PER_CALL,
                    args.blocking_count,
                )
            )
    return out


def django_integration_contenders(
    args: argparse.Namespace, python: str
) -> list[Contender]:
    """A Django project on asyncmail.django.EmailBackend, beside Django's own
    SMTP backend (the "django X.Y, 1 conn" references), under every
    interpreter that has Django and asyncmail: run.py's own (Django 5.2) and
    --py312 (Django 6.x)."""
    out: list[Contender] = []
    for interpreter in dict.fromkeys((python, args.py312)):
        if not interpreter:
            continue
        label = probe(interpreter, "import asyncmail.django; " + DJANGO_VERSION)
        if label is None:
            continue  # no Django, or no asyncmail, under it
        send = (interpreter, script("django_asyncmail_send.py"))
        for serializer, conns in (("asyncmail", (1, 10)), ("django", (10,))):
            for n in conns:
                out.append(
                    Contender(
                        f"django {label} on asyncmail.django, {serializer} "
                        f"serializer, {n} conn",
                        (*send, "--connections", str(n), "--serializer", serializer),
                        "loopback",
                        THROUGHPUT,
                        args.count,
                        "loopback",
                    )
                )
        for mode in ("blocking", "async"):
            call = "send_mail" if mode == "blocking" else "asend_mail (awaited)"
            out.append(
                Contender(
                    f"django {label} project: asyncmail {call}, dummy",
                    (
                        interpreter,
                        script("django_asyncmail_blocking.py"),
                        "--backend",
                        "dummy",
                        "--mode",
                        mode,
                    ),
                    "blocking",
                    PER_CALL,
                    args.blocking_count,
                )
            )
    return out


ASYNCMAIL_CONTENDERS: list[Callable[[argparse.Namespace, str], list[Contender]]] = [
    asyncmail_contenders,
    django_integration_contenders,
]
# ---------------------------------------------------------------------------


def script(name: str) -> str:
    return str(CONTENDERS / name)


def probe(python: str, code: str) -> str | None:
    """Run code under an interpreter; its stdout, or None if it failed."""
    try:
        proc = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


# Django "major.minor/pyX.Y": the interpreter matters as much as Django here.
DJANGO_VERSION = (
    "import sys, django; "
    "print('%d.%d/py%d.%d' % (*django.VERSION[:2], *sys.version_info[:2]))"
)


class Interpreters:
    """Which interpreter runs which reference, and what is missing."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.main: str = args.python
        self.skipped: list[str] = []
        # (interpreter, "X.Y/pyA.B") for every Django that gets rows; the
        # first one (run.py's own) is the reference.
        self.djangos: list[tuple[str, str]] = []
        for python in (self.main, args.py312, *args.also_django):
            if not python:
                continue
            label = probe(python, DJANGO_VERSION)
            if label is None:
                self.skipped.append(f"Django rows: no django under {python}")
            elif python == args.py312 and not label.startswith("6"):
                self.skipped.append(f"--py312 {python} has Django {label}, not 6.x")
            else:
                self.djangos.append((python, label))
        main_django = [label for python, label in self.djangos if python == self.main]
        self.reference_django = main_django[0] if main_django else None
        self.aiosmtplib = probe(self.main, "import aiosmtplib") is not None
        if not self.aiosmtplib:
            self.skipped.append(f"aiosmtplib rows: not under {self.main}")
        self.uvloop = probe(self.main, "import uvloop") is not None
        if not self.uvloop:
            self.skipped.append(f"uvloop variants: no uvloop under {self.main}")
        self.fastapi_mail = args.fastapi_mail_python or self.main
        if probe(self.fastapi_mail, "import fastapi_mail") is None:
            self.skipped.append(f"fastapi-mail: not under {self.fastapi_mail}")
            self.fastapi_mail = ""

    def versions(self) -> dict[str, object]:
        """Versions of everything measured, for the JSON report."""
        pyver = "import sys; print(sys.version.split()[0])"
        return {
            "python": probe(self.main, pyver),
            "djangos": {label: python for python, label in self.djangos},
            "aiosmtplib": probe(
                self.main, "import aiosmtplib as a; print(a.__version__)"
            ),
            "uvloop": probe(self.main, "import uvloop as u; print(u.__version__)"),
            "fastapi-mail": probe(
                self.fastapi_mail,
                "from importlib.metadata import version as v; print(v('fastapi-mail'))",
            )
            if self.fastapi_mail
            else None,
        }


def send_contenders(
    args: argparse.Namespace, py: Interpreters, scenario: str
) -> list[Contender]:
    """References for the loopback and relay scenarios."""
    metric, sink = THROUGHPUT, scenario
    conns = (1, 10, 50)

    def count(n: int) -> int:
        total: int = args.count
        return total if scenario == "loopback" else min(total, args.relay_per_conn * n)

    out = [
        Contender(
            f"smtp-source (C), {n} sess",
            (sys.executable, script("smtp_source.py"), "--connections", str(n)),
            scenario,
            metric,
            count(n),
            sink,
        )
        for n in conns
    ]
    for python, version in py.djangos:
        for n in conns:
            if n == 50 and scenario == "loopback" and version != py.reference_django:
                continue  # 1 and 10 say enough about other Djangos; saves time
            label = "1 conn" if n == 1 else f"{n} threads"
            out.append(
                Contender(
                    f"django {version}, {label}",
                    (python, script("django_send.py"), "--connections", str(n)),
                    scenario,
                    metric,
                    count(n),
                    sink,
                )
            )
    if py.aiosmtplib:
        loops = ("asyncio", "uvloop") if py.uvloop else ("asyncio",)
        for loop in loops:
            for n in conns:
                argv = (py.main, script("aiosmtplib_send.py"), "--connections", str(n))
                out.append(
                    Contender(
                        f"aiosmtplib, {n} conn, {loop}",
                        (*argv, "--loop", loop),
                        scenario,
                        metric,
                        count(n),
                        sink,
                    )
                )
                if n == 1 and scenario == "loopback":
                    out.append(
                        Contender(
                            f"aiosmtplib, 1 conn, {loop}, prebuilt bytes",
                            (*argv, "--loop", loop, "--prebuilt"),
                            scenario,
                            metric,
                            count(n),
                            sink,
                        )
                    )
    if py.fastapi_mail:
        out.append(
            Contender(
                "fastapi-mail, 1 conn",
                (py.fastapi_mail, script("fastapi_mail_send.py")),
                scenario,
                metric,
                count(1),
                sink,
            )
        )
    return out


def honest_contenders(args: argparse.Namespace, py: Interpreters) -> list[Contender]:
    """The honest harness (issue #13): 10 connections on loopback, every
    contender doing the same work inside the timer.

    Rows differ by --build: ``fresh`` (each library constructs and
    serialises its messages inside the timer), ``objects`` (its message
    objects exist before the timer; the send serialises them) and ``bytes``
    (serialised before the timer; only the libraries that take bytes).
    asyncmail gets a list and a generator row for each.  Every message has
    its own recipient and every contender connects inside the timer.
    """
    out: list[Contender] = []

    def row(name: str, argv: tuple[str, ...]) -> None:
        out.append(Contender(name, argv, "honest", THROUGHPUT, args.count, "loopback"))

    for python, version in py.djangos[:1]:
        for build in ("fresh", "objects"):
            row(
                f"django {version}, 1 conn, {build}",
                (python, script("django_send.py"), "--build", build),
            )
    loops = ("asyncio", "uvloop") if py.uvloop else ("asyncio",)
    ten = ("--connections", "10")
    for loop in loops:
        for build in ("fresh", "objects", "bytes"):
            if py.aiosmtplib:
                row(
                    f"aiosmtplib, 10 conn, {loop}, {build}",
                    (
                        *(py.main, script("aiosmtplib_send.py"), *ten),
                        *("--build", build, "--loop", loop),
                    ),
                )
            for given in ("list", "generator"):
                if loop == "uvloop" and given == "generator":
                    continue  # the list/generator difference is shown on asyncio
                row(
                    f"asyncmail, 10 conn, {loop}, {build}, {given}",
                    (
                        *(py.main, script("asyncmail_send.py"), *ten),
                        *("--build", build, "--input", given, "--loop", loop),
                    ),
                )
        row(
            f"pipelined floor, 10 conn, {loop}, bytes",
            (py.main, script("pipelined_floor.py"), *ten, "--loop", loop),
        )
    row(
        "smtp-source (C), 10 sess, bytes",
        (sys.executable, script("smtp_source.py"), *ten),
    )
    return out


def build_contenders(args: argparse.Namespace, py: Interpreters) -> list[Contender]:
    """Scenario 3: each Django and the stdlib, one table per shape."""
    out = []
    for shape in SHAPES:
        n = args.build_count
        if shape == "attachment":
            n = max(n // 10, 50)
        builders = [
            (f"django {version}", python, "build_django.py")
            for python, version in py.djangos
        ]
        builders.append(("stdlib email (modern policy)", py.main, "build_stdlib.py"))
        out += [
            Contender(
                label,
                (python, script(name), "--shape", shape),
                f"build: {shape}",
                BUILD_RATE,
                n,
            )
            for label, python, name in builders
        ]
    return out


def memory_contenders(args: argparse.Namespace, py: Interpreters) -> list[Contender]:
    """Scenario 4: one message with a 50 MB attachment, to smtp-sink."""
    size = ("--size", str(args.attachment_mb * 1024 * 1024))
    out = [
        (f"django {version}", (python, script("memory_django.py")))
        for python, version in py.djangos
    ]
    if py.aiosmtplib:
        out.append(("stdlib + aiosmtplib", (py.main, script("memory_stdlib.py"))))
    return [
        Contender(label, (*argv, *size), "memory", RSS_GROWTH, 1, "loopback")
        for label, argv in out
    ]


def blocking_contenders(args: argparse.Namespace, py: Interpreters) -> list[Contender]:
    """Scenario 5: Django's blocking send_mail() with no network involved."""
    return [
        Contender(
            f"django {version} send_mail, {backend}",
            (python, script("blocking_django.py"), "--backend", backend),
            "blocking",
            PER_CALL,
            args.blocking_count,
        )
        for python, version in py.djangos
        for backend in ("locmem", "dummy")
    ]


def references(py: Interpreters) -> dict[str, str]:
    """The reference row of each table (override with --ref TABLE=NAME)."""
    dj = f"django {py.reference_django}"
    refs = {
        "honest": f"{dj}, 1 conn, fresh",
        "loopback": f"{dj}, 1 conn",
        "relay": "smtp-source (C), 50 sess",
        "memory": dj,
        "blocking": f"{dj} send_mail, locmem",
    }
    refs.update({f"build: {shape}": dj for shape in SHAPES})
    return refs


def check_targets(
    measured: list[Measured], py: Interpreters, args: argparse.Namespace
) -> None:
    """The goals of issue #4, each a ratio of medians from this run."""

    def median(table_name: str, name: str) -> float | None:
        for m in measured:
            if m.contender.table == table_name and m.contender.name == name:
                return m.median()
        return None

    dj = f"django {py.reference_django}"
    rows: list[tuple[str, float | None, float | None, str]] = []

    def ratio(label: str, a: tuple[str, str], b: tuple[str, str], goal: float) -> None:
        top, bottom = median(*a), median(*b)
        value = top / bottom if top is not None and bottom else None
        rows.append((label, value, goal, ">="))

    def cpu_per_message(name: str) -> float | None:
        for m in measured:
            if m.contender.table == "honest" and m.contender.name == name:
                cpu = [
                    r.result["cpu_seconds"] / r.result["accepted"]
                    for r in m.rounds
                    if r.result and r.result.get("accepted") and not r.problems
                ]
                return statistics.median(cpu) if cpu else None
        return None

    # Issue #13, on the honest harness (same work inside every timer).
    for loop, bytes_goal in (("asyncio", 0.5), ("uvloop", 0.8)):
        for build in ("fresh", "objects"):
            mine = ("honest", f"asyncmail, 10 conn, {loop}, {build}, list")
            ratio(
                f"honest {loop} {build} 10 conn vs Django 1 conn {build}",
                mine,
                ("honest", f"{dj}, 1 conn, {build}"),
                5,
            )
            ratio(
                f"honest {loop} {build} 10 conn vs aiosmtplib 10 conn",
                mine,
                ("honest", f"aiosmtplib, 10 conn, {loop}, {build}"),
                3,
            )
        ratio(
            f"honest {loop} bytes 10 conn vs smtp-source 10 sess",
            ("honest", f"asyncmail, 10 conn, {loop}, bytes, list"),
            ("honest", "smtp-source (C), 10 sess, bytes"),
            bytes_goal,
        )
        mine_cpu = cpu_per_message(f"asyncmail, 10 conn, {loop}, bytes, list")
        floor_cpu = cpu_per_message(f"pipelined floor, 10 conn, {loop}, bytes")
        rows.append(
            (
                f"honest {loop} bytes: client CPU/msg vs the pipelined floor",
                mine_cpu / floor_cpu if mine_cpu and floor_cpu else None,
                1.3,
                "<=",
            )
        )

    for loop in ("asyncio", "uvloop"):
        mine = ("loopback", f"asyncmail, 10 conn, {loop}")
        ratio(
            f"loopback 10 conn {loop} vs Django 1 conn",
            mine,
            ("loopback", f"{dj}, 1 conn"),
            4,
        )
        ratio(
            f"loopback 10 conn {loop} vs aiosmtplib 10 conn {loop}",
            mine,
            ("loopback", f"aiosmtplib, 10 conn, {loop}"),
            2.5,
        )
        ratio(
            f"loopback 10 conn {loop}, prebuilt vs smtp-source 10 sess",
            ("loopback", f"asyncmail, 10 conn, {loop}, prebuilt bytes"),
            ("loopback", "smtp-source (C), 10 sess"),
            0.5,
        )
        ratio(
            f"relay 50 conn {loop} vs Django 1 conn",
            ("relay", f"asyncmail, 50 conn, {loop}"),
            ("relay", f"{dj}, 1 conn"),
            30,
        )
        ratio(
            f"relay 50 conn {loop} vs smtp-source 50 sess",
            ("relay", f"asyncmail, 50 conn, {loop}"),
            ("relay", "smtp-source (C), 50 sess"),
            0.8,
        )
    for shape in SHAPES:
        ratio(
            f"build {shape} vs {dj}",
            (f"build: {shape}", "asyncmail"),
            (f"build: {shape}", dj),
            1,
        )
    attachment_mib = args.attachment_mb
    for source, limit in (("bytes", 2.5 * attachment_mib), ("file", 64.0)):
        growth = median("memory", f"asyncmail, from {source}")  # in MiB
        rows.append((f"memory growth from {source} (MiB)", growth, limit, "<="))
    for backend in ("locmem", "dummy"):
        blocking = median("blocking", f"asyncmail send_mail, {backend}")
        awaited = median("blocking", f"asyncmail asend_mail (awaited), {backend}")
        overhead = blocking - awaited if blocking and awaited else None
        rows.append((f"blocking-call overhead, {backend} (us)", overhead, 1000, "<="))

    # Issue #7: a Django project on asyncmail.django vs Django's own backend.
    for _, label in py.djangos:
        ratio(
            f"{label}: asyncmail.django 10 conn vs Django 1 conn",
            (
                "loopback",
                f"django {label} on asyncmail.django, asyncmail serializer, 10 conn",
            ),
            ("loopback", f"django {label}, 1 conn"),
            4,
        )
        blocking = median(
            "blocking", f"django {label} project: asyncmail send_mail, dummy"
        )
        awaited = median(
            "blocking", f"django {label} project: asyncmail asend_mail (awaited), dummy"
        )
        overhead = blocking - awaited if blocking and awaited else None
        rows.append(
            (f"{label}: Django project blocking overhead (us)", overhead, 150, "<="),
        )

    print("\n## Targets (issues #4, #7, #13): ratios of medians from this run")
    print(f"| {'target':<58} | {'measured':>9} | {'goal':>8} | ok |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 10}|----|")
    unmeasured = 0
    for label, value, goal, sense in rows:
        if value is None or goal is None:
            unmeasured += 1  # its scenario was not run (or its rows failed)
            continue
        ok = "yes" if (value >= goal if sense == ">=" else value <= goal) else "NO "
        print(f"| {label:<58} | {value:>9.2f} | {sense}{goal:>6g} | {ok} |")
    if unmeasured:
        print(f"({unmeasured} targets not measured: scenario not run, or rows failed)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=2000, help="messages per send run")
    p.add_argument(
        "--relay-per-conn",
        type=int,
        default=100,
        help="relay: messages per connection cap",
    )
    p.add_argument(
        "--build-count", type=int, default=1000, help="builds per run (attachment: /10)"
    )
    p.add_argument("--blocking-count", type=int, default=2000)
    p.add_argument("--attachment-mb", type=int, default=50)
    p.add_argument("--json", metavar="PATH", help="write the full report here")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter with Django 5.2 + aiosmtplib",
    )
    p.add_argument("--py312", metavar="PATH", help="Python 3.12+ with Django 6.x")
    p.add_argument(
        "--also-django",
        action="append",
        default=[],
        metavar="PATH",
        help="another interpreter with Django to add rows for (repeatable)",
    )
    p.add_argument(
        "--fastapi-mail-python", metavar="PATH", help="interpreter with fastapi-mail"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="run contenders whose name contains this (repeatable)",
    )
    p.add_argument(
        "--ref",
        action="append",
        default=[],
        metavar="TABLE=NAME",
        help="override a table's reference",
    )
    return p.parse_args()


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    py = Interpreters(args)
    placement = Placement.detect()

    contenders: list[Contender] = []
    for scenario in scenarios:
        if scenario == "honest":
            contenders += honest_contenders(args, py)
        elif scenario in ("loopback", "relay"):
            contenders += send_contenders(args, py, scenario)
        elif scenario == "build":
            contenders += build_contenders(args, py)
        elif scenario == "memory":
            contenders += memory_contenders(args, py)
        else:
            contenders += blocking_contenders(args, py)
    for register in ASYNCMAIL_CONTENDERS:
        new = register(args, py.main)
        contenders += [c for c in new if c.table.split(":")[0] in scenarios]
    if args.only:
        contenders = [c for c in contenders if any(s in c.name for s in args.only)]

    sinks: dict[str, Callable[[], Sink]] = {}
    if any(c.sink for c in contenders):  # smtp-source runs against both sinks
        ensure_postfix()
        sinks["loopback"] = lambda: SmtpSink(placement.sink_cpu)
    if any(c.sink == "relay" for c in contenders):
        relay_binary()
        sinks["relay"] = lambda: RelaySink(placement.sink_cpu, delay_ms=10.0)

    for note in py.skipped:
        print(f"skipped: {note}", file=sys.stderr)
    print(f"placement: {placement.describe()}", file=sys.stderr)
    print(
        f"{len(contenders)} contenders x {args.rounds} rounds",
        file=sys.stderr,
        flush=True,
    )

    measured = run_all(contenders, args.rounds, sinks, placement)

    refs = references(py)
    for item in args.ref:
        key, _, name = item.partition("=")
        refs[key] = name
    tables = []
    for title in dict.fromkeys(m.contender.table for m in measured):
        rows: list[Measured] = [m for m in measured if m.contender.table == title]
        tables.append(table(title, rows, refs.get(title, "")))
    bad = [
        f"{m.contender.name}: {p}"
        for m in measured
        for r in m.rounds
        for p in (r.problems + ([r.error] if r.error else []))
    ]

    check_targets(measured, py, args)

    elapsed = time.monotonic() - started
    print(f"\n{placement.describe()}; {args.rounds} rounds; took {elapsed:.0f} s")
    if args.json:
        meta = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": sys.argv,
            "placement": placement.describe(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "versions": py.versions(),
            "skipped": py.skipped,
            "rounds": args.rounds,
            "elapsed_seconds": round(elapsed, 1),
        }
        write_json(args.json, meta, tables)
        print(f"wrote {args.json}")
    if bad:
        print(f"\n!!!!! {len(bad)} BAD RUNS (left out of the medians) !!!!!")
        for line in bad:
            print(f"!!!!! {line}")
        sys.exit(1)


if __name__ == "__main__":
    main()
