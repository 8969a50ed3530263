"""The map cannot lose a module: every module in agent/ and shim/ has a docstring
(what it owns), and ARCHITECTURE.md's code map names it - a top-level module by its
file name, one in a package (aws/, commands/, config/, journal/, ui/) by its name
in the package's row. A new module without its row fails here, not in a review."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "agent" / "dyncreds"


def _modules() -> list[Path]:
    found = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "shim").glob("*.py"))
    return [p for p in found if "__pycache__" not in p.parts]


def _code_map() -> str:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    start = text.index("## Code map")
    return text[start : text.index("\n## ", start + 1)]


def test_every_module_says_what_it_owns() -> None:
    missing = [
        str(p.relative_to(ROOT))
        for p in _modules()
        if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()
    ]
    assert missing == []


def _named(path: Path, code_map: str) -> bool:
    if path.parent == ROOT / "shim":
        return f"`shim/{path.name}`" in code_map
    relative = path.relative_to(PACKAGE)
    if path.stem in ("__init__", "__main__"):
        return True  # a package's own row; the CLI's ``__main__`` is in the commands row
    if len(relative.parts) == 1:
        return f"`{path.name}`" in code_map
    # In its package's row: `name`, `name.py`, `pkg/name.py` or `pkg/name`.
    stem = re.escape(path.stem)
    return re.search(rf"`(?:[\w/]*/)?{stem}(?:\.py)?`", code_map) is not None


def test_every_module_is_on_the_code_map() -> None:
    code_map = _code_map()
    missing = [str(p.relative_to(ROOT)) for p in _modules() if not _named(p, code_map)]
    assert missing == []


def test_the_map_check_catches_a_module_without_a_row() -> None:
    assert not _named(PACKAGE / "nowhere.py", _code_map())
    assert not _named(PACKAGE / "aws" / "nowhere.py", _code_map())
