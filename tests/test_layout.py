"""The code's layout holds: the CLI and the daemon depend on the core, never the reverse; one
module imports each foreign binding; the daemon's client needs neither python-apt nor
libostree; no module grows past the house limit; no docstring cites a file outside the
repository."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "apt_ostree"
MAX_LINES = 800


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize(
    ("below", "never"),
    [
        ("apt_ostree.system", ("apt_ostree.cli", "apt_ostree.daemon")),
        ("apt_ostree.daemon", ("apt_ostree.cli",)),
        ("apt_ostree.layering", ("apt_ostree.cli", "apt_ostree.daemon", "apt_ostree.system")),
        ("apt_ostree.compose", ("apt_ostree.cli", "apt_ostree.daemon", "apt_ostree.system")),
        ("apt_ostree.aptpkg", ("apt_ostree.treefile", "apt_ostree.system", "apt_ostree.cli")),
    ],
)
def test_imports_go_one_way(below: str, never: tuple[str, ...]) -> None:
    bad = [
        f"{_name(p)} imports {m}"
        for p in _modules()
        if _name(p).startswith(below)
        for m in sorted(_imports(p))
        if m.startswith(never)
    ]
    assert not bad, bad


@pytest.mark.parametrize(
    ("binding", "home"),
    [("apt_pkg", "apt_ostree.aptpkg"), ("gi.repository.OSTree", "apt_ostree.ostree")],
)
def test_one_adapter_per_binding(binding: str, home: str) -> None:
    users = [
        _name(p)
        for p in _modules()
        if any(m == binding or m.startswith(binding + ".") for m in _imports(p))
    ]
    assert users and all(u.startswith(home) for u in users), users


def test_the_daemon_client_needs_neither_apt_nor_libostree() -> None:
    code = (
        "import sys, apt_ostree.cli.main, apt_ostree.daemon.client;"
        "bad = [m for m in ('apt_pkg', 'apt', 'gi.repository.OSTree') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_no_module_is_over_the_limit() -> None:
    long = {_name(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_nothing_cites_files_outside_the_repository() -> None:
    outside = re.compile(r"(\.\./)?\bshared/(notes|DESIGN|STYLE)")
    files = [*_modules(), *ROOT.glob("docs/*.md"), ROOT / "README.md"]
    bad = [str(p.relative_to(ROOT)) for p in files if outside.search(p.read_text())]
    assert not bad, bad
