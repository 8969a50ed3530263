"""The size rules, checked so they cannot drift: no module in agent/ or shim/ over 450
lines, no function there over 60 (tests and bench are exempt). A function's length
runs from its ``def`` line to its last line, as ``ast`` reports them; a nested
function counts in its enclosing function too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    return sorted(p for top in ("agent", "shim") for p in (ROOT / top).rglob("*.py"))


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                where = path.relative_to(root)
                found.append(f"{where}:{node.lineno} {node.name} is {length} lines")
    return found


def test_the_walk_sees_the_code() -> None:
    names = {p.name for p in _sources()}
    assert {"agent.py", "daemon.py", "dyncreds_shim.py"} <= names


def test_no_module_over_450_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)} is {n} lines"
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "split these modules:\n" + "\n".join(long)


def test_no_function_over_60_lines() -> None:
    long = [line for p in _sources() for line in _long_functions(p)]
    assert not long, "split these functions:\n" + "\n".join(long)


def test_the_check_catches_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    probe = tmp_path / "probe.py"
    probe.write_text(f"def long() -> None:\n{body}\n\ndef short() -> None:\n    pass\n")
    assert [line.split()[1] for line in _long_functions(probe, tmp_path)] == ["long"]


# Building a boto3 session or client costs tens of milliseconds of CPU: in aws/ it
# happens in a worker thread (trio.to_thread), never directly in a coroutine, where it
# would stall every cached request behind it.
CLIENT_BUILDERS = {
    "build",
    "client_for_keys",
    "client",
    "Session",
    "root_session",
    "mfa_session",
    "iam_sts",
    "dynamodb",
}


def _clients_built_on_the_loop(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in CLIENT_BUILDERS:
                where = path.relative_to(root)
                found.append(f"{where}:{node.lineno} {fn.name} calls {name}")
    return found


def test_no_boto3_client_is_built_on_the_event_loop() -> None:
    aws = sorted((ROOT / "agent" / "dyncreds" / "aws").rglob("*.py"))
    assert aws
    found = [line for p in aws for line in _clients_built_on_the_loop(p)]
    assert not found, "build these in trio.to_thread.run_sync:\n" + "\n".join(found)


def test_the_check_catches_a_client_built_in_a_coroutine(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import trio\n\n\n"
        "async def on_loop(aws):\n    aws.build()\n\n\n"
        "async def off_loop(aws):\n    await trio.to_thread.run_sync(aws.build)\n"
    )
    assert [line.split()[1] for line in _clients_built_on_the_loop(probe, tmp_path)] == ["on_loop"]


def test_every_package_is_installed() -> None:
    """A regular install ships only the packages pyproject lists: a new package
    (say aws/credtypes/) left out would work in the editable venv and nowhere else."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    agent = ROOT / "agent"
    found = {
        ".".join(init.parent.relative_to(agent).parts)
        for init in agent.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set()
