"""apt sources: the `RepoEntry` of a treefile or a tree, read from sources files and rendered.

A tree's sources are read as apt reads them (one-line `*.list` and deb822 `*.sources`); what
a scratch root is given is always deb822, with inline keys in place.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import apt_pkg

from apt_ostree.aptpkg.host import init
from apt_ostree.errors import PackageError

HOST_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


@dataclass(frozen=True)
class RepoEntry:
    """One deb822-style apt source (of a treefile, a tree or the host)."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def render_sources(entries: Iterable[RepoEntry]) -> str:
    """deb822 text for `entries` (inline key blocks are indented as deb822 requires)."""
    stanzas = []
    for e in entries:
        lines = [
            "Types: deb",
            f"URIs: {' '.join(e.uris)}",
            f"Suites: {' '.join(e.suites)}",
            f"Components: {' '.join(e.components)}",
        ]
        if e.signed_by:
            key = e.signed_by.strip().splitlines()
            lines.append("Signed-By: " + "\n ".join(k if k.strip() else "." for k in key))
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas)


def _suite_matches(suite: str, wanted: str) -> bool:
    return suite == wanted or suite.startswith((f"{wanted}-", f"{wanted}/"))


def _parse_one_line(line: str) -> RepoEntry | None:
    m = re.match(
        r"^deb\s+(\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s*(?P<c>.*)$", line
    )
    if not m:
        return None
    opts = dict(o.split("=", 1) for o in (m.group("opts") or "").split() if "=" in o)
    return RepoEntry(
        uris=(m.group("uri"),),
        suites=(m.group("suite"),),
        components=tuple(m.group("c").split()),
        signed_by=opts.get("signed-by"),
    )


def _parse_deb822(path: Path) -> list[RepoEntry]:
    entries = []
    with apt_pkg.TagFile(str(path)) as tags:
        for section in tags:
            if "deb" not in section.get("Types", "").split():
                continue
            if section.get("Enabled", "yes").lower() == "no":
                continue
            entries.append(
                RepoEntry(
                    uris=tuple(section.get("URIs", "").split()),
                    suites=tuple(section.get("Suites", "").split()),
                    components=tuple(section.get("Components", "").split()),
                    signed_by=section.get("Signed-By"),
                )
            )
    return entries


def read_sources(sources_list: Path, sources_parts: Path) -> list[RepoEntry]:
    """The `deb` entries of a sources.list and a sources.list.d (*.list and *.sources)."""
    init()
    files = [sources_list] if sources_list.is_file() else []
    if sources_parts.is_dir():
        files += sorted(
            f for f in sources_parts.iterdir() if f.suffix in (".list", ".sources") and f.is_file()
        )
    entries: list[RepoEntry] = []
    for f in files:
        if f.suffix == ".sources":
            entries += _parse_deb822(f)
        else:
            for line in f.read_text().splitlines():
                parsed = _parse_one_line(line.strip())
                entries += [parsed] if parsed else []
    return entries


def read_host_sources(suite: str) -> list[RepoEntry]:
    """The host's apt sources for `suite` (and its -updates, -security, ... companions).

    Sources for other suites (third-party repositories of the host) are left out: they
    are not part of a Debian image, and may not be reachable from where it is composed.
    """
    out = []
    for e in read_sources(*HOST_SOURCES):
        suites = tuple(s for s in e.suites if _suite_matches(s, suite))
        if suites:
            out.append(RepoEntry(e.uris, suites, e.components, e.signed_by))
    if not out:
        raise PackageError(
            f"the host's apt sources have no entry for suite '{suite}': "
            "give the treefile a 'repos' list"
        )
    return out


# ---------------------------------------------------------------------------------------------
# packages


def sources_key(entries: Iterable[RepoEntry], architecture: str) -> str:
    """A short stable name for a set of sources (names the apt state folder in the cache)."""
    text = render_sources(entries) + architecture
    return hashlib.sha256(text.encode()).hexdigest()[:16]
