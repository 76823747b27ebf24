"""The one adapter to python3-apt (`apt_pkg`): sources, index updates, resolution, downloads.

apt's configuration is global to a process. The host's configuration is read once (it holds
the machine's Acquire settings: proxies, validity checks), then every path that names state
(`Dir::State`, `Dir::Cache`, `Dir::Etc`, the dpkg status) is pointed at the target's own
scratch root before each operation: nothing here reads or writes the host's package state.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import apt_pkg
from apt.progress.base import AcquireProgress

from apt_ostree.errors import PackageError
from apt_ostree.progress import Progress

log = logging.getLogger(__name__)

_initialized = False
# apt_pkg.PRI_* (the stubs lack them): lower is more important
_PRI_REQUIRED, _PRI_IMPORTANT, _PRI_STANDARD = 1, 2, 3
HOST_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def _init() -> None:
    global _initialized
    if not _initialized:
        apt_pkg.init_config()
        apt_pkg.init_system()
        _initialized = True


def native_architecture() -> str:
    _init()
    return str(apt_pkg.config.find("APT::Architecture"))


def host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise PackageError("cannot tell the host's release: no VERSION_CODENAME in /etc/os-release")


# ---------------------------------------------------------------------------------------------
# sources


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
    _init()
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


@dataclass(frozen=True, order=True)
class ResolvedPackage:
    name: str
    version: str
    architecture: str
    sha256: str = field(compare=False)
    size: int = field(compare=False)
    filename: str = field(compare=False)  # path in the archive, as in Packages
    auto: bool = field(default=False, compare=False)  # installed as a dependency only

    @property
    def deb_name(self) -> str:
        """The file name apt gives the downloaded .deb."""
        version = self.version.replace(":", "%3a")
        return f"{self.name}_{version}_{self.architecture}.deb"


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


class Variant(StrEnum):
    """The base package set, named as mmdebstrap's variants."""

    CUSTOM = "custom"  # only `packages`
    ESSENTIAL = "essential"  # Essential: yes
    APT = "apt"  # essential + apt
    REQUIRED = "required"  # essential + Priority: required + apt
    MINBASE = "minbase"  # the same as required, debootstrap's name
    IMPORTANT = "important"  # required + Priority: important
    STANDARD = "standard"  # important + Priority: standard


@dataclass(frozen=True)
class Request:
    """What to install into an empty root."""

    variant: Variant
    packages: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    recommends: bool = False
    suite: str | None = None  # whose Essential/Priority fields define the variant's base set
    locked: Mapping[str, str] | None = None  # name -> exact version (a lockfile)


LOCAL_ORIGIN = "apt-ostree-local"  # the Origin of the repository holding local .debs


