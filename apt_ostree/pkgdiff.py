"""Package diffs between two commits, from their `aptostree.packages` metadata alone.

Every commit carries its full package list as (name, version, architecture) tuples (see
`apt_ostree.keys.PACKAGES`), so comparing two commits never checks a tree out. Packages are
keyed by (name, architecture), as dpkg itself does for Multi-Arch: same packages, and a
package present for two architectures is two entries. Versions are compared with Debian's
ordering (`apt_pkg.version_compare`: epochs, `~` sorting before anything, revisions); two
version strings that compare equal (`1.0` and `1.0-0`) are no change.

`render_diff` prints the block format of rpm-ostree's `db diff` and `upgrade --preview`, in
this order, each section only when it has entries, entries sorted by name then architecture:

    Upgraded:
      hello-aot 1.0 -> 1.1
    Downgraded:
      libfoo 2.0 -> 1.9
    Removed:
      foo-1.0
    Added:
      bar-2.0

Names are written `name:arch` (dpkg's spelling) wherever one name appears with several
architectures among the changes, so each line stays unambiguous. An empty diff renders as the
single line `No package changes.`.

`PackageDiff.to_json` is the `--json` form: `{"added": [...], "removed": [...], "upgraded":
[...], "downgraded": [...]}`, each item `{"name", "architecture", "old-version",
"new-version"}` with `null` for the side that does not exist.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from apt_ostree.aptpkg.dpkg import version_compare

NO_CHANGES = "No package changes."

Package = tuple[str, str, str]  # name, version, architecture


@dataclass(frozen=True)
class PackageChange:
    name: str
    old_version: str | None
    new_version: str | None
    architecture: str

    def to_json(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "old-version": self.old_version,
            "new-version": self.new_version,
        }


@dataclass(frozen=True)
class PackageDiff:
    added: tuple[PackageChange, ...] = ()
    removed: tuple[PackageChange, ...] = ()
    upgraded: tuple[PackageChange, ...] = ()
    downgraded: tuple[PackageChange, ...] = ()

    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.upgraded or self.downgraded)

    def to_json(self) -> dict[str, list[dict[str, str | None]]]:
        return {
            "added": [c.to_json() for c in self.added],
            "removed": [c.to_json() for c in self.removed],
            "upgraded": [c.to_json() for c in self.upgraded],
            "downgraded": [c.to_json() for c in self.downgraded],
        }


def _index(packages: Iterable[Package]) -> dict[tuple[str, str], str]:
    return {(name, arch): version for name, version, arch in packages}


def _sorted(changes: list[PackageChange]) -> tuple[PackageChange, ...]:
    return tuple(sorted(changes, key=lambda c: (c.name, c.architecture)))


def diff_packages(old: Iterable[Package], new: Iterable[Package]) -> PackageDiff:
    """What changed from the package list `old` to `new`."""
    before, after = _index(old), _index(new)
    added: list[PackageChange] = []
    removed: list[PackageChange] = []
    upgraded: list[PackageChange] = []
    downgraded: list[PackageChange] = []
    for (name, arch), version in after.items():
        if (name, arch) not in before:
            added.append(PackageChange(name, None, version, arch))
    for (name, arch), version in before.items():
        if (name, arch) not in after:
            removed.append(PackageChange(name, version, None, arch))
            continue
        new_version = after[(name, arch)]
        order = version_compare(version, new_version)
        if order < 0:
            upgraded.append(PackageChange(name, version, new_version, arch))
        elif order > 0:
            downgraded.append(PackageChange(name, version, new_version, arch))
    return PackageDiff(
        added=_sorted(added),
        removed=_sorted(removed),
        upgraded=_sorted(upgraded),
        downgraded=_sorted(downgraded),
    )


def _names(diff: PackageDiff) -> dict[PackageChange, str]:
    changes = diff.upgraded + diff.downgraded + diff.removed + diff.added
    counts = Counter(c.name for c in changes)
    return {c: f"{c.name}:{c.architecture}" if counts[c.name] > 1 else c.name for c in changes}


def render_diff(diff: PackageDiff) -> list[str]:
    """Human lines in rpm-ostree's block format (see the module docstring)."""
    if diff.is_empty():
        return [NO_CHANGES]
    names = _names(diff)
    lines: list[str] = []
    for title, changes in (("Upgraded", diff.upgraded), ("Downgraded", diff.downgraded)):
        if changes:
            lines.append(f"{title}:")
            lines += [f"  {names[c]} {c.old_version} -> {c.new_version}" for c in changes]
    if diff.removed:
        lines.append("Removed:")
        lines += [f"  {names[c]}-{c.old_version}" for c in diff.removed]
    if diff.added:
        lines.append("Added:")
        lines += [f"  {names[c]}-{c.new_version}" for c in diff.added]
    return lines


def render_package_list(packages: Iterable[Package]) -> list[str]:
    """`name version arch` per package, sorted by name, architecture, version."""
    rows = sorted(packages, key=lambda p: (p[0], p[2], p[1]))
    return [f"{name} {version} {arch}" for name, version, arch in rows]
