"""Package diffs between two commits, from their `aptostree.packages` metadata alone.

Every commit carries its full package list as (name, version, architecture) tuples (see
`apt_ostree.keys.PACKAGES`), so comparing two commits never checks a tree out. Packages are
keyed by (name, architecture), as dpkg itself does for Multi-Arch: same packages, and a
package present for two architectures is two entries. Versions are compared with Debian's
ordering (`apt_pkg.version_compare`: epochs, `~` sorting before anything, revisions); two
version strings that compare equal (`1.0` and `1.0-0`) are no change.

The result is a `results.PackageDiff`; the CLI renders it (`apt_ostree/cli/render.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

from apt_ostree.aptpkg.dpkg import version_compare
from apt_ostree.system.results import Package, PackageChange, PackageDiff


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