@dataclass(frozen=True)
class LocalDeb:
    """A .deb given as a file, with its control stanza (as `dpkg-deb --field` prints it)."""

    path: Path
    name: str
    version: str
    architecture: str
    control: str = field(repr=False)
    sha256: str = field(repr=False)
    size: int = field(repr=False)

    @classmethod
    def read(cls, path: Path, control: str) -> LocalDeb:
        _init()
        control = control.strip("\n")
        try:
            section = apt_pkg.TagSection(control + "\n")
        except (SystemError, ValueError) as e:
            raise PackageError(f"{path}: unreadable control fields: {_one_line(str(e))}") from e
        missing = [f for f in ("Package", "Version", "Architecture") if not section.get(f)]
        if missing:
            raise PackageError(f"{path}: not a binary package (no {', '.join(missing)} field)")
        return cls(
            path=path,
            name=section["Package"],
            version=section["Version"],
            architecture=section["Architecture"],
            control=control,
            sha256=_file_digest(path),
            size=path.stat().st_size,
        )

    @property
    def file_name(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"

    @property
    def stanza(self) -> str:
        """Its Packages stanza in the local repository."""
        return (
            f"{self.control}\nFilename: ./{self.file_name}\nSize: {self.size}\n"
            f"SHA256: {self.sha256}\n"
        )


@dataclass(frozen=True)
class LayerMarks:
    """What to change on a base tree, in apt's terms (names, versions, local .debs)."""

    packages: tuple[str, ...] = ()  # to install: none may be in the base
    local: tuple[LocalDeb, ...] = ()
    remove: tuple[str, ...] = ()  # base packages
    replace: tuple[str, ...] = ()  # NAME=VERSION of base packages, from the repositories
    replace_local: tuple[LocalDeb, ...] = ()
    recommends: bool = False
    allow_inactive: bool = False  # requested names the base has are kept, not refused


@dataclass(frozen=True)
class LayerResolution:
    install: tuple[ResolvedPackage, ...]  # from the repositories (to download), sorted
    local: tuple[LocalDeb, ...]  # local .debs to install
    remove: tuple[str, ...]
    inactive: tuple[str, ...]  # requested names the base already has


class _Acquire(AcquireProgress):
    """Feeds apt's download progress to a Progress and collects failures."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self.failures: list[str] = []
        self.started = time.monotonic()

    def fail(self, item: Any) -> None:
        owner = item.owner
        if owner.status not in (owner.STAT_DONE, owner.STAT_IDLE) and owner.error_text:
            self.failures.append(f"{item.description}: {owner.error_text}")

    def pulse(self, owner: Any) -> bool:
        if self.current_bytes and self.total_bytes:
            self.progress.download(
                int(self.current_bytes), int(self.total_bytes), float(self.current_cps)
            )
        return True

    def stop(self) -> None:
        if self.fetched_bytes:
            elapsed = max(time.monotonic() - self.started, 1e-3)
            self.progress.download(
                int(self.fetched_bytes),
                int(self.fetched_bytes),
                self.fetched_bytes / elapsed,
                final=True,
            )


class AptRoot:
    """An apt state folder for one set of sources: lists, caches and a dpkg status.

    The status is empty (compose), or a copy of a base tree's with every package on hold
    (`status`, client layering): apt's auto-install never changes a held package, so only
    explicit marks (override remove/replace) touch the base.
    """

    def __init__(
        self,
        root: Path,
        repos: Sequence[RepoEntry],
        *,
        archives: Path,
        architecture: str,
        status: Path | None = None,
        trusted: Sequence[Path] = (),
        foreign: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.repos = tuple(repos)
        self.archives = archives
        self.architecture = architecture
        self.base_status = status
        self.trusted = tuple(trusted)  # keyrings for trusted.gpg.d (sources without Signed-By)
        self.foreign = tuple(foreign)  # dpkg's foreign architectures (multiarch)
        self.sources_text = render_sources(repos)
        self._cache: Any = None
        self._depcache: Any = None

    @property
    def sources_file(self) -> Path:
        return self.root / "etc/apt/sources.list.d/image.sources"

    @property
    def lists_dir(self) -> Path:
        return self.root / "var/lib/apt/lists"

    def _prepare(self) -> None:
        for d in (
            "etc/apt/sources.list.d",
            "etc/apt/preferences.d",
            "etc/apt/apt.conf.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/lib/dpkg",
            "var/cache/apt",
        ):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.archives / "partial").mkdir(parents=True, exist_ok=True)
        self._write_status(self.root / "var/lib/dpkg/status")
        _sync_dir(
            self.root / "etc/apt/trusted.gpg.d",
            {f"{_file_digest(k)[:16]}{k.suffix}": k for k in self.trusted},
        )
        if not self.sources_file.exists() or self.sources_file.read_text() != self.sources_text:
            self.sources_file.write_text(self.sources_text)
        self._configure()

    def _write_status(self, status: Path) -> None:
        if self.base_status is None:
            if not status.exists():
                status.touch()
            return
        # hold: dpkg's selection state that apt's resolver never overrides by itself
        text = _HELD.sub("Status: hold ok installed", self.base_status.read_text())
        # rewritten only when it changed: apt's pkgcache.bin stays valid on its mtime
        if not status.exists() or status.read_text() != text:
            status.write_text(text)

    def _configure(self, *, recommends: bool = False) -> None:
        _init()
        c = apt_pkg.config
        r = str(self.root)
        settings = {
            "Dir": r,
            "Dir::State": f"{r}/var/lib/apt",
            "Dir::State::Lists": f"{r}/var/lib/apt/lists",
            "Dir::State::status": f"{r}/var/lib/dpkg/status",
            "Dir::State::extended_states": f"{r}/var/lib/apt/extended_states",
            "Dir::Cache": f"{r}/var/cache/apt",
            "Dir::Cache::pkgcache": f"{r}/var/cache/apt/pkgcache.bin",
            "Dir::Cache::srcpkgcache": f"{r}/var/cache/apt/srcpkgcache.bin",
            "Dir::Cache::archives": str(self.archives),
            "Dir::Etc": f"{r}/etc/apt",
            "Dir::Etc::sourcelist": f"{r}/etc/apt/sources.list",
            "Dir::Etc::sourceparts": f"{r}/etc/apt/sources.list.d",
            "Dir::Etc::preferences": f"{r}/etc/apt/preferences",
            "Dir::Etc::preferencesparts": f"{r}/etc/apt/preferences.d",
            # Only each source's Signed-By keys are trusted, never the host's keyrings.
            "Dir::Etc::trusted": f"{r}/etc/apt/trusted.gpg",
            "Dir::Etc::trustedparts": f"{r}/etc/apt/trusted.gpg.d",
            "APT::Architecture": self.architecture,
            "APT::Install-Recommends": "true" if recommends else "false",
            "APT::Install-Suggests": "false",
            "Acquire::AllowInsecureRepositories": "false",
            "APT::Get::AllowUnauthenticated": "false",
            "Debug::NoLocking": "true",
            # the scratch roots are root's own: apt's _apt sandbox user cannot write there
            "APT::Sandbox::User": "root",
            # Uncompressed lists: record lookups in compressed ones cost ~5 ms each
            "Acquire::GzipIndexes": "false",
        }
        for key, value in settings.items():
            c.set(key, value)
        c.clear("APT::Architectures")
        for arch in (self.architecture, *self.foreign):
            c.set("APT::Architectures::", arch)
        apt_pkg.init_system()

    @property
    def _updated_stamp(self) -> Path:
        # beside the lists, not in them: apt's list cleanup deletes files it does not know
        return self.root / "var/lib/apt/apt-ostree-updated"

    def update(self, progress: Progress) -> None:
        """Fetch the sources' indices, verifying their signatures (apt's own checks)."""
        self._prepare()
        sources = apt_pkg.SourceList()
        sources.read_main_list()
        self._update(sources, progress)
        self._updated_stamp.touch()

    def lists_age(self) -> float | None:
        """Seconds since the last successful `update()` of these sources; None if never."""
        try:
            return max(0.0, time.time() - self._updated_stamp.stat().st_mtime)
        except FileNotFoundError:
            return None

    def update_local(self, progress: Progress) -> None:
        """Index the local packages' repository alone (no network; other lists are kept)."""
        if not self.local_list.exists():
            return
        self._prepare()
        c = apt_pkg.config
        cleanup = c.find("APT::Get::List-Cleanup", "true")
        empty = self.root / "etc/apt/sources.local.d"
        empty.mkdir(exist_ok=True)
        c.set("Dir::Etc::sourcelist", str(self.local_list))
        c.set("Dir::Etc::sourceparts", str(empty))
        # apt deletes the lists of sources it was not asked about unless told not to
        c.set("APT::Get::List-Cleanup", "false")
        try:
            sources = apt_pkg.SourceList()
            sources.read_main_list()
            self._update(sources, progress)
        finally:
            c.set("APT::Get::List-Cleanup", cleanup)
            self._configure()

    def check_lists(self) -> None:
        """PackageError unless every source has indices in the cache (to work offline)."""
        self._prepare()
        sources = apt_pkg.SourceList()
        sources.read_main_list()
        missing = [
            f"{m.uri} {m.dist}" for m in sources.list if not any(i.exists for i in m.index_files)
        ]
        if missing:
            raise PackageError(
                "no package indices in the cache for " + ", ".join(missing) + ": refresh them first"
            )

    def _update(self, sources: Any, progress: Progress) -> None:
        acquire = _Acquire(progress)
        try:
            cache = apt_pkg.Cache(None)
            ok = cache.update(acquire, sources, 0)
        except SystemError as e:
            raise PackageError(f"updating the package indices failed: {_apt_errors(str(e))}") from e
        self._check_update(sources, acquire, ok)
        self._cache = None

    def _check_update(self, sources: Any, acquire: _Acquire, ok: object) -> None:
        untrusted = [f"{m.uri} {m.dist}" for m in sources.list if not m.is_trusted]
        if acquire.failures:
            raise PackageError("cannot fetch the package indices: " + "; ".join(acquire.failures))
        if untrusted:
            raise PackageError("repository is not signed by a trusted key: " + ", ".join(untrusted))
        if not ok:
            raise PackageError("updating the package indices failed")
        missing = [
            f"{m.uri} {m.dist}" for m in sources.list if not any(i.exists for i in m.index_files)
        ]
        if missing:
            raise PackageError("no package index could be read from: " + ", ".join(missing))

    def _open(self, recommends: bool) -> tuple[Any, Any]:
        self._prepare()
        self._configure(recommends=recommends)
        try:
            cache = apt_pkg.Cache(None)
        except SystemError as e:
            raise PackageError(f"reading the package indices failed: {_one_line(str(e))}") from e
        self._cache = cache
        self._depcache = apt_pkg.DepCache(cache)
        return cache, self._depcache

    def resolve(self, request: Request) -> list[ResolvedPackage]:
        """The exact closure of `request`, sorted by name; PackageError names every problem."""
        self._prepare()
        self._write_excludes(request.exclude)
        cache, depcache = self._open(request.recommends)
        # one action group: apt's mark-and-sweep runs once at the end, not per mark_install
        group = apt_pkg.ActionGroup(depcache)
        try:
            _Resolver(cache, depcache, request).run()
        finally:
            group.release()  # type: ignore[attr-defined]  # missing from the stubs
        return self._marked(cache, depcache)

    def _write_excludes(self, names: Sequence[str]) -> None:
        # apt's own way to make a package uninstallable: a negative pin priority, so the
        # resolver picks another alternative where there is one (apt_preferences(5))
        pref = self.root / "etc/apt/preferences.d/apt-ostree-exclude.pref"
        if not names:
            pref.unlink(missing_ok=True)
            return
        pref.write_text(
            "".join(f"Package: {n}\nPin: version *\nPin-Priority: -1\n\n" for n in sorted(names))
        )

    def _marked(self, cache: Any, depcache: Any) -> list[ResolvedPackage]:
        records = apt_pkg.PackageRecords(cache)
        out = []
        for pkg in cache.packages:
            if not _installs(depcache, pkg):
                continue
            ver = depcache.get_candidate_ver(pkg)
            records.lookup(ver.file_list[0])
            sha256 = records.hashes.find("SHA256")
            out.append(
                ResolvedPackage(
                    name=pkg.name,
                    version=ver.ver_str,
                    architecture=ver.arch,
                    sha256=str(sha256.hashvalue) if sha256 else "",
                    size=int(ver.size),
                    filename=str(records.filename),
                    auto=bool(depcache.is_auto_installed(pkg)),
                )
            )
        return sorted(out)

    def download(self, packages: Sequence[ResolvedPackage], progress: Progress) -> list[Path]:
        """Download what is not in the archive cache yet (apt checks each file's hash)."""
        wanted = [p for p in packages if not _cached_ok(self.archives / p.deb_name, p)]
        total = sum(p.size for p in wanted)
        if wanted:
            from apt_ostree.progress import human_size

            progress.message(
                f"    {len(wanted)} packages to download ({human_size(total)}), "
                f"{len(packages) - len(wanted)} cached"
            )
            self._fetch(wanted, progress)
        return [self.archives / p.deb_name for p in packages]

    def _fetch(self, wanted: Sequence[ResolvedPackage], progress: Progress) -> None:
        if self._cache is None:
            raise PackageError("download() needs resolve() first")
        acquire = _Acquire(progress)
        fetcher = apt_pkg.Acquire(acquire)
        records = apt_pkg.PackageRecords(self._cache)
        sources = apt_pkg.SourceList()
        sources.read_main_list()
        names = {p.name for p in wanted}
        pm = apt_pkg.PackageManager(self._depcache)
        try:
            # get_archives queues every marked package; cached files are skipped by apt
            pm.get_archives(fetcher, sources, records)
        except SystemError as e:
            raise PackageError(f"cannot queue downloads: {_one_line(str(e))}") from e
        result = fetcher.run()
        failed = [f"{i.desc_uri}: {i.error_text}" for i in fetcher.items if i.status != i.STAT_DONE]
        if result != fetcher.RESULT_CONTINUE or failed:
            raise PackageError(
                "downloading packages failed: " + "; ".join(failed or acquire.failures)
            )
        self._collect_local(wanted, fetcher.items)
        log.debug("downloaded %s", sorted(names))

    def _collect_local(self, wanted: Sequence[ResolvedPackage], items: Sequence[Any]) -> None:
        """apt uses `file:` debs where they lie: copy them in, so the cache holds every deb."""
        by_name = {Path(i.destfile).name: Path(i.destfile) for i in items}
        for p in wanted:
            dest = self.archives / p.deb_name
            if dest.exists():
                continue
            src = by_name.get(Path(p.filename).name)
            if src is None or not src.exists():
                raise PackageError(f"download of {p.name} {p.version} left no file")
            shutil.copyfile(src, dest)
            if not _cached_ok(dest, p):
                dest.unlink()
                raise PackageError(f"{p.name} {p.version}: {src} does not match its index hash")

    # ---- client layering ----

    @property
    def local_dir(self) -> Path:
        return self.root / "local"

    @property
    def local_list(self) -> Path:
        return self.root / "etc/apt/sources.list.d/local-debs.list"

    def set_local(self, debs: Sequence[LocalDeb]) -> None:
        """Publish `debs` as a flat `file:` repository of this root (none: drop it).

        apt then resolves them and their dependencies like any package. The repository is
        `trusted=yes`: its files are the ones the caller handed over, checked by dpkg-deb.
        """
        self._prepare()
        if not debs:
            self.local_list.unlink(missing_ok=True)
            shutil.rmtree(self.local_dir, ignore_errors=True)
            return
        self.local_dir.mkdir(exist_ok=True)
        stanzas = {}
        for deb in debs:
            if deb.file_name in stanzas:
                raise PackageError(f"two local packages are {deb.name} {deb.version}: {deb.path}")
            _link_or_copy(deb.path, self.local_dir / deb.file_name, deb.sha256)
            stanzas[deb.file_name] = deb.stanza
        for old in self.local_dir.glob("*.deb"):
            if old.name not in stanzas:
                old.unlink()
        _write_flat_index(self.local_dir, "\n".join(stanzas[n] for n in sorted(stanzas)))
        self.local_list.write_text(f"deb [trusted=yes] {self.local_dir.as_uri()} ./\n")

    def resolve_layer(self, marks: LayerMarks) -> LayerResolution:
        """Mark `marks` on the base status; PackageError names every problem and base package."""
        self._prepare()
        self._write_excludes(())
        cache, depcache = self._open(marks.recommends)
        inactive = _LayerResolver(cache, depcache, marks).run()
        local = {(d.name, d.version): d for d in (*marks.local, *marks.replace_local)}
        marked = self._marked(cache, depcache)
        return LayerResolution(
            install=tuple(p for p in marked if (p.name, p.version) not in local),
            local=tuple(local[k] for p in marked if (k := (p.name, p.version)) in local),
            remove=tuple(sorted(set(marks.remove))),
            inactive=tuple(inactive),
        )

    def search(self, patterns: Sequence[str]) -> list[tuple[str, str, str]]:
        """(name, version, summary) of packages whose name or description matches all
        `patterns` (case-insensitive regular expressions, as `apt search`)."""
        try:
            regexes = [re.compile(p, re.IGNORECASE) for p in patterns]
        except re.error as e:
            raise PackageError(f"bad search pattern: {e}") from e
        cache, depcache = self._open(False)
        records = apt_pkg.PackageRecords(cache)
        out = []
        for pkg in cache.packages:
            ver = depcache.get_candidate_ver(pkg) if pkg.has_versions else None
            if ver is None:
                continue
            description = ver.translated_description
            records.lookup(description.file_list[0] if description else ver.file_list[0])
            if all(r.search(pkg.name) or r.search(records.long_desc) for r in regexes):
                out.append((pkg.name, str(ver.ver_str), str(records.short_desc)))
        return sorted(out)


