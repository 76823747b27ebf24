"""A tree's .pyc files, made to match the mtime 0 that libostree gives every deployed file."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from pathlib import Path

from apt_ostree.pycache import zero_source_mtimes


def _imported_x(folder: Path) -> str:
    """X of module `m` in `folder`, imported by a fresh Python that writes no bytecode."""
    argv = [sys.executable, "-B", "-c", "import m; print(m.X)"]
    env = {"PYTHONPATH": str(folder), "PATH": os.environ["PATH"]}
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout


def test_deployed_sources_use_their_bytecode_once_it_records_mtime_0(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("X = 1\n")
    compiled = py_compile.compile(str(source), doraise=True)  # timestamp mode, as py3compile
    assert compiled is not None
    pyc = Path(compiled)
    hashed = tmp_path / "__pycache__" / "h.cpython-313.pyc"
    hashed.write_bytes(b"\x00" * 4 + b"\x01\x00\x00\x00" + b"\x07" * 8)  # hash-based: kept
    # what a deployment has: the same source (same size, here other bytes to tell them apart)
    # with mtime 0
    source.write_text("X = 2\n")
    os.utime(source, (0, 0))
    assert _imported_x(tmp_path) == "2\n"  # the .pyc is stale: compiled again, every start
    assert zero_source_mtimes(tmp_path) == 1
    assert pyc.read_bytes()[8:12] == b"\0\0\0\0"
    assert _imported_x(tmp_path) == "1\n"  # the .pyc is used
    assert hashed.read_bytes()[8:16] == b"\x07" * 8
    assert zero_source_mtimes(tmp_path) == 0  # once
    source.write_text("X = 22\n")  # a changed size still invalidates it
    os.utime(source, (0, 0))
    assert _imported_x(tmp_path) == "22\n"
