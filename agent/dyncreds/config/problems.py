"""Reading a TOML file and reporting what is wrong with it as ``file:line: message``.

Decoding never stops at the first problem: each table is decoded field by field
so that ``dyncreds check`` can list everything wrong at once.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import msgspec

from dyncreds.config.schema import dec_hook

_T = TypeVar("_T", bound=msgspec.Struct)


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        name = printable_path(self.file)
        where = f"{name}:{self.line}" if self.line else name
        return f"{where}: {self.message}"


def printable_path(path: Path) -> str:
    """A path as text that always encodes: bytes that are not UTF-8 (a file named
    ``caf\\xe9.toml``) are shown as escapes instead of breaking every later answer."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class ConfigError(Exception):
    """One or more problems; ``str()`` is the first, ``problems`` is all of them."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        super().__init__(str(self.problems[0]) if self.problems else "invalid configuration")


def line_of(text: str, table: str | None, key: str) -> int | None:
    """Best-effort line of ``key`` in ``[table]`` (or the top level) of a TOML text."""
    current: str | None = None
    key_re = re.compile(rf"""\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    header_re = re.compile(r"\s*\[\[?\s*([^\]\s]+)\s*\]")  # [table] or [[array]]
    for number, line in enumerate(text.splitlines(), 1):
        header = header_re.match(line)
        if header:
            current = header.group(1)
            if table is not None and current == table and key == "":
                return number
            continue
        if current == table and key_re.match(line):
            return number
    return None


MAX_FILE = 1 << 20  # no configuration file is anywhere near this


def read_text(path: Path) -> str:
    """A configuration file's text: a regular file (a symlink to one is fine) of at
    most ``MAX_FILE`` bytes. A FIFO, a device or a huge file is refused instead of
    blocking or exhausting the agent. Raises OSError or ValueError with the reason."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_FILE:
            raise ValueError(f"larger than {MAX_FILE // 1024} KiB")
        data = os.read(fd, MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        raise ValueError(f"larger than {MAX_FILE // 1024} KiB")
    return data.decode("utf-8")


def read_toml(path: Path, problems: list[Problem]) -> tuple[dict[str, Any], str] | None:
    try:
        text = read_text(path)
    except FileNotFoundError:
        problems.append(Problem(path, None, "file not found"))
        return None
    except OSError as exc:
        problems.append(Problem(path, None, f"cannot read: {exc.strerror or exc}"))
        return None
    except ValueError as exc:  # UnicodeDecodeError included
        problems.append(Problem(path, None, f"cannot read: {exc}"))
        return None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        problems.append(Problem(path, line, f"invalid TOML: {message}"))
        return None


def literal_choices(tp: Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal[...]`` field (or ``Literal[...] | None``)."""
    if get_origin(tp) is Literal:
        return tuple(str(a) for a in get_args(tp))
    for arg in get_args(tp):
        if get_origin(arg) is Literal:
            return tuple(str(a) for a in get_args(arg))
    return ()


def decode_table(
    raw: Any,
    cls: type[_T],
    path: Path,
    text: str,
    table: str | None,
    problems: list[Problem],
    *,
    past_unknown_keys: bool = False,
) -> _T | None:
    """Decode one table field by field so that every bad field is reported.
    ``past_unknown_keys``: when unknown keys are the only problems, still return
    the known fields decoded, so the caller's checks across fields report theirs
    too (the caller refuses the table: its problems grew)."""
    prefix = f"{table}." if table else ""
    if not isinstance(raw, dict):
        problems.append(Problem(path, line_of(text, None, table or ""), f"{table} must be a table"))
        return None
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    good: dict[str, Any] = {}
    ok = True
    for key, value in raw.items():
        spec = fields.get(key)
        if spec is None:
            known = ", ".join(sorted(fields))
            problems.append(
                Problem(
                    path, line_of(text, table, key), f"unknown key {prefix}{key} (known: {known})"
                )
            )
            ok = ok and past_unknown_keys
            continue
        try:
            good[key] = msgspec.convert(value, spec.type, dec_hook=dec_hook)
        except (msgspec.ValidationError, ValueError) as exc:
            detail = str(exc).replace(" - at `$`", "")
            choices = literal_choices(spec.type)
            if choices and isinstance(value, str):
                detail = f"{value!r} is not one of {', '.join(choices)}"
            problems.append(Problem(path, line_of(text, table, key), f"{prefix}{key}: {detail}"))
            ok = False
    if not ok:
        return None
    try:
        return msgspec.convert(good, cls, dec_hook=dec_hook)
    except (msgspec.ValidationError, ValueError):
        if not past_unknown_keys:
            raise
        return None  # a required field is among the unknown: said already
