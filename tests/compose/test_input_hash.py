"""The compose input hash: what decides that a compose makes no new commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from apt_ostree import accounts, treefile
from apt_ostree.compose import tree


def test_input_hash_covers_the_files_compose_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new apt-ostree whose boot-time accounts script differs must make a new commit
    from the same treefile and packages (the old script cost 16 s of every boot)."""
    path = tmp_path / "t.yaml"
    path.write_text("ref: test/os\nsuite: bookworm\npackages: [hello]\n")
    loaded = treefile.load(path)
    before = tree.input_hash(loaded, [])
    assert tree.input_hash(loaded, []) == before
    monkeypatch.setattr(accounts, "SCRIPT_TEXT", accounts.SCRIPT_TEXT + "# changed\n")
    assert tree.input_hash(loaded, []) != before