_HELD = re.compile(r"^Status: install ok installed$", re.MULTILINE)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _sync_dir(folder: Path, files: Mapping[str, Path]) -> None:
    """Make `folder` hold exactly `files` (name -> source), copying only what changed."""
    for old in folder.iterdir():
        if old.name not in files:
            old.unlink()
    for name, src in files.items():
        dest = folder / name
        if not dest.exists():
            shutil.copyfile(src, dest)


def _link_or_copy(src: Path, dest: Path, sha256: str) -> None:
    if dest.exists() and _file_digest(dest) == sha256:
        return
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _write_flat_index(folder: Path, packages: str) -> None:
    """Packages and Release of a flat repository (unsigned: its source is trusted=yes)."""
    index = folder / "Packages"
    if index.exists() and index.read_text() == packages:
        return
    index.write_text(packages)
    data = packages.encode()
    release = folder / "Release"
    previous = release.stat().st_mtime if release.exists() else 0.0
    release.write_text(
        f"Origin: {LOCAL_ORIGIN}\nLabel: {LOCAL_ORIGIN}\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\n"
        f"SHA256:\n {hashlib.sha256(data).hexdigest()} {len(data)} Packages\n"
    )
    # apt's file: method takes a file whose mtime (in seconds) did not change as unchanged
    stamp = max(time.time(), previous + 1)
    os.utime(release, (stamp, stamp))


