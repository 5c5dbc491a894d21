"""Run contenders in rounds, verify sink counts, print ratio tables, save JSON.

Absolute figures drift by 2x between runs on the shared 2-core machines, so
what the tables are for is the ratio of each contender to a named reference
measured in the same run.  Rounds are interleaved (round 1 of every
contender, then round 2, ...) so slow drift in the machine's load spreads
over all contenders instead of penalising whichever ran last.  Each cell is
the median of the rounds, with the min-max range beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _sinks import Placement, Sink, pinned

HERE = Path(__file__).resolve().parent
Result = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    """How to turn a contender's JSON line into the figure a table shows."""

    label: str
    higher_is_better: bool
    value: Callable[[Result], float]
    per_op: Callable[[Result], int]  # units of work, for client CPU per op


THROUGHPUT = Metric(
    "msg/s", True, lambda r: r["accepted"] / r["seconds"], lambda r: r["accepted"]
)
BUILD_RATE = Metric(
    "msg/s", True, lambda r: r["ops"] / r["seconds"], lambda r: r["ops"]
)
PER_CALL = Metric(
    "us/call", False, lambda r: r["seconds"] / r["ops"] * 1e6, lambda r: r["ops"]
)
RSS_GROWTH = Metric(
    "MB peak RSS growth", False, lambda r: r["growth_kb"] / 1024, lambda r: r["sent"]
)


@dataclass(frozen=True)
class Contender:
    """One command to measure.

    argv is the full command line without --host, --port and --count, which
    the harness appends (the port of a sink started for this very run).
    sink is "loopback", "relay" or None; table groups rows into one printed
    table, whose reference is named separately.
    """

    name: str
    argv: tuple[str, ...]
    table: str
    metric: Metric
    count: int
    sink: str | None = None
    timeout: float = 900.0


@dataclass
class Round:
    """One run of one contender."""

    result: Result | None = None
    error: str | None = None
    sink_accepted: int | None = None
    sink_cpu_seconds: float | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class Measured:
    """All rounds of one contender."""

    contender: Contender
    rounds: list[Round] = field(default_factory=list)

    def values(self) -> list[float]:
        return [
            self.contender.metric.value(r.result)
            for r in self.rounds
            if r.result is not None and not r.problems
        ]

    def median(self) -> float | None:
        values = self.values()
        return statistics.median(values) if values else None


