"""The built documentation site, checked in a real headless browser.

The site is built with ``mkdocs build --strict`` and opened from disk
(file://) in Debian's Chromium, driven by Playwright (which drives the
system browser: nothing is downloaded). Every page renders without script
errors, every navigation link leads to a page (not a directory listing),
nothing is loaded from the network, the search works offline, and the API
reference lists every name of ``asyncmail.__all__`` and every public
attribute of its classes.

Needs the ``docs`` extra, Playwright and Chromium. Without them the tests are
skipped, except where they must run: the nox ``docs`` session sets
``ASYNCMAIL_DOCS_BROWSER=1`` (then anything missing fails), and in CI
(``CI=true``) a missing Chromium fails.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncmail

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "docs" / "mkdocs.yml"
REQUIRED = os.environ.get("ASYNCMAIL_DOCS_BROWSER") == "1"
IN_CI = os.environ.get("CI", "").lower() == "true"
# The network is closed: no background requests, no first-run pages.
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where pages may load resources from: the site itself, nothing else.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def _missing(reason: str, *, required: bool) -> None:
    if required:
        pytest.fail(f"{reason} (required here)")
    pytest.skip(reason)


def _chromium() -> str | None:
    candidates = [
        os.environ.get("CHROMIUM", ""),
        "/usr/lib/chromium/chromium",  # Debian's binary (behind /usr/bin's script)
        shutil.which("chromium") or "",
        shutil.which("chromium-browser") or "",
    ]
    usable = (path for path in candidates if path and os.access(path, os.X_OK))
    return next(usable, None)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built from the docs as they are now."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            reason = f"the docs toolchain is not installed ({module})"
            _missing(reason, required=REQUIRED)
    directory = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"),
            *("--config-file", str(CONFIG), "--site-dir", str(directory)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr
    return directory


@pytest.fixture(scope="module")
def browser(site: Path) -> Iterator[Any]:
    """A Chromium context with a fresh profile."""
    if importlib.util.find_spec("playwright") is None:
        _missing("Playwright is not installed", required=REQUIRED)
    executable = _chromium()
    if executable is None:
        _missing("Chromium is not installed", required=REQUIRED or IN_CI)
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory() as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=LAUNCH_FLAGS,
            headless=True,
        )
        try:
            yield context
        finally:
            context.close()


class Visit:
    """One page opened from disk, with what it asked for and what failed."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page()
        self.remote: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", self._request)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: (
                self.errors.append(message.text) if message.type == "error" else None
            ),
        )
        self.page.goto(url)
        self.page.wait_for_load_state("load")

    def _request(self, request: Any) -> None:
        if not request.url.startswith(LOCAL_SCHEMES):
            self.remote.append(request.url)

    def close(self) -> None:
        self.page.close()


def _nav_pages(site: Path) -> list[str]:
    """The pages of the nav, as the built index links them."""
    import yaml  # mkdocs depends on PyYAML

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)

    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return [page.removesuffix(".md") + ".html" for page in walk(config["nav"])]


def test_every_page_renders_from_disk_with_nothing_from_the_network(
    site: Path, browser: Any
) -> None:
    pages = _nav_pages(site)
    assert "reference.html" in pages
    assert "changelog.html" in pages
    for name in pages:
        visit = Visit(browser, (site / name).as_uri())
        try:
            heading = visit.page.locator("article h1").first
            assert heading.inner_text().strip(), name
            assert visit.page.title().endswith("asyncmail"), name
            assert visit.errors == [], (name, visit.errors)
            assert visit.remote == [], (name, visit.remote)
        finally:
            visit.close()


def test_nav_links_open_pages_not_directory_listings(site: Path, browser: Any) -> None:
    visit = Visit(browser, (site / "index.html").as_uri())
    try:
        links = visit.page.eval_on_selector_all(
            "nav.md-nav--primary a.md-nav__link[href]",
            "links => links.map(link => link.href)",
        )
        targets = sorted({link.split("#")[0] for link in links})
        assert {(site / name).as_uri() for name in _nav_pages(site)} <= set(targets)
        for target in targets:
            assert target.endswith(".html"), target
            # Follow the link as a reader would: a click in the nav.
            visit.page.goto((site / "index.html").as_uri())
            name = target.rsplit("/", 1)[1]
            visit.page.locator(
                f"nav.md-nav--primary a.md-nav__link[href$='{name}']"
            ).first.click()
            visit.page.wait_for_load_state("load")
            assert visit.page.url.split("#")[0] == target
            assert visit.page.locator("article h1").count() == 1, target
        assert visit.errors == []
        assert visit.remote == []
    finally:
        visit.close()