def _cached_ok(path: Path, pkg: ResolvedPackage) -> bool:
    """True when `path` is a complete download of `pkg` (size, then sha256 checked)."""
    try:
        if path.stat().st_size != pkg.size:
            return False
    except FileNotFoundError:
        return False
    if not pkg.sha256:
        return True
    return _file_digest(path) == pkg.sha256


def _apt_errors(text: str) -> str:
    """apt's error queue as one line: its errors, and the warnings that explain them."""
    parts = [p.strip() for p in re.split(r"(?:^|, )(?=[EW]:)", text.strip()) if p.strip()]
    keep = [
        p[2:].strip()
        for p in parts
        if p.startswith("E:") or re.search(r"NO_PUBKEY|BADSIG|EXPKEYSIG|GPG error", p)
    ]
    return _one_line("; ".join(keep) or text)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


class _Resolver:
    """Marks a request in a DepCache the way apt-get would, and explains failures."""

    def __init__(self, cache: Any, depcache: Any, request: Request) -> None:
        self.cache = cache
        self.depcache = depcache
        self.request = request
        self.candidates: dict[int, Any] = {}

    def run(self) -> None:
        self._apply_locks()
        wanted = self._wanted_packages()
        # a failed mark_install leaves the package without a candidate: keep them to explain
        self.candidates = {p.id: self.depcache.get_candidate_ver(p) for p in wanted}
        for pkg in wanted:
            self.depcache.mark_install(pkg, True, True)
        self._check_requested(wanted)
        self._check_broken()
        self._check_locked()

    def _find(self, name: str) -> Any | None:
        try:
            return self.cache[name]
        except KeyError:
            return None

    def _apply_locks(self) -> None:
        locked = self.request.locked or {}
        missing = []
        for name, version in sorted(locked.items()):
            pkg = self._find(name)
            ver = next((v for v in pkg.version_list if v.ver_str == version), None) if pkg else None
            if ver is None:
                missing.append(f"{name}={version}")
            else:
                self.depcache.set_candidate_ver(pkg, ver)
        if missing:
            raise PackageError(
                "locked versions not available from the repositories: " + ", ".join(missing)
            )

    def _base_set(self) -> list[Any]:
        variant = self.request.variant
        if variant == Variant.CUSTOM:
            return []
        max_priority = {
            Variant.ESSENTIAL: 0,
            Variant.APT: 0,
            Variant.REQUIRED: _PRI_REQUIRED,
            Variant.MINBASE: _PRI_REQUIRED,
            Variant.IMPORTANT: _PRI_IMPORTANT,
            Variant.STANDARD: _PRI_STANDARD,
        }[variant]
        base = []
        for pkg in self.cache.packages:
            ver = self.depcache.get_candidate_ver(pkg) if pkg.has_versions else None
            if ver is None or not self._from_suite(ver):
                continue
            if pkg.essential or 0 < ver.priority <= max_priority:
                base.append(pkg)
        if variant != Variant.ESSENTIAL and (apt := self._find("apt")) is not None:
            base.append(apt)
        return base

    def _from_suite(self, ver: Any) -> bool:
        suite = self.request.suite
        if suite is None:
            return True
        return any(f.archive == suite or f.codename == suite for f, _ in ver.file_list)

    def _wanted_packages(self) -> list[Any]:
        wanted = self._base_set()
        problems = []
        for spec in self.request.packages:
            name, _, version = spec.partition("=")
            pkg, problem = self._pick(name, version)
            if problem:
                problems.append(problem)
            else:
                wanted.append(pkg)
        if problems:
            raise PackageError("; ".join(problems))
        return wanted

    def _pick(self, name: str, version: str) -> tuple[Any, str | None]:
        if name in self.request.exclude:
            return None, f"{name} is both requested and excluded"
        pkg = self._find(name)
        if pkg is None:
            return None, f"package not found: {name}"
        if not pkg.has_versions:
            providers = sorted({prov[2].parent_pkg.name for prov in pkg.provides_list})
            if len(providers) == 1:
                return self.cache[providers[0]], None
            if not providers:
                return None, f"package not found: {name} (no version is available)"
            return None, f"{name} is a virtual package: name one of {', '.join(providers)}"
        if version:
            ver = next((v for v in pkg.version_list if v.ver_str == version), None)
            if ver is None:
                return None, f"package not found: {name}={version}"
            self.depcache.set_candidate_ver(pkg, ver)
        return pkg, None

    def _check_requested(self, wanted: Sequence[Any]) -> None:
        """apt leaves a package it cannot install unmarked: say why, naming the dependency."""
        missing = [p for p in wanted if not self.depcache.marked_install(p)]
        if not missing:
            return
        excluded = [p for n in self.request.exclude if (p := self._find(n)) is not None]
        needers = self._needers(excluded, missing) if excluded else []
        if needers:
            raise PackageError(
                f"excluded packages are required: {', '.join(p.name for p in excluded)} "
                f"(needed by {', '.join(needers)})"
            )
        problems = [
            f"{p.name} {self.candidates[p.id].ver_str}: {self._unmet(self.candidates[p.id])}"
            for p in missing
        ]
        raise PackageError("cannot install: " + "; ".join(sorted(problems)[:10]))

    def _needers(self, targets: Sequence[Any], candidates: Sequence[Any]) -> list[str]:
        """Which of `candidates` (or of the marked packages) depend on one of `targets`."""
        names = {t.name for t in targets}
        out = set()
        pool = [*candidates, *(p for p in self.cache.packages if self.depcache.marked_install(p))]
        for pkg in pool:
            ver = self.candidates.get(pkg.id) or (
                self.depcache.get_candidate_ver(pkg) if pkg.has_versions else None
            )
            for group in [] if ver is None else self._dep_groups(ver):
                if all(d.target_pkg.name in names for d in group):
                    out.add(pkg.name)
        return sorted(out - names)

    @staticmethod
    def _dep_groups(ver: Any) -> list[Any]:
        return [g for kind in ("PreDepends", "Depends") for g in ver.depends_list.get(kind, [])]

    def _check_broken(self) -> None:
        if not self.depcache.broken_count:
            return
        problems = []
        for pkg in self.cache.packages:
            if not self.depcache.is_inst_broken(pkg):
                continue
            ver = self.depcache.get_candidate_ver(pkg)
            problems.append(f"{pkg.name} {ver.ver_str}: {self._unmet(ver)}")
        raise PackageError("unresolvable dependencies: " + "; ".join(sorted(problems)[:10]))

    def _unmet(self, ver: Any) -> str:
        unmet = []
        for kind in ("PreDepends", "Depends", "Conflicts", "Breaks"):
            for group in ver.depends_list.get(kind, []):
                if not any(self._satisfied(d, kind) for d in group):
                    unmet.append(
                        f"{kind}: "
                        + " | ".join(
                            f"{d.target_pkg.name}"
                            + (f" ({d.comp_type} {d.target_ver})" if d.target_ver else "")
                            for d in group
                        )
                    )
        return ", ".join(unmet) or "broken"

    def _satisfied(self, dep: Any, kind: str) -> bool:
        installed = any(self.depcache.marked_install(v.parent_pkg) for v in dep.all_targets())
        return not installed if kind in ("Conflicts", "Breaks") else installed

    def _check_locked(self) -> None:
        locked = self.request.locked
        if locked is None:
            return
        extra = sorted(
            p.name
            for p in self.cache.packages
            if self.depcache.marked_install(p) and p.name not in locked
        )
        if extra:
            raise PackageError("packages not in the lockfile are needed: " + ", ".join(extra))


