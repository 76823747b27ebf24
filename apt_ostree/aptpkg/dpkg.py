"""A tree's package state as dpkg and apt record it: the dpkg status, version order, and apt's
extended_states (which packages were installed only as dependencies).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import apt_pkg

from apt_ostree.aptpkg.host import init
from apt_ostree.aptpkg.root import ResolvedPackage


def installed_packages(status_file: Path) -> list[tuple[str, str, str]]:
    """(name, version, architecture) of every installed package in a dpkg status file."""
    init()
    out = []
    with apt_pkg.TagFile(str(status_file)) as tags:
        for section in tags:
            if section.get("Status", "").split()[-1:] != ["installed"]:
                continue
            out.append((section["Package"], section["Version"], section.get("Architecture", "")))
    return sorted(out)


def version_compare(a: str, b: str) -> int:
    init()
    return int(apt_pkg.version_compare(a, b))


def auto_installed_entry(name: str, architecture: str) -> str:
    """One package's entry in apt's extended_states: installed only as a dependency."""
    return f"Package: {name}\nArchitecture: {architecture}\nAuto-Installed: 1\n"


def render_extended_states(packages: Sequence[ResolvedPackage]) -> str:
    """apt's extended_states for a tree of `packages`: the ones installed only as dependencies
    marked Auto-Installed (`apt-mark showauto`), sorted."""
    return "".join(
        auto_installed_entry(p.name, p.architecture) + "\n"
        for p in sorted(packages, key=lambda p: (p.name, p.architecture))
        if p.auto
    )
