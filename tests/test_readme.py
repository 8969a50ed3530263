"""Every `dyncreds …` command line the README shows - in its code blocks, and in its
inline code where it is a concrete command (no `[…]`, `…` or UPPERCASE placeholder) -
is one the parser accepts: the README cannot drift from the CLI."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from dyncreds.commands import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`(dyncreds [^`]+)`")
OPERATORS = re.compile(r"\s(?:&&|\|\||;|\|)\s")
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]+\b|[\[\]…]|\\\|")


def commands() -> list[tuple[str, bool]]:
    """(command line, whole): a code block's lines are whole commands; inline code
    may name a command without its arguments (`dyncreds exec`)."""
    text = README.read_text()
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            for part in OPERATORS.split(line.strip().removeprefix("$ ")):
                if part.strip().startswith("dyncreds "):
                    found.append((part.strip(), True))
    for span in INLINE.findall(text):
        if not PLACEHOLDER.search(span):
            found.append((span, False))
    return found


def argv(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    for stop in (">", ">>", "<"):  # a redirection ends the command
        if stop in words:
            words = words[: words.index(stop)]
    return words[1:]


def test_the_readme_shows_commands() -> None:
    assert len(commands()) >= 20


@pytest.mark.parametrize(("line", "whole"), commands())
def test_the_parser_accepts_every_command_the_readme_shows(line: str, whole: bool) -> None:
    words = argv(line)
    if words and words[0] == "exec" and "--" in words:  # main() splits CMD off the same way
        words = words[: words.index("--")]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(words)
    except SystemExit as exc:
        named_only = not whole and "the following arguments are required" in err.getvalue()
        assert exc.code == 0 or named_only, f"{line!r}: {err.getvalue().strip()}"
        return  # --version, --help, or a command named in prose
    assert isinstance(args, argparse.Namespace) and args.fn