def contender_env() -> dict[str, str]:
    """Environment for contender scripts: benchmarks/ on PYTHONPATH."""
    path = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def run_round(
    c: Contender, sinks: dict[str, Callable[[], Sink]], placement: Placement
) -> Round:
    """Start the sink (if any), run the contender once, check the counts."""
    out = Round()
    sink = sinks[c.sink]() if c.sink else None
    host, port = sink.start() if sink else ("127.0.0.1", 0)
    argv = [*c.argv, "--host", host, "--port", str(port), "--count", str(c.count)]
    try:
        proc = subprocess.run(
            pinned(placement.client_cpu, argv),
            capture_output=True,
            text=True,
            timeout=c.timeout,
            env=contender_env(),
            check=False,
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            out.error = f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"
        else:
            out.result = json.loads(lines[-1])
            if "error" in out.result:
                out.problems.append(f"contender error: {out.result['error']}")
    except subprocess.TimeoutExpired:
        out.error = f"timed out after {c.timeout:.0f} s"
    finally:
        if sink is not None:
            expected = out.result.get("accepted", 0) if out.result else 0
            report = sink.stop(expected)
            out.sink_accepted = report.accepted
            out.sink_cpu_seconds = report.cpu_seconds
    if sink is not None and out.result is not None:
        sent, accepted = out.result["sent"], out.result["accepted"]
        if accepted != sent:
            out.problems.append(f"client: {accepted} of {sent} accepted")
        if out.sink_accepted != accepted:
            out.problems.append(
                f"COUNT MISMATCH: client says {accepted} accepted, "
                f"sink counted {out.sink_accepted}"
            )
    for problem in out.problems + ([out.error] if out.error else []):
        print(f"\n!!!!! {c.name}: {problem} !!!!!\n", file=sys.stderr, flush=True)
    return out


def run_all(
    contenders: list[Contender],
    rounds: int,
    sinks: dict[str, Callable[[], Sink]],
    placement: Placement,
) -> list[Measured]:
    """Interleaved rounds: every contender once per round."""
    measured = [Measured(c) for c in contenders]
    for r in range(1, rounds + 1):
        for m in measured:
            rnd = run_round(m.contender, sinks, placement)
            m.rounds.append(rnd)
            metric = m.contender.metric
            shown = (
                f"{metric.value(rnd.result):,.1f} {metric.label}"
                if rnd.result
                else "FAILED"
            )
            print(
                f"[round {r}/{rounds}] {m.contender.name}: {shown}",
                file=sys.stderr,
                flush=True,
            )
    return measured


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"


def summarise(m: Measured, reference: Measured | None) -> dict[str, Any]:
    """One table row, as data (also what goes into the JSON report)."""
    values = m.values()
    median = m.median()
    ref = reference.median() if reference else None
    ok = [(r, r.result) for r in m.rounds if r.result is not None]
    per_op = m.contender.metric.per_op
    cpu_us = [res["cpu_seconds"] / per_op(res) * 1e6 for _, res in ok if per_op(res)]
    sink_pct = [
        100 * r.sink_cpu_seconds / res["seconds"]
        for r, res in ok
        if r.sink_cpu_seconds is not None and res["seconds"] > 0
    ]
    failed = [r for r in m.rounds if r.result is None or r.problems]
    return {
        "name": m.contender.name,
        "median": median,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "ratio": median / ref if median is not None and ref else None,
        "client_cpu_us_per_op": statistics.median(cpu_us) if cpu_us else None,
        "sink_cpu_percent": statistics.median(sink_pct) if sink_pct else None,
        "check": "ok" if not failed else f"{len(failed)} BAD",
        "argv": list(m.contender.argv),
        "count": m.contender.count,
        "rounds": [
            {
                "result": r.result,
                "error": r.error,
                "sink_accepted": r.sink_accepted,
                "sink_cpu_seconds": r.sink_cpu_seconds,
                "problems": r.problems,
            }
            for r in m.rounds
        ],
    }


def table(title: str, rows: list[Measured], reference_name: str) -> dict[str, Any]:
    """Print one ratio table and return it as data."""
    by_name = {m.contender.name: m for m in rows}
    reference = by_name.get(reference_name)
    metric = rows[0].contender.metric
    direction = "higher is better" if metric.higher_is_better else "lower is better"
    data = [summarise(m, reference) for m in rows]
    head = (
        "contender",
        f"median {metric.label}",
        "min-max",
        "x ref",
        "client CPU us/op",
        "sink CPU %",
        "check",
    )
    body = [
        (
            d["name"] + (" (ref)" if d["name"] == reference_name else ""),
            _fmt(d["median"]),
            "-" if d["min"] is None else f"{_fmt(d['min'])}-{_fmt(d['max'])}",
            "-" if d["ratio"] is None else f"{d['ratio']:.2f}",
            _fmt(d["client_cpu_us_per_op"]),
            _fmt(d["sink_cpu_percent"]),
            d["check"],
        )
        for d in data
    ]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    print(f"\n## {title} ({direction}; x ref = median / median of {reference_name})")
    if reference is None or reference.median() is None:
        print(f"   (reference {reference_name!r} missing or failed: no ratios)")
    for i, row in enumerate((head, *body)):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        print("| " + " | ".join(cells) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return {
        "title": title,
        "metric": metric.label,
        "higher_is_better": metric.higher_is_better,
        "reference": reference_name,
        "rows": data,
    }


def write_json(path: str, meta: dict[str, Any], tables: list[dict[str, Any]]) -> None:
    """The whole report, raw rounds included, for later comparison."""
    Path(path).write_text(json.dumps({"meta": meta, "tables": tables}, indent=2))
