"""`compose tree`: treefile -> resolved package set -> root filesystem -> OSTree commit.

Steps: load the treefile; update the apt indices of its repositories (signatures checked)
and resolve the exact package set; hash every input; stop there when the ref's commit was
made from the same inputs; download; bootstrap with mmdebstrap; postprocess into the
OSTree layout; commit with the metadata of DESIGN.md. The repository changes only in the
final transaction, so a failure at any step leaves it exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_ostree import aptpkg, keys, ostree
from apt_ostree.aptpkg import AptRoot, Request, ResolvedPackage
from apt_ostree.compose import lockfile
from apt_ostree.compose.bootstrap import BootstrapInput, bootstrap
from apt_ostree.compose.postprocess import PostprocessOptions, postprocess
from apt_ostree.errors import RepoError
from apt_ostree.progress import Progress
from apt_ostree.treefile import RepoEntry, Treefile

DEFAULT_CACHEDIR = Path("/var/cache/apt-ostree/compose")


@dataclass(frozen=True)
class ComposeOptions:
    repo: Path
    cachedir: Path = DEFAULT_CACHEDIR
    dry_run: bool = False
    lockfile: Path | None = None
    write_lockfile_to: Path | None = None
    force_nocache: bool = False
    source_date_epoch: int | None = None
    gpg_sign: str | None = None  # key id
    gpg_homedir: Path | None = None
    ed25519_key: Path | None = None  # secret key file, base64 as ostree's


@dataclass(frozen=True)
class ComposeResult:
    ref: str
    changed: bool
    checksum: str | None  # None on a dry run
    version: str | None
    packages: tuple[ResolvedPackage, ...]
    inputhash: str
    size: int = 0  # bytes of the committed tree's files


def source_date_epoch_from_env() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    return int(value) if value and value.isdigit() else None


def image_repos(treefile: Treefile) -> tuple[str, tuple[RepoEntry, ...]]:
    """The suite and apt sources an image is composed from (the host's when none are given)."""
    suite = treefile.suite or aptpkg.host_codename()
    if treefile.repos is not None:
        return suite, treefile.repos
    return suite, tuple(aptpkg.read_host_sources(suite))


def input_hash(treefile: Treefile, packages: Sequence[ResolvedPackage]) -> str:
    """Hash of everything that goes into the tree (not the mirror it came from)."""
    data = {
        "format": keys.COMPOSE_FORMAT,
        "treefile": treefile.flattened,
        "files": treefile.external_files_digest(),
        "packages": [[p.name, p.version, p.architecture, p.sha256] for p in packages],
    }
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def next_version(prefix: str | None, previous: str | None) -> str | None:
    """`<prefix>.0`, then `.1`, ... while the previous commit's version has the same prefix."""
    if prefix is None:
        return None
    if previous and previous.startswith(prefix + "."):
        tail = previous[len(prefix) + 1 :]
        if tail.isdigit():
            return f"{prefix}.{int(tail) + 1}"
    return f"{prefix}.0"


def _previous_commit(repo_path: Path, ref: str) -> ostree.CommitInfo | None:
    if not (repo_path / "config").exists():
        if repo_path.exists() and any(repo_path.iterdir()):
            raise RepoError(f"{repo_path} is not an OSTree repository (and not empty)")
        return None
    repo = ostree.open_repo(repo_path)
    checksum = ostree.resolve_ref(repo, ref)
    return ostree.read_commit(repo, checksum) if checksum else None


@contextmanager
def workdir(cachedir: Path) -> Iterator[Path]:
    base = cachedir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="compose-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _apt_root(cachedir: Path, suite: str, repos: Sequence[RepoEntry]) -> AptRoot:
    arch = aptpkg.native_architecture()
    return AptRoot(
        cachedir / "apt" / aptpkg.sources_key(repos, arch),
        repos,
        archives=cachedir / "archives",
        architecture=arch,
    )


def _resolve(
    treefile: Treefile, options: ComposeOptions, apt: AptRoot, suite: str, progress: Progress
) -> list[ResolvedPackage]:
    locked = lockfile.read(options.lockfile) if options.lockfile else None
    request = Request(
        variant=treefile.variant,
        packages=treefile.packages,
        exclude=treefile.exclude_packages,
        recommends=treefile.recommends,
        suite=suite,
        locked=locked,
    )
    with progress.step("Updating package indices"):
        apt.update(progress)
    with progress.step("Resolving packages"):
        packages = apt.resolve(request)
        progress.message(f"    {len(packages)} packages")
    return packages


def tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_size
    return total


def compose_tree(treefile: Treefile, options: ComposeOptions, progress: Progress) -> ComposeResult:
    suite, repos = image_repos(treefile)
    previous = _previous_commit(options.repo, treefile.ref)
    apt = _apt_root(options.cachedir, suite, repos)
    packages = _resolve(treefile, options, apt, suite, progress)
    if options.write_lockfile_to:
        lockfile.write(options.write_lockfile_to, packages)
    inputhash = input_hash(treefile, packages)
    result = ComposeResult(treefile.ref, False, None, None, tuple(packages), inputhash)
    if options.dry_run:
        return result
    unchanged = previous is not None and previous.metadata.get(keys.INPUTHASH) == inputhash
    if previous and unchanged and not options.force_nocache:
        return ComposeResult(
            treefile.ref, False, previous.checksum, previous.version, tuple(packages), inputhash
        )
    with progress.step("Downloading packages"):
        debs = apt.download(packages, progress)
    with workdir(options.cachedir) as work:
        rootfs = work / "rootfs"
        with progress.step("Bootstrapping the tree"):
            bootstrap(
                rootfs,
                BootstrapInput(
                    suite=suite,
                    sources_file=apt.sources_file,
                    lists_dir=apt.lists_dir,
                    packages=tuple(packages),
                    debs=tuple(debs),
                    source_date_epoch=options.source_date_epoch,
                ),
                progress,
            )
        with progress.step("Postprocessing"):
            postprocess(rootfs, postprocess_options(treefile), progress)
        with progress.step("Committing"):
            return _commit(treefile, options, previous, rootfs, packages, inputhash)


def postprocess_options(treefile: Treefile) -> PostprocessOptions:
    return PostprocessOptions(
        units=treefile.units,
        default_target=treefile.default_target,
        add_files=tuple((a.source, a.dest) for a in treefile.add_files),
        remove_files=treefile.remove_files,
        postprocess_scripts=treefile.postprocess,
        initramfs_args=treefile.initramfs_args,
        machineid_compat=treefile.machineid_compat,
    )


def sign_commit(repo: Any, checksum: str, options: ComposeOptions) -> None:
    """Sign a new commit as asked; signatures are detached metadata, so the checksum stays."""
    if options.gpg_sign:
        ostree.gpg_sign_commit(repo, checksum, options.gpg_sign, options.gpg_homedir)
    if options.ed25519_key:
        ostree.ed25519_sign_commit(repo, checksum, options.ed25519_key)


def tree_packages(rootfs: Path) -> list[tuple[str, str, str]]:
    """The packages installed in a postprocessed tree, from its own dpkg database."""
    return aptpkg.installed_packages(rootfs / "usr/lib/sysimage/dpkg/status")


def _commit(
    treefile: Treefile,
    options: ComposeOptions,
    previous: ostree.CommitInfo | None,
    rootfs: Path,
    packages: Sequence[ResolvedPackage],
    inputhash: str,
) -> ComposeResult:
    version = next_version(
        treefile.automatic_version_prefix, previous.version if previous else None
    )
    metadata: dict[str, Any] = {
        keys.PACKAGES: tree_packages(rootfs),
        keys.INPUTHASH: inputhash,
        keys.TREEFILE: treefile.flattened_json(),
    }
    if version:
        metadata[keys.VERSION] = version
    size = tree_size(rootfs)
    repo = ostree.open_repo(options.repo, create=True)
    timestamp = options.source_date_epoch or int(time.time())
    checksum = ostree.commit_tree(
        repo,
        rootfs,
        ref=treefile.ref,
        parent=previous.checksum if previous else None,
        subject=f"{treefile.ref} {version}" if version else treefile.ref,
        metadata=metadata,
        timestamp=timestamp,
    )
    return ComposeResult(treefile.ref, True, checksum, version, tuple(packages), inputhash, size)