class _LayerResolver:
    """Marks a layer on a held base in a DepCache, and explains what cannot be done.

    Every base package is on hold (see AptRoot): apt's auto-install then never upgrades,
    downgrades or removes one, so a layered package that needs that stays unmarked or broken,
    and is explained here naming the base packages involved. Override remove and replace are
    marked "from the user", which is what lifts a hold in apt.
    """

    def __init__(self, cache: Any, depcache: Any, marks: LayerMarks) -> None:
        self.cache = cache
        self.depcache = depcache
        self.marks = marks
        self.finder = _Resolver(cache, depcache, Request(Variant.CUSTOM, ()))
        self.problems: list[str] = []
        self.candidates: dict[int, Any] = {}
        self.changed: set[str] = set()  # base packages the request changes (removed, replaced)

    def run(self) -> list[str]:
        """Mark the request; the requested names the base already has (inactive)."""
        removes = self._base_packages(self.marks.remove)
        replaces = self._replacements()
        wanted, inactive = self._wanted()
        if self.problems:
            raise PackageError("; ".join(self.problems))
        if inactive and not self.marks.allow_inactive:
            raise PackageError(
                f"already in the base: {', '.join(inactive)} (use --allow-inactive to request "
                f"{'it' if len(inactive) == 1 else 'them'} anyway)"
            )
        self.changed = {p.name for p in removes} | {p.name for p, _ in replaces}
        broken_before = {p.id for p in self.cache.packages if self.depcache.is_inst_broken(p)}
        self._mark(removes, [*replaces, *wanted])
        self._check([p for p, _ in (*replaces, *wanted)], removes, broken_before)
        return inactive

    def _mark(self, removes: Sequence[Any], installs: Sequence[tuple[Any, Any]]) -> None:
        group = apt_pkg.ActionGroup(self.depcache)
        try:
            for pkg in removes:
                self.depcache.mark_delete(pkg, False)
            for pkg, ver in installs:
                if ver is not None:
                    self.depcache.set_candidate_ver(pkg, ver)
                self.candidates[pkg.id] = self.depcache.get_candidate_ver(pkg)
            for pkg, _ in installs:
                self.depcache.mark_install(pkg, True, True)
        finally:
            group.release()  # type: ignore[attr-defined]  # missing from the stubs

    # ---- reading the request ----

    def _base_package(self, name: str) -> Any | None:
        pkg = self.finder._find(name)
        if pkg is None or pkg.current_ver is None:
            self.problems.append(f"{name} is not a base package")
            return None
        return pkg

    def _base_packages(self, names: Sequence[str]) -> list[Any]:
        return [p for n in dict.fromkeys(names) if (p := self._base_package(n)) is not None]

    def _replacements(self) -> list[tuple[Any, Any]]:
        out = []
        for spec in self.marks.replace:
            name, _, version = spec.partition("=")
            if not version:
                self.problems.append(f"override replace {spec}: expected NAME=VERSION")
            elif (pkg := self._base_package(name)) is not None:
                ver = next(
                    (v for v in pkg.version_list if v.ver_str == version and v.downloadable), None
                )
                if ver is None:
                    self.problems.append(self._unavailable(pkg, version))
                else:
                    out.append((pkg, ver))
        for deb in self.marks.replace_local:
            if (pkg := self._base_package(deb.name)) is not None:
                out.append((pkg, self._local_version(pkg, deb)))
        return out

    def _unavailable(self, pkg: Any, version: str) -> str:
        versions = [v.ver_str for v in pkg.version_list if v.downloadable]
        have = f" (available: {', '.join(versions)})" if versions else ""
        return f"{pkg.name} {version} is not available from the repositories{have}"

    def _local_version(self, pkg: Any | None, deb: LocalDeb) -> Any:
        for ver in [] if pkg is None else pkg.version_list:
            if ver.ver_str == deb.version and any(
                f.origin == LOCAL_ORIGIN for f, _ in ver.file_list
            ):
                return ver
        raise PackageError(f"{deb.path}: {deb.name} {deb.version} is missing from the index")

    def _wanted(self) -> tuple[list[tuple[Any, Any]], list[str]]:
        wanted: list[tuple[Any, Any]] = []
        inactive = []
        for spec in dict.fromkeys(self.marks.packages):
            name, _, version = spec.partition("=")
            if self._in_base(name):
                inactive.append(spec)
                continue
            pkg, problem = self.finder._pick(name, version)
            if problem:
                self.problems.append(problem)
            elif pkg.current_ver is not None:  # a virtual name whose one provider is in the base
                inactive.append(spec)
            else:
                wanted.append((pkg, None))
        for deb in self.marks.local:
            pkg = self.finder._find(deb.name)
            if pkg is not None and pkg.current_ver is not None:
                inactive.append(deb.name)
            else:
                wanted.append((pkg, self._local_version(pkg, deb)))
        return wanted, inactive

    def _in_base(self, name: str) -> bool:
        """`name` is a base package, or a virtual one that a base package provides."""
        pkg = self.finder._find(name)
        if pkg is None:
            return False
        if pkg.current_ver is not None:
            return True
        return not pkg.has_versions and any(
            p[2].parent_pkg.current_ver is not None for p in pkg.provides_list
        )

    # ---- checking the result ----

    def _check(self, requested: Sequence[Any], removes: Sequence[Any], before: set[int]) -> None:
        problems: list[str] = []
        for pkg in requested:
            cand = self.candidates[pkg.id]
            unchanged = pkg.current_ver is not None and pkg.current_ver.id == cand.id
            if not _installs(self.depcache, pkg) and not unchanged:
                problems += self._why(pkg, cand) or [
                    f"{self._label(pkg, cand)} cannot be installed"
                ]
        for pkg in self.cache.packages:
            if pkg.id not in before and self.depcache.is_inst_broken(pkg):
                problems += self._why(pkg, self._after(pkg) or self.depcache.get_candidate_ver(pkg))
        problems += [
            f"{p.name} cannot be removed" for p in removes if not self.depcache.marked_delete(p)
        ]
        problems += self._implicit_changes()
        if problems:
            hint = ""
            if any("the base has" in p or "with base package" in p for p in problems):
                hint = " (base packages change only by override remove or override replace)"
            raise PackageError("; ".join(dict.fromkeys(problems)) + hint)

    def _implicit_changes(self) -> list[str]:
        out = []
        for pkg in self.cache.packages:
            if pkg.current_ver is None or pkg.name in self.changed:
                continue
            if self.depcache.marked_delete(pkg):
                out.append(f"base package {pkg.name} would be removed")
            elif _installs(self.depcache, pkg):
                new = self.depcache.get_candidate_ver(pkg).ver_str
                out.append(f"base package {pkg.name} would change to {new}")
        return out

    def _after(self, pkg: Any) -> Any | None:
        """The version of `pkg` installed once the marks are applied."""
        if self.depcache.marked_delete(pkg):
            return None
        if _installs(self.depcache, pkg):
            return self.depcache.get_candidate_ver(pkg)
        return pkg.current_ver

    def _installed_after(self, ver: Any) -> bool:
        after = self._after(ver.parent_pkg)
        return after is not None and after.id == ver.id

    def _label(self, pkg: Any, ver: Any) -> str:
        base = pkg.current_ver is not None and pkg.name not in self.changed
        return f"{'base package ' if base else ''}{pkg.name} {ver.ver_str}"

    def _why(self, pkg: Any, ver: Any, seen: set[int] | None = None) -> list[str]:
        """Each relation of `ver` that the marked state violates, in words; an unmet
        dependency that apt could not install is explained in turn."""
        seen = seen if seen is not None else set()
        seen.add(pkg.id)
        who = self._label(pkg, ver)
        out = []
        for group in _Resolver._dep_groups(ver):
            if not any(self._installed_after(t) for d in group for t in d.all_targets()):
                out.append(f"{who} depends on {_group_text(group)}{self._base_note(group)}")
                out += self._why_not(group, seen)
        for kind, verb in (("Conflicts", "conflicts with"), ("Breaks", "breaks")):
            for group in ver.depends_list.get(kind, []):
                for d in group:
                    for t in d.all_targets():
                        if t.parent_pkg.id != pkg.id and self._installed_after(t):
                            out.append(f"{who} {verb} {self._label(t.parent_pkg, t)}")
        return out + self._conflicted_by(pkg, ver, who)

    def _why_not(self, group: Sequence[Any], seen: set[int]) -> list[str]:
        """Why the new packages that would meet `group` could not be installed."""
        out = []
        for d in group:
            target = d.target_pkg
            # the policy's: a failed mark_install leaves the depcache without a candidate
            ver = self.depcache.policy.get_candidate_ver(target) if target.has_versions else None
            if target.current_ver is None and ver is not None and target.id not in seen:
                out += self._why(target, ver, seen)
        return out

    def _conflicted_by(self, pkg: Any, ver: Any, who: str) -> list[str]:
        """Installed packages whose Conflicts or Breaks hit `ver`."""
        out = []
        for d in pkg.rev_depends_list:
            kind = d.dep_type_untranslated
            if kind not in ("Conflicts", "Breaks") or d.parent_pkg.id == pkg.id:
                continue
            if self._installed_after(d.parent_ver) and ver.id in {t.id for t in d.all_targets()}:
                verb = "conflicts with" if kind == "Conflicts" else "breaks"
                out.append(f"{self._label(d.parent_pkg, d.parent_ver)} {verb} {who}")
        return out

    def _base_note(self, group: Sequence[Any]) -> str:
        notes = []
        for d in group:
            target = d.target_pkg
            if target.current_ver is None:
                continue
            if target.name in self.marks.remove:
                notes.append(f"{target.name} is removed by override remove")
            elif target.name not in self.changed:
                notes.append(f"the base has {target.name} {target.current_ver.ver_str}")
        return f", but {' and '.join(notes)}" if notes else ""


