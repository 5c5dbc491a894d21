"""Developer and CI tasks: ``nox`` runs tests, lint, typecheck and docs.

Sessions:
    tests      pytest on every CPython 3.11, 3.12 and 3.13 this machine has
               (with Django 5.2 on 3.11, Django 6.1 on 3.12+)
    django_suite  Django's own SMTP-backend tests against asyncmail.django
    lint       ruff check and ruff format --check
    typecheck  mypy --strict on src/
    docs       mkdocs build --strict, then the built site in headless Chromium
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

nox.options.sessions = ["lint", "typecheck", "tests", "django_suite", "docs"]
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


def _django(python: str) -> str:
    """The Django series tested on *python*: 6.1 needs Python 3.12+."""
    return "django>=5.2,<5.3" if python == "3.11" else "django>=6.1,<6.2"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite against the installed package (and Django)."""
    session.install(
        ".[tests,django]", _django(str(session.python)), "pytest-django>=4.9"
    )
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHONS)
def django_suite(session: nox.Session) -> None:
    """Django's own SMTP-backend tests (tests/mail of its sdist) run against
    asyncmail.django.EmailBackend, with each serializer; the tests skipped,
    and why, are in tests/django_suite/excluded.txt. Extra arguments go to
    tests/django_suite/run.py (e.g. ``-- --no-exclusions``)."""
    session.install(".[django]", "aiosmtpd>=1.4.6", _django(str(session.python)))
    version = session.run(
        "python", "-c", "import django; print(django.__version__)", silent=True
    )
    assert isinstance(version, str)
    downloads = session.create_tmp()
    session.run(
        "python",
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"django=={version.strip()}",
        "-d",
        downloads,
    )
    (sdist,) = glob.glob(os.path.join(downloads, f"[Dd]jango-{version.strip()}.tar.gz"))
    for serializer in ("asyncmail", "django"):
        session.run(
            "python",
            "tests/django_suite/run.py",
            "--sdist",
            sdist,
            "--serializer",
            serializer,
            *session.posargs,
        )


@nox.session(python=PYTHONS[:1])
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHONS[:1])
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/."""
    session.install(
        ".[server,uvloop,jinja2,otel,dkim,web]",
        "mypy>=1.10",
        "types-aiofiles",
        "pytest",
        "starlette",
    )
    session.run("mypy")


@nox.session(python=PYTHONS[:1])
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning, then check the
    built site in headless Chromium (tests/test_docs_site.py: pages render
    from disk, nav links, offline search, the API reference is complete)
    and the web inbox in the same browser (tests/test_webinbox_browser.py).

    Chromium is Debian's (``apt-get install chromium``; .ci/run installs it),
    driven by Playwright, which downloads nothing here. The browser test is
    required in this session: a missing browser fails it.
    """
    session.install(".[docs,tests,web]", "playwright>=1.40")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        "docs/mkdocs.yml",
        "--site-dir",
        os.path.join(os.path.abspath(session.create_tmp()), "site"),
    )
    session.run(
        "pytest",
        "tests/test_docs_site.py",
        "tests/test_webinbox_browser.py",  # the web inbox, in the same Chromium
        *session.posargs,
        env={"ASYNCMAIL_DOCS_BROWSER": "1"},
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
        # Django 6 with asyncmail too, for the asyncmail.django rows.
        args += ["--py312", _side_venv(session, py312, "django6", "django>=6,<7", ".")]
    args += [
        "--fastapi-mail-python",
        _side_venv(session, sys.executable, "fastapi-mail", "fastapi-mail"),
    ]
    session.run("python", "benchmarks/run.py", *args, *session.posargs)
    if not session.posargs:  # the DKIM signing cost, beside the build cost
        session.run("python", "benchmarks/dkim_signing.py")


@nox.session(python=PYTHONS[:1])
def soak(session: nox.Session) -> None:
    """The soak run (benchmarks/soak.py): 20,000 messages through a seeded
    fault-injecting server, every result reconciled with what it stored;
    fails on any mismatch or duplicate. Arguments go to soak.py, e.g.
    ``nox -s soak -- --messages 100000 --seed 7``."""
    session.install(".[uvloop]")
    session.run("python", "benchmarks/soak.py", *session.posargs)
