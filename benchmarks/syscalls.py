"""System calls per message, from ``strace -c -f``.

    python benchmarks/syscalls.py [--count 2000] [--base 200]

Runs each contender twice under ``strace -c -f`` against a fresh smtp-sink
(10 connections, prebuilt bytes, each message to its own recipient): once
with --count messages and once with --base.  The difference of the two
call counts, divided by the difference in messages, is the system calls
per message with interpreter start-up, imports, building the messages
and connection set-up taken out.  Printed per system call (the ones that
make up 95% of the difference) and in total.  strace slows the client down,
so no rate is reported here; the count does not depend on speed, except
for epoll_wait and friends (how often the loop found nothing ready).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import contender_env
from _sinks import SmtpSink, ensure_postfix

HERE = Path(__file__).resolve().parent
CONTENDERS = HERE / "contenders"


def counts(argv: list[str]) -> dict[str, int]:
    """Run argv under strace -c -f against a fresh sink; calls per syscall."""
    sink = SmtpSink(None)
    host, port = sink.start()
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        cmd = ["strace", "-c", "-f", "-o", out.name, *argv]
        cmd += ["--host", host, "--port", str(port)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=contender_env(), check=False
        )
        sink.stop(0)
        if proc.returncode != 0:
            sys.exit(f"{argv[1]} failed: {proc.stderr[-800:]}")
        table = out.read()
    calls: dict[str, int] = {}
    for line in table.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1))
    return calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--base", type=int, default=200)
    p.add_argument("--python", default=sys.executable, help="has asyncmail")
    args = p.parse_args()
    if not shutil.which("strace"):
        sys.exit("strace is missing: apt-get install strace")
    ensure_postfix()
    py = args.python
    ten = ["--connections", "10"]
    rows = {
        "asyncmail, 10 conn, asyncio, bytes, list": [
            py, str(CONTENDERS / "asyncmail_send.py"), *ten, "--build", "bytes",
        ],
        "pipelined floor, 10 conn, asyncio, bytes": [
            py, str(CONTENDERS / "pipelined_floor.py"), *ten,
        ],
        "aiosmtplib, 10 conn, asyncio, bytes": [
            py, str(CONTENDERS / "aiosmtplib_send.py"), *ten, "--build", "bytes",
        ],
        "smtp-source (C), 10 sess": [
            sys.executable, str(CONTENDERS / "smtp_source.py"), *ten,
        ],
    }  # fmt: skip
    extra = args.count - args.base
    print(f"strace -c -f, ({args.count} - {args.base} messages) / {extra}")
    print("| contender | syscalls/msg | main calls per message |")
    print("|---|---|---|")
    for name, argv in rows.items():
        big = counts([*argv, "--count", str(args.count)])
        small = counts([*argv, "--count", str(args.base)])
        diff = {k: big.get(k, 0) - small.get(k, 0) for k in big}
        total = sum(diff.values())
        top, shown = [], 0
        for call, n in sorted(diff.items(), key=lambda kv: -kv[1]):
            if shown >= 0.95 * total or n <= 0:
                break
            top.append(f"{call} {n / extra:.2f}")
            shown += n
        print(f"| {name} | {total / extra:.2f} | {', '.join(top)} |", flush=True)
    print(f"(pid {os.getpid()}; counts include every thread and child process)")


if __name__ == "__main__":
    main()