def test_every_link_between_pages_points_at_a_file(site: Path, browser: Any) -> None:
    broken = []
    for name in _nav_pages(site):
        visit = Visit(browser, (site / name).as_uri())
        try:
            hrefs = visit.page.eval_on_selector_all(
                "a[href]", "links => links.map(link => link.href)"
            )
        finally:
            visit.close()
        for href in hrefs:
            if href.startswith("file://"):
                path = Path(href.removeprefix("file://").split("#")[0].split("?")[0])
                if not path.is_file():
                    broken.append((name, href))
    assert broken == []


def _reference_ids(site: Path, browser: Any, page: str) -> set[str]:
    visit = Visit(browser, (site / page).as_uri())
    try:
        ids: list[str] = visit.page.eval_on_selector_all(
            ".doc-heading[id]", "headings => headings.map(h => h.id)"
        )
        assert visit.errors == []
    finally:
        visit.close()
    return set(ids)


def _resolve(dotted: str) -> object:
    """The object a reference heading documents (module path, then attributes)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            value = getattr(value, part)
        return value
    raise LookupError(dotted)


def test_the_api_reference_lists_every_public_name(site: Path, browser: Any) -> None:
    ids = _reference_ids(site, browser, "reference.html")
    # A name is documented when a heading's object is the package's object
    # of that name (``settings`` is documented where it is defined: its
    # name is also its module's).
    documented = set()
    for heading in ids:
        name = heading.rsplit(".", 1)[1]
        if name in asyncmail.__all__ and _resolve(heading) is getattr(asyncmail, name):
            documented.add(name)
    assert documented == set(asyncmail.__all__)
    assert {i.removeprefix("asyncmail.") for i in ids if i.count(".") == 1} <= set(
        asyncmail.__all__
    )


def test_the_api_reference_lists_every_public_attribute(
    site: Path, browser: Any
) -> None:
    ids = _reference_ids(site, browser, "reference.html")
    missing = []
    for name in asyncmail.__all__:
        value = getattr(asyncmail, name)
        if not inspect.isclass(value):
            continue
        attributes = {a for a in vars(value) if not a.startswith("_")}
        attributes |= set(getattr(value, "__dataclass_fields__", {}))
        missing += [
            f"{name}.{attribute}"
            for attribute in sorted(attributes)
            if not attribute.startswith("_")
            and f"asyncmail.{name}.{attribute}" not in ids
        ]
    assert missing == []
    assert "asyncmail.MessageResult.message" in ids


def test_the_backends_reference_lists_every_built_in_backend(
    site: Path, browser: Any
) -> None:
    ids = _reference_ids(site, browser, "reference-backends.html")
    for backend in ("smtp", "console", "filebased", "locmem", "dummy"):
        assert f"asyncmail.backends.{backend}.EmailBackend" in ids
    for option in ("max_connections", "rate_limit", "retries"):
        assert f"asyncmail.options.SMTPOptions.{option}" in _reference_ids(
            site, browser, "reference-options.html"
        )


def test_code_is_highlighted_at_build_time(site: Path, browser: Any) -> None:
    visit = Visit(browser, (site / "index.html").as_uri())
    try:
        # Pygments' classes (kn: import keyword, nn: module name), made by
        # the build: no highlighter runs in the browser.
        assert visit.page.locator(".highlight code span.kn").count() > 0
        assert visit.page.locator(".highlight code span.nn").count() > 0
    finally:
        visit.close()


def test_search_works_offline(site: Path, browser: Any) -> None:
    visit = Visit(browser, (site / "index.html").as_uri())
    try:
        box = visit.page.locator("input.md-search__input")
        box.click()
        box.press_sequentially("max_connections", delay=20)
        first = visit.page.locator(".md-search-result__item a").first
        first.wait_for(timeout=20_000)
        hrefs = visit.page.eval_on_selector_all(
            ".md-search-result__item a", "links => links.map(link => link.href)"
        )
        assert any("backends.html" in href for href in hrefs), hrefs
        first.click()
        visit.page.wait_for_load_state("load")
        assert visit.page.url.startswith(site.as_uri() + "/")
        assert "max_connections" in visit.page.locator("article").inner_text()
        assert visit.remote == []
    finally:
        visit.close()
