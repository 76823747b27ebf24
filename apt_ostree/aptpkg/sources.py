"""apt sources: the `RepoEntry` of a treefile or a tree, read from sources files and rendered.

A tree's sources are read as apt reads them: one-line `*.list` files with python3-apt's
parser (`aptsources.sourceslist.SourceEntry`: comments, disabled lines, trailing `# ...`),
deb822 `*.sources` with apt's own tag file parser. What a scratch root is given is always
deb822, with inline keys in place.

The host's sources (`read_host_sources`, for a treefile without `repos`) are taken as a stock
Debian machine has them:
- without `Signed-By`, an entry is verified with the keys apt itself trusts for it
  (`/etc/apt/trusted.gpg` and `trusted.gpg.d`), or for Debian's own archive with Debian's
  archive keyring; with neither, the error names the file and line;
- a suite the host does not name (`suite: trixie` on a bookworm host) reuses the host's
  entries for Debian's archive with the release part of each suite replaced (`bookworm`,
  `bookworm-updates`, `bookworm-security` -> `trixie`, `trixie-updates`, `trixie-security`):
  the same mirror, and Debian's keyring, which carries the keys of the next releases too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import apt_pkg
from aptsources.sourceslist import SourceEntry

from apt_ostree.aptpkg.host import host_codename, init
from apt_ostree.errors import PackageError

# the names of Debian's releases, and the aliases of its suites: what makes an entry one of
# Debian's own archive (its security archive included)
DEBIAN_RELEASES = frozenset(
    {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid"}
    | {"oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental"}
)


@dataclass(frozen=True)
class HostApt:
    """Where a machine keeps its apt sources and the keys apt trusts (this one's by default;
    a test gives a folder)."""

    root: Path = Path("/")
    codename: str | None = None  # its Debian release (default: /etc/os-release's)

    @property
    def sources(self) -> tuple[Path, Path]:
        return self.root / "etc/apt/sources.list", self.root / "etc/apt/sources.list.d"

    def trusted_keyrings(self) -> list[Path]:
        """What apt trusts for a source without Signed-By: trusted.gpg and trusted.gpg.d."""
        single, folder = self.root / "etc/apt/trusted.gpg", self.root / "etc/apt/trusted.gpg.d"
        found = [single] if single.is_file() else []
        if folder.is_dir():
            found += sorted(f for f in folder.iterdir() if f.suffix in (".gpg", ".asc"))
        return found

    @property
    def debian_keyring(self) -> Path:
        return self.root / "usr/share/keyrings/debian-archive-keyring.gpg"

    def release(self) -> str:
        return self.codename or host_codename()


@dataclass(frozen=True)
class RepoEntry:
    """One deb822-style apt source (of a treefile, a tree or the host)."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None
    where: str = field(default="", compare=False)  # FILE:LINE it was read from, for errors
    # a companion suite carried over to a release the host does not name (`forky-updates`):
    # the archive may have no such suite (testing has no updates suite), which is no error
    optional: bool = field(default=False, compare=False)


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


def _release(suite: str) -> str:
    """The release part of a suite: `bookworm-security` -> `bookworm`, `sid/updates` -> `sid`."""
    return re.split(r"[-/]", suite, maxsplit=1)[0]


def _suite_matches(suite: str, wanted: str) -> bool:
    return suite == wanted or suite.startswith((f"{wanted}-", f"{wanted}/"))


# one-line options: `[arch=amd64 signed-by=/usr/share/keyrings/x.gpg]` (python3-apt 2.6 takes
# only arch= and trusted= and marks anything else, signed-by= included, invalid: the block is
# read here, the rest of the line by python3-apt)
_OPTIONS = re.compile(r"^(\s*#?\s*deb(?:-src)?\s+)\[([^\]]*)\]\s*")


