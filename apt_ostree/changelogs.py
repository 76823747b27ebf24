"""`db diff --changelogs`: what Debian's changelogs say about the packages a diff upgrades, as
apt-listchanges shows it before an upgrade.

A package's changelog is read from the new commit itself (no checkout): the file Debian
policy puts in `/usr/share/doc/PACKAGE/` (`changelog.Debian.gz`, or `changelog.gz` for a
native package; a binNMU's `changelog.Debian.ARCH.gz` first), the folder being often a link
to the source package's other binary. The entries shown are those newer than the old
version, up to the new one, in the changelog's order (newest first). An image composed with
`documentation: false` has no changelogs: the package is then left out.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Mapping

from apt_ostree import ostree
from apt_ostree.aptpkg.dpkg import version_compare
from apt_ostree.system.results import PackageChange, PackageDiff

# an entry's first line: `source (version) distributions; urgency=...`, at column 0
_HEADER = re.compile(r"^(?P<source>[a-z0-9][a-z0-9+.-]*) \((?P<version>[^ ()]+)\) ")
_NAMES = ("changelog.Debian.{arch}.gz", "changelog.Debian.gz", "changelog.gz")


def entries(text: str) -> list[tuple[str, str]]:
    """The changelog's entries as (version, text), newest first: each from its header line
    to its ` -- maintainer  date` line; what lies outside entries (an editor's trailer, an
    old changelog's preamble) is dropped."""
    found: list[tuple[str, list[str]]] = []
    inside = False
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            found.append((m.group("version"), [line]))
            inside = True
        elif inside:
            found[-1][1].append(line)
            inside = not line.startswith(" -- ")
    return [(version, "\n".join(lines).strip("\n")) for version, lines in found]


def between(text: str, old: str, new: str) -> str:
    """The entries of `text` with old < version <= new, newest first, one blank line apart."""
    chosen = [
        body
        for version, body in entries(text)
        if version_compare(version, old) > 0 and version_compare(version, new) <= 0
    ]
    return "\n\n".join(chosen)


def read_changelog(repo: ostree.Repo, checksum: str, name: str, arch: str) -> str | None:
    """The package's changelog in commit `checksum` (binNMU entries first), or None."""
    texts: list[str] = []
    for pattern in _NAMES:
        data = repo.read_file(checksum, f"/usr/share/doc/{name}/{pattern.format(arch=arch)}")
        if data is None:
            continue
        try:
            texts.append(gzip.decompress(data).decode("utf-8", errors="replace"))
        except (OSError, EOFError, zlib.error):
            continue  # not a gzip file: not a changelog we can read
        if pattern != _NAMES[0]:
            break  # the binNMU changelog comes on top of the package's own
    return "\n".join(texts) if texts else None


def changelogs(repo: ostree.Repo, new_checksum: str, diff: PackageDiff) -> Mapping[str, str]:
    """Package name -> the new entries of its changelog, for each upgraded package that has a
    changelog in the new commit with entries newer than its old version."""
    found: dict[str, str] = {}
    for change in diff.upgraded:
        text = _changes(repo, new_checksum, change)
        if text:
            found[change.name] = text
    return found


def _changes(repo: ostree.Repo, checksum: str, change: PackageChange) -> str:
    assert change.old_version is not None and change.new_version is not None
    log = read_changelog(repo, checksum, change.name, change.architecture)
    return between(log, change.old_version, change.new_version) if log else ""
