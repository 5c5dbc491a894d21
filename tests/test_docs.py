"""The documentation's examples run: every ```python block in README.md and
docs/pages/*.md executes, page by page, in a fresh namespace with fresh
settings (```py blocks are illustrations that need a real server)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "pages").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_every_page_is_found() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "index.md", "messages.md", "backends.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_examples_run(page: Path) -> None:
    blocks = BLOCK.findall(page.read_text(encoding="utf-8"))
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{page.name}, example {number}", "exec")
        exec(code, namespace)  # noqa: S102 - our own documentation
