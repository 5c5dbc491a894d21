"""Run Django's own SMTP-backend tests against asyncmail.django.EmailBackend.

Used by ``nox -s django_suite``; standalone::

    python tests/django_suite/run.py --sdist django-6.1.3.tar.gz [--serializer django]

It unpacks Django's source distribution (downloaded by nox with
``pip download --no-binary :all:``), copies ``tests/runtests.py``,
``tests/test_sqlite.py``, ``tests/urls.py`` and ``tests/mail/`` to a work
directory, and in the copies:

* swaps the backend: the test module's ``smtp`` (Django's
  ``django.core.mail.backends.smtp``) becomes ``asyncmail.django.backend``,
  whose ``EmailBackend`` is asyncmail's (and, in Django 5.2's suite, the
  ``email_backend`` path of ``SMTPBackendTests``);
* sets ``ASYNCMAIL_SERIALIZER`` in the test settings (``--serializer``);
* skips the tests listed in ``excluded.txt`` (beside this file) for this
  Django series and serializer, each with its reason; a listed test that no
  longer exists fails the run, so the list cannot go stale silently.

Then it runs Django's ``runtests.py`` on the SMTP backend test classes
(which include Django's shared backend tests) and prints how many ran,
passed and were excluded, per exclusion group. ``--no-exclusions`` runs the
listed tests too (to see which pass, e.g. after the fidelity work lands).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXCLUDED = HERE / "excluded.txt"

#: Per Django series: the module holding the SMTP tests and the classes run.
SUITES = {
    "5.2": ("tests", ["SMTPBackendTests", "SMTPBackendStoppedServerTests"]),
    "6.1": ("test_backends", ["SMTPBackendTests", "SMTPBackendStoppedServerTests"]),
}


@dataclass(frozen=True)
class Exclusion:
    group: str
    series: str
    serializer: str
    test: str
    reason: str

    def applies(self, series: str, serializer: str) -> bool:
        return self.series in ("*", series) and self.serializer in ("*", serializer)


def read_exclusions(path: Path = EXCLUDED) -> list[Exclusion]:
    """``[group]`` headings, then ``SERIES SERIALIZER Class.test: reason``
    lines (``*`` for any); ``#`` starts a comment."""
    exclusions: list[Exclusion] = []
    group = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.startswith("#") else ""
        if not line:
            continue
        heading = re.fullmatch(r"\[([\w-]+)\]", line)
        if heading:
            group = heading.group(1)
            continue
        match = re.fullmatch(r"(\S+)\s+(\S+)\s+(\w+\.\w+):\s*(.+)", line)
        if not match or not group:
            raise SystemExit(f"{path}:{number}: cannot read {raw!r}")
        exclusions.append(Exclusion(group, *match.groups()))
    return exclusions


def _series(sdist: Path) -> str:
    match = re.search(r"django-(\d+)\.(\d+)", sdist.name, re.IGNORECASE)
    if not match:
        raise SystemExit(f"not a Django sdist: {sdist.name}")
    return f"{match.group(1)}.{match.group(2)}"


_FOOTER = """

# -- added by asyncmail's tests/django_suite/run.py: the excluded tests ----------
import unittest as _asyncmail_unittest

for _asyncmail_name, _asyncmail_reason in {skips!r}.items():
    _asyncmail_class, _asyncmail_test = _asyncmail_name.split(".")
    _asyncmail_target = globals()[_asyncmail_class]
    setattr(
        _asyncmail_target,
        _asyncmail_test,
        _asyncmail_unittest.skip("asyncmail: " + _asyncmail_reason)(
            getattr(_asyncmail_target, _asyncmail_test)
        ),
    )
"""


