"""The state directory: one agent at a time, a stable agent id, a corrupt journal
moved aside."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dyncreds import statedir


def test_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    fd = statedir.lock(tmp_path)
    try:
        with pytest.raises(statedir.StateError, match=f"pid {os.getpid()}"):
            statedir.lock(tmp_path)
    finally:
        os.close(fd)
    os.close(statedir.lock(tmp_path))  # free again once the holder is gone


def test_agent_ids_are_random_and_kept(tmp_path: Path) -> None:
    """Two state dirs on one machine (or two clones sharing /etc/machine-id) get
    two ids; an id, once made, is what the state dir keeps."""
    state, other = tmp_path / "state", tmp_path / "other"
    statedir.prepare(state)
    statedir.prepare(other)
    first = statedir.agent_id(state)
    assert len(first) == 16 and statedir.agent_id(other) != first
    assert statedir.agent_id(state) == first
    assert (state / statedir.ID_FILE).stat().st_mode & 0o077 == 0
    (state / statedir.ID_FILE).unlink()
    assert statedir.agent_id(state) != first  # nothing derives it from the machine


def test_an_existing_agent_id_is_kept(tmp_path: Path) -> None:
    (tmp_path / statedir.ID_FILE).write_text("0123456789abcdef\n")
    assert statedir.agent_id(tmp_path) == "0123456789abcdef"


def test_a_corrupt_journal_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite3").write_bytes(b"not a database" * 200)
    journal, aside = statedir.open_journal(tmp_path)
    assert aside is not None and aside.read_bytes().startswith(b"not a database")
    assert journal.count() == 0


def test_a_state_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(statedir.StateError, match="cannot create the state directory"):
        statedir.prepare(tmp_path / "state")
