"""The one adapter to python3-apt (`apt_pkg`): sources, index updates, resolution, downloads.

apt's configuration is global to a process. The host's configuration is read once (it holds
the machine's Acquire settings: proxies, validity checks), then every path that names state
(`Dir::State`, `Dir::Cache`, `Dir::Etc`, the dpkg status) is pointed at the target's own
scratch root before each operation: nothing here reads or writes the host's package state.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apt_pkg
from apt.progress.base import AcquireProgress

from apt_ostree.errors import PackageError
from apt_ostree.progress import Progress
from apt_ostree.treefile import RepoEntry, Variant

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


def read_host_sources(suite: str) -> list[RepoEntry]:
    """The host's apt sources for `suite` (and its -updates, -security, ... companions).

    Sources for other suites (third-party repositories of the host) are left out: they
    are not part of a Debian image, and may not be reachable from where it is composed.
    """
    _init()
    files: list[Path] = []
    for p in HOST_SOURCES:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".list", ".sources"))
        elif p.exists():
            files.append(p)
    entries: list[RepoEntry] = []
    for f in files:
        if f.suffix == ".sources":
            entries += _parse_deb822(f)
        else:
            for line in f.read_text().splitlines():
                parsed = _parse_one_line(line.strip())
                entries += [parsed] if parsed else []
    out = []
    for e in entries:
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

    @property
    def deb_name(self) -> str:
        """The file name apt gives the downloaded .deb."""
        version = self.version.replace(":", "%3a")
        return f"{self.name}_{version}_{self.architecture}.deb"


@dataclass(frozen=True)
class Request:
    """What to install into an empty root."""

    variant: Variant
    packages: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    recommends: bool = False
    suite: str | None = None  # whose Essential/Priority fields define the variant's base set
    locked: Mapping[str, str] | None = None  # name -> exact version (a lockfile)


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
    """An apt state folder for one set of sources: lists, caches and an empty dpkg status."""

    def __init__(
        self, root: Path, repos: Sequence[RepoEntry], *, archives: Path, architecture: str
    ) -> None:
        self.root = root
        self.repos = tuple(repos)
        self.archives = archives
        self.architecture = architecture
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
        status = self.root / "var/lib/dpkg/status"
        if not status.exists():
            status.touch()
        if not self.sources_file.exists() or self.sources_file.read_text() != self.sources_text:
            self.sources_file.write_text(self.sources_text)
        self._configure()

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
        c.set("APT::Architectures::", self.architecture)
        apt_pkg.init_system()

    def update(self, progress: Progress) -> None:
        """Fetch the sources' indices, verifying their signatures (apt's own checks)."""
        self._prepare()
        sources = apt_pkg.SourceList()
        sources.read_main_list()
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
            if not depcache.marked_install(pkg):
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


def _cached_ok(path: Path, pkg: ResolvedPackage) -> bool:
    """True when `path` is a complete download of `pkg` (size, then sha256 checked)."""
    try:
        if path.stat().st_size != pkg.size:
            return False
    except FileNotFoundError:
        return False
    if not pkg.sha256:
        return True
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == pkg.sha256


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
