"""Developer and CI tasks: ``nox`` runs tests, lint, typecheck and docs.

Sessions:
    tests      pytest on every CPython 3.11, 3.12 and 3.13 this machine has
    lint       ruff check and ruff format --check
    typecheck  mypy --strict on src/
    docs       mkdocs build --strict (the docs' examples run in the tests)
    bench      the benchmarks of benchmarks/ (not run by default)
    soak       N messages through a fault-injecting server, reconciled
               (benchmarks/soak.py; not run by default)
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.error_on_missing_interpreters = False

SUPPORTED = ("3.11", "3.12", "3.13")


def _interpreters() -> list[str]:
    """The supported Pythons installed here (pyenv versions included).

    pyenv installs every version but only activates one; put the others'
    bin directories on PATH so nox finds real interpreters, not shims.
    """
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = []
    for version in SUPPORTED:
        bins = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin")))
        for directory in bins[-1:]:
            os.environ["PATH"] = directory + os.pathsep + os.environ["PATH"]
        if bins or shutil.which(f"python{version}"):
            found.append(version)
    return found


PYTHONS = _interpreters()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package."""
    session.install(".[tests]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS[:1])
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHONS[:1])
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/."""
    session.install(".[server,uvloop]", "mypy>=1.10", "types-aiofiles")
    session.run("mypy")


@nox.session(python=PYTHONS[:1])
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    session.install(".[docs]")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        "docs/mkdocs.yml",
        "--site-dir",
        os.path.join(os.path.abspath(session.create_tmp()), "site"),
    )


def _side_venv(session: nox.Session, python: str, name: str, *packages: str) -> str:
    """A virtualenv of its own for a reference contender (its dependencies
    must not mix with asyncmail's); returns its interpreter."""
    path = os.path.join(session.create_tmp(), name)
    if not os.path.exists(os.path.join(path, "bin", "python")):
        session.run(python, "-m", "venv", path, external=True)
    session.run(
        os.path.join(path, "bin", "python"),
        "-m",
        "pip",
        "install",
        "-q",
        *packages,
        external=True,
    )
    return os.path.join(path, "bin", "python")


@nox.session(python=PYTHONS[:1])
def bench(session: nox.Session) -> None:
    """The benchmarks (BENCHMARKS.md): ratios against references, same run.

    Needs root for Postfix's smtp-sink/smtp-source (installed by the run if
    missing) and gcc for the relay sink. Extra arguments go to run.py, e.g.
    ``nox -s bench -- --scenario loopback --rounds 5``.
    """
    session.install(".[bench]")
    args = []
    py312 = shutil.which("python3.12")
    if py312:
        args += ["--py312", _side_venv(session, py312, "django6", "django>=6,<7")]
    args += [
        "--fastapi-mail-python",
        _side_venv(session, sys.executable, "fastapi-mail", "fastapi-mail"),
    ]
    session.run("python", "benchmarks/run.py", *args, *session.posargs)


@nox.session(python=PYTHONS[:1])
def soak(session: nox.Session) -> None:
    """The soak run (benchmarks/soak.py): 20,000 messages through a seeded
    fault-injecting server, every result reconciled with what it stored;
    fails on any mismatch or duplicate. Arguments go to soak.py, e.g.
    ``nox -s soak -- --messages 100000 --seed 7``."""
    session.install(".[uvloop]")
    session.run("python", "benchmarks/soak.py", *session.posargs)
