"""The SMTP servers the throughput and memory benchmarks send to.

Two sinks, both started fresh for every measured run so that each one's
message count belongs to exactly one contender run:

* ``SmtpSink``: Postfix's ``smtp-sink`` (C).  Fast enough that the client is
  always the bottleneck on loopback.  Its ``-c`` flag prints running
  counters ("sess=N quit=N mesg=N", separated by carriage returns) each time
  a message's final "." arrives, before the 250 reply goes out, so the count
  is complete by the time the client has its last reply.
* ``RelaySink``: our ``relay_sink.c``, which delays each reply to MAIL, RCPT
  and end-of-DATA by 10 ms, handling commands one at a time so pipelined
  commands are answered in order, each delayed.  smtp-sink cannot do this:
  its ``-w``/``-W`` delays take whole seconds only ("0.01" is refused as a
  non-positive delay).  It is compiled with gcc on first use.

Both can be pinned to a CPU with taskset (see ``Placement``) and report the
CPU time they used, so a run can show that the sink was not the bottleneck.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

HERE = Path(__file__).resolve().parent
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
RELAY_SOURCE = HERE / "relay_sink.c"


@dataclass(frozen=True)
class Placement:
    """Which CPU the client and the sink run on (None: not pinned)."""

    client_cpu: int | None
    sink_cpu: int | None

    @classmethod
    def detect(cls) -> Placement:
        """Client and sink on two different CPUs if we have two and taskset."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and shutil.which("taskset"):
            return cls(client_cpu=cpus[0], sink_cpu=cpus[1])
        return cls(client_cpu=None, sink_cpu=None)

    def describe(self) -> str:
        if self.client_cpu is None:
            return "unpinned (fewer than 2 CPUs available or no taskset)"
        return f"client on CPU {self.client_cpu}, sink on CPU {self.sink_cpu}"


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    """Prefix argv with taskset for the given CPU, if any."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


@dataclass(frozen=True)
class SinkReport:
    """What a sink saw between start() and stop()."""

    accepted: int
    cpu_seconds: float


class Sink(Protocol):
    """A server started for one run and stopped right after it."""

    def start(self) -> tuple[str, int]: ...

    def stop(self, expected: int) -> SinkReport: ...


def _process_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[str], timeout: float) -> bool:
    """True once something accepts on the port; False if proc died first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def ensure_postfix() -> None:
    """Install Debian's postfix package (for smtp-sink/smtp-source) if missing.

    The postfix service is never started: policy-rc.d refuses it in a
    container, and we only use the two test programs.
    """
    if Path(SMTP_SINK).exists() and Path(SMTP_SOURCE).exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            "smtp-sink missing: install Debian's postfix package (needs root)"
        )
    print("installing postfix for smtp-sink / smtp-source ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["debconf-set-selections"],
        input="postfix postfix/main_mailer_type select No configuration\n",
        text=True,
        check=True,
    )
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postfix"],
        check=True,
        env=env,
    )


class SmtpSink:
    """Postfix's smtp-sink on 127.0.0.1, counting messages with -c."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self.proc: subprocess.Popen[str] | None = None
        self.out: IO[str] | None = None

    def start(self) -> tuple[str, int]:
        for _ in range(5):  # the free port may be taken before we bind it
            port = _free_port()
            # A file, not a pipe: nobody reads during the run, and a full
            # pipe would stall the sink after ~64 KB of counter output.
            self.out = tempfile.TemporaryFile("w+", prefix="bench-sink-")  # noqa: SIM115 (closed in _kill)
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            argv = [SMTP_SINK, *user, "-c", f"127.0.0.1:{port}", "1024"]
            self.proc = subprocess.Popen(
                pinned(self.cpu, argv),
                stdout=self.out,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if _wait_listening(port, self.proc, timeout=5):
                return "127.0.0.1", port
            self._kill()
        raise RuntimeError("smtp-sink did not start")

    def count(self) -> int:
        """Messages received so far (last "mesg=N" counter printed)."""
        assert self.out is not None
        self.out.seek(0)
        counts = re.findall(r"mesg=(\d+)", self.out.read())
        return int(counts[-1]) if counts else 0

    def stop(self, expected: int) -> SinkReport:
        assert self.proc is not None
        # The count should already be final; allow a moment for stragglers.
        deadline = time.monotonic() + 1.0
        while self.count() < expected and time.monotonic() < deadline:
            time.sleep(0.02)
        cpu = _process_cpu_seconds(self.proc.pid)
        accepted = self.count()
        self._kill()
        return SinkReport(accepted=accepted, cpu_seconds=cpu)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.out is not None:
            self.out.close()
            self.out = None


def relay_binary() -> Path:
    """Compile relay_sink.c once per source version, into /tmp."""
    source = RELAY_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    binary = Path(tempfile.gettempdir()) / f"bench-relay-sink-{digest}"
    if not binary.exists():
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            raise RuntimeError("the relay sink needs a C compiler (gcc)")
        tmp = binary.with_suffix(".tmp")
        subprocess.run(
            [compiler, "-O2", "-Wall", "-o", str(tmp), str(RELAY_SOURCE)], check=True
        )
        tmp.rename(binary)
    return binary


class RelaySink:
    """relay_sink.c: every MAIL, RCPT and end-of-DATA reply waits delay_ms."""

    def __init__(self, cpu: int | None, delay_ms: float = 10.0) -> None:
        self.cpu = cpu
        self.delay_ms = delay_ms
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> tuple[str, int]:
        argv = [str(relay_binary()), "-p", "0", "-d", str(self.delay_ms)]
        self.proc = subprocess.Popen(
            pinned(self.cpu, argv), stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.fullmatch(r"port=(\d+)\s*", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"relay sink did not start: {line!r}")
        return "127.0.0.1", int(match.group(1))

    def stop(self, expected: int) -> SinkReport:
        del expected  # the final count is printed on exit
        assert self.proc is not None
        cpu = _process_cpu_seconds(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        match = re.search(r"accepted=(\d+)", out)
        return SinkReport(
            accepted=int(match.group(1)) if match else -1, cpu_seconds=cpu
        )