def prepare(
    sdist: Path, work: Path, series: str, serializer: str, skips: dict[str, str]
) -> Path:
    """Unpack and patch the copy; returns its tests/ directory."""
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/", 1)[0]
        members = [
            m
            for m in archive.getmembers()
            if m.name.startswith(
                (
                    f"{root}/tests/mail/",
                    f"{root}/tests/runtests.py",
                    f"{root}/tests/test_sqlite.py",
                    f"{root}/tests/urls.py",
                )
            )
        ]
        archive.extractall(work, members=members, filter="data")
    tests = work / root / "tests"
    (tests / "templates").mkdir(exist_ok=True)
    module_name, _ = SUITES[series]
    module = tests / "mail" / f"{module_name}.py"
    text = module.read_text(encoding="utf-8")
    imports = (
        "from django.core.mail.backends import "
        "console, dummy, filebased, locmem, smtp\n"
    )
    if imports not in text:
        raise SystemExit(f"{module}: the backends import to swap was not found")
    text = text.replace(
        imports,
        "from django.core.mail.backends import console, dummy, filebased, locmem\n"
        "from asyncmail.django import backend as smtp  # asyncmail: the swap\n",
    )
    if series == "5.2":
        old = (
            "class SMTPBackendTests(BaseEmailBackendTests, SMTPBackendTestsBase):\n"
            '    email_backend = "django.core.mail.backends.smtp.EmailBackend"\n'
        )
        if old not in text:
            raise SystemExit(f"{module}: SMTPBackendTests.email_backend not found")
        text = text.replace(
            old, old.replace("django.core.mail.backends.smtp", "asyncmail.django")
        )
    # Python 3.12.1 lacks email.errors.HeaderWriteError (added in 3.12.2?):
    # the test module only names it in an assertRaises tuple.
    text = text.replace(
        "from email.errors import HeaderWriteError\n",
        "try:\n"
        "    from email.errors import HeaderWriteError\n"
        "except ImportError:  # asyncmail: Python 3.12.1\n"
        "    class HeaderWriteError(Exception):\n"
        "        pass\n",
        1,
    )
    module.write_text(text + _FOOTER.format(skips=skips), encoding="utf-8")
    settings = tests / "test_sqlite.py"
    settings.write_text(
        settings.read_text(encoding="utf-8")
        + f"\nASYNCMAIL_SERIALIZER = {serializer!r}\n",
        encoding="utf-8",
    )
    return tests


_RAN = re.compile(r"^Ran (\d+) tests? in", re.MULTILINE)
#: One per test in runtests.py -v 2 output (Python's "Ran N" counts skipped
#: tests on some versions only, so the outcomes are counted instead).
#: A test that logs while it runs has its outcome on a line of its own.
_OUTCOME = re.compile(r"(?: \.\.\. |^)(ok|skipped|FAIL|ERROR)\b", re.MULTILINE)
_RESULT = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$", re.MULTILINE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, required=True)
    parser.add_argument(
        "--serializer", default="asyncmail", choices=["asyncmail", "django"]
    )
    parser.add_argument("--no-exclusions", action="store_true")
    args = parser.parse_args()
    series = _series(args.sdist)
    if series not in SUITES:
        raise SystemExit(f"no suite definition for Django {series}")
    exclusions = [e for e in read_exclusions() if e.applies(series, args.serializer)]
    skips = (
        {}
        if args.no_exclusions
        else {e.test: f"[{e.group}] {e.reason}" for e in exclusions}
    )
    module_name, classes = SUITES[series]
    with tempfile.TemporaryDirectory(prefix="django-suite-") as work:
        tests = prepare(args.sdist, Path(work), series, args.serializer, skips)
        labels = [f"mail.{module_name}.{name}" for name in classes]
        command = [
            sys.executable,
            "-W",
            "ignore::DeprecationWarning",
            "runtests.py",
            "--settings=test_sqlite",
            "--parallel=1",
            "-v",
            "2",
            *labels,
        ]
        result = subprocess.run(
            command, cwd=tests, capture_output=True, text=True, check=False
        )
    output = result.stdout + result.stderr
    ran = _RAN.search(output)
    verdict = _RESULT.search(output)
    if not ran or not verdict:
        print(output)
        print("django_suite: could not read runtests.py's result", file=sys.stderr)
        return 1
    parts = [part for part in (verdict.group(2) or "").split(", ") if part]
    details = {
        key.strip(): int(value) for key, value in (part.split("=") for part in parts)
    }
    outcomes = _OUTCOME.findall(output)
    passed = outcomes.count("ok")
    skipped = details.get("skipped", 0)
    failed = details.get("failures", 0) + details.get("errors", 0)
    total = passed + skipped + failed
    print(output if result.returncode else output[-1500:])
    print(
        f"django_suite: Django {series}, serializer={args.serializer}: {total} tests, "
        f"{passed + failed} run: {passed} passed, {failed} failed; {skipped} excluded"
    )
    groups: dict[str, int] = {}
    for exclusion in exclusions:
        groups[exclusion.group] = groups.get(exclusion.group, 0) + 1
    for group, count in sorted(groups.items()):
        print(f"django_suite:   excluded [{group}]: {count}")
    if skipped != (0 if args.no_exclusions else len(skips)):
        print(
            f"django_suite: {skipped} skipped but {len(skips)} excluded: "
            "a test was skipped for another reason (aiosmtpd missing?)",
            file=sys.stderr,
        )
        return 1
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