def _installs(depcache: Any, pkg: Any) -> bool:
    """`pkg` is marked for a new install, an upgrade or a downgrade (python-apt's
    marked_install is true only for the first). Most of a cache is kept as it is: one call
    says so (all three need apt's install mode)."""
    return not depcache.marked_keep(pkg) and bool(
        depcache.marked_install(pkg)
        or depcache.marked_upgrade(pkg)
        or depcache.marked_downgrade(pkg)
    )


def _group_text(group: Sequence[Any]) -> str:
    return " | ".join(
        d.target_pkg.name + (f" ({d.comp_type} {d.target_ver})" if d.target_ver else "")
        for d in group
    )


# ---------------------------------------------------------------------------------------------
# dpkg status of a tree


def installed_packages(status_file: Path) -> list[tuple[str, str, str]]:
    """(name, version, architecture) of every installed package in a dpkg status file."""
    _init()
    out = []
    with apt_pkg.TagFile(str(status_file)) as tags:
        for section in tags:
            if section.get("Status", "").split()[-1:] != ["installed"]:
                continue
            out.append((section["Package"], section["Version"], section.get("Architecture", "")))
    return sorted(out)


def version_compare(a: str, b: str) -> int:
    _init()
    return int(apt_pkg.version_compare(a, b))


def sources_key(entries: Iterable[RepoEntry], architecture: str) -> str:
    """A short stable name for a set of sources (names the apt state folder in the cache)."""
    text = render_sources(entries) + architecture
    return hashlib.sha256(text.encode()).hexdigest()[:16]