def _parse_one_line(line: str, where: str) -> RepoEntry | None:
    options: dict[str, str] = {}
    m = _OPTIONS.match(line)
    if m:
        for option in m.group(2).split():
            key, sep, value = option.partition("=")
            if sep and not key.endswith(("+", "-")):
                options[key] = value
        line = m.group(1) + line[m.end() :]
    entry = SourceEntry(line)
    if entry.invalid or entry.disabled or entry.type != "deb":
        return None
    return RepoEntry(
        uris=(entry.uri,),
        suites=(entry.dist,),
        components=tuple(entry.comps),
        signed_by=options.get("signed-by"),
        where=where,
    )


def _parse_deb822(path: Path) -> list[RepoEntry]:
    """A `*.sources` file's stanzas; its comment lines (`#` first, also inside a stanza, as
    sources.list(5) allows) are dropped first: python3-apt's TagFile would take one for the
    start of the next field's name."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    stanzas = [s for s in re.split(r"\n[ \t]*\n", "\n".join(lines)) if s.strip()]
    entries = []
    for number, text in enumerate(stanzas, 1):
        section = apt_pkg.TagSection(text.strip() + "\n")
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
                where=f"{path} (stanza {number})",
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
            continue
        for number, line in enumerate(f.read_text().splitlines(), 1):
            parsed = _parse_one_line(line, f"{f}:{number}")
            entries += [parsed] if parsed else []
    return entries


def is_debian_archive(entry: RepoEntry) -> bool:
    return bool(entry.suites) and all(_release(s) in DEBIAN_RELEASES for s in entry.suites)


def with_keys(entry: RepoEntry, host: HostApt) -> RepoEntry:
    """`entry` with the keys to verify it by: its Signed-By, else what apt would trust."""
    if entry.signed_by:
        return entry
    keyrings = host.trusted_keyrings()
    if not keyrings and is_debian_archive(entry) and host.debian_keyring.is_file():
        keyrings = [host.debian_keyring]
    if not keyrings:
        raise PackageError(
            f"{entry.where}: {' '.join(entry.uris)} {' '.join(entry.suites)} has no Signed-By"
            f" and apt trusts no keys for it ({host.root / 'etc/apt/trusted.gpg.d'} is empty):"
            " add signed-by=KEYRING to it, or give the treefile a 'repos' list"
        )
    return replace(entry, signed_by=" ".join(map(str, keyrings)))


def _for_suite(entries: Iterable[RepoEntry], suite: str) -> list[RepoEntry]:
    out = []
    for e in entries:
        suites = tuple(s for s in e.suites if _suite_matches(s, suite))
        if suites:
            out.append(replace(e, suites=suites))
    return out


def _other_release(entries: Iterable[RepoEntry], suite: str, host: str) -> list[RepoEntry]:
    """The host's entries of Debian's archive for its own release `host`, moved to `suite`."""
    out = []
    for e in _for_suite((e for e in entries if is_debian_archive(e)), host):
        for s in e.suites:
            moved = suite + s.removeprefix(host)
            out.append(replace(e, suites=(moved,), optional=moved != suite))
    return out


def read_host_sources(suite: str, host: HostApt = HostApt()) -> list[RepoEntry]:  # noqa: B008
    """The host's apt sources for `suite` (and its -updates, -security, ... companions), each
    with the keys to verify it by.

    Sources for other suites (third-party repositories of the host) are left out: they are
    not part of a Debian image, and may not be reachable from where it is composed. A
    release of Debian the host does not name is found on the host's Debian mirror.
    """
    entries = read_sources(*host.sources)
    out = _for_suite(entries, suite)
    if not out and _release(suite) in DEBIAN_RELEASES:
        out = _other_release(entries, suite, host.release())
    if not out:
        raise PackageError(
            f"the host's apt sources have no entry for suite '{suite}' (nor for Debian's"
            " archive to find it on): give the treefile a 'repos' list"
        )
    return [with_keys(e, host) for e in out]


# ---------------------------------------------------------------------------------------------
# packages


def sources_key(entries: Iterable[RepoEntry], architecture: str) -> str:
    """A short stable name for a set of sources (names the apt state folder in the cache)."""
    text = render_sources(entries) + architecture
    return hashlib.sha256(text.encode()).hexdigest()[:16]
