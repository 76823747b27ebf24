"""A scratch apt root (`AptRoot`): one set of sources' lists, caches and dpkg status.

Every path apt reads or writes state under (`Dir::State`, `Dir::Cache`, `Dir::Etc`, the dpkg
status) is pointed at the scratch root before each operation: nothing here reads or writes
the host's package state. Indices are fetched with apt's own signature checks, downloads are
checked against the indices' hashes, and the resolvers (`resolve`, `layer`) mark packages in
the DepCache that `AptRoot.open_cache` opens.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apt_pkg
from apt.progress.base import AcquireProgress

from apt_ostree.aptpkg.host import init, one_line
from apt_ostree.aptpkg.local import LocalDeb, file_digest, write_repository
from apt_ostree.aptpkg.sources import RepoEntry, render_sources
from apt_ostree.errors import PackageError
from apt_ostree.progress import Progress, human_size

log = logging.getLogger(__name__)


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


def installs(depcache: Any, pkg: Any) -> bool:
    """`pkg` is marked for a new install, an upgrade or a downgrade (python-apt's
    marked_install is true only for the first). Most of a cache is kept as it is: one call
    says so (all three need apt's install mode)."""
    return not depcache.marked_keep(pkg) and bool(
        depcache.marked_install(pkg)
        or depcache.marked_upgrade(pkg)
        or depcache.marked_downgrade(pkg)
    )


def marked_packages(cache: Any, depcache: Any) -> list[ResolvedPackage]:
    """What `depcache` installs (new, upgraded or downgraded), with each one's index record."""
    records = apt_pkg.PackageRecords(cache)
    out = []
    for pkg in cache.packages:
        if not installs(depcache, pkg):
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
            {f"{file_digest(k)[:16]}{k.suffix}": k for k in self.trusted},
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
        init()
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
        optional = {(u.rstrip("/"), s) for e in self.repos if e.optional for u in e.uris
                    for s in e.suites}  # fmt: skip
        missing = [
            f"{m.uri} {m.dist}"
            for m in sources.list
            if not any(i.exists for i in m.index_files)
            and (m.uri.rstrip("/"), m.dist) not in optional
        ]
        if missing:
            raise PackageError("no package index could be read from: " + ", ".join(missing))

    def _open(self, recommends: bool) -> tuple[Any, Any]:
        self._prepare()
        self._configure(recommends=recommends)
        try:
            cache = apt_pkg.Cache(None)
        except SystemError as e:
            raise PackageError(f"reading the package indices failed: {one_line(str(e))}") from e
        self._cache = cache
        self._depcache = apt_pkg.DepCache(cache)
        return cache, self._depcache

    def open_cache(self, *, recommends: bool, exclude: Sequence[str] = ()) -> tuple[Any, Any]:
        """apt's Cache and a new DepCache on this root's lists and status, `exclude` made
        uninstallable: the resolvers mark in it, and `download()` fetches what it marks."""
        self._prepare()
        self._write_excludes(exclude)
        return self._open(recommends)

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

    def download(self, packages: Sequence[ResolvedPackage], progress: Progress) -> list[Path]:
        """Download what is not in the archive cache yet (apt checks each file's hash)."""
        wanted = [p for p in packages if not _cached_ok(self.archives / p.deb_name, p)]
        total = sum(p.size for p in wanted)
        if wanted:
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
            raise PackageError(f"cannot queue downloads: {one_line(str(e))}") from e
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
        write_repository(self.local_dir, debs)
        self.local_list.write_text(f"deb [trusted=yes] {self.local_dir.as_uri()} ./\n")

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


def _sync_dir(folder: Path, files: Mapping[str, Path]) -> None:
    """Make `folder` hold exactly `files` (name -> source), copying only what changed."""
    for old in folder.iterdir():
        if old.name not in files:
            old.unlink()
    for name, src in files.items():
        dest = folder / name
        if not dest.exists():
            shutil.copyfile(src, dest)


def _cached_ok(path: Path, pkg: ResolvedPackage) -> bool:
    """True when `path` is a complete download of `pkg` (size, then sha256 checked)."""
    try:
        if path.stat().st_size != pkg.size:
            return False
    except FileNotFoundError:
        return False
    if not pkg.sha256:
        return True
    return file_digest(path) == pkg.sha256


def _apt_errors(text: str) -> str:
    """apt's error queue as one line: its errors, and the warnings that explain them."""
    parts = [p.strip() for p in re.split(r"(?:^|, )(?=[EW]:)", text.strip()) if p.strip()]
    keep = [
        p[2:].strip()
        for p in parts
        if p.startswith("E:") or re.search(r"NO_PUBKEY|BADSIG|EXPKEYSIG|GPG error", p)
    ]
    return one_line("; ".join(keep) or text)
