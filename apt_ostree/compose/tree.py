"""`compose tree`: treefile -> resolved package set -> root filesystem -> OSTree commit.

Steps: load the treefile; update the apt indices of its repositories (signatures checked)
and resolve the exact package set; hash every input; stop there when the ref's commit was
made from the same inputs; download; bootstrap with mmdebstrap; postprocess into the
OSTree layout; commit with the metadata of DESIGN.md. The repository changes only in the
final transaction, so a failure at any step leaves it exactly as it was.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from apt_ostree import debconf, keys, ostree
from apt_ostree.aptpkg.dpkg import installed_packages
from apt_ostree.aptpkg.host import host_codename, native_architecture
from apt_ostree.aptpkg.resolve import Request, resolve
from apt_ostree.aptpkg.root import AptRoot, ResolvedPackage
from apt_ostree.aptpkg.sources import RepoEntry, read_host_sources, sources_key
from apt_ostree.compose import lockfile, passwd
from apt_ostree.compose.bootstrap import BootstrapInput, bootstrap, dpkg_path_filters
from apt_ostree.compose.postprocess import PostprocessOptions, postprocess, shipped_digest
from apt_ostree.errors import AptOstreeError, RepoError, TreefileError
from apt_ostree.progress import Progress
from apt_ostree.run import unmount_under
from apt_ostree.treefile import MetadataValue, Treefile

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
    static_delta: bool = False  # also write the static delta from the ref's previous commit
    # --add-metadata-string KEY=VALUE: more string keys in the commit (part of the input hash)
    metadata: tuple[tuple[str, str], ...] = ()
    # --write-commitid-to: commit, but leave the ref (and the summary) where they are
    move_ref: bool = True


@dataclass(frozen=True)
class SummarySigning:
    """How to sign the repository's summary: as the commits are signed."""

    gpg_sign: str | None = None  # key id
    gpg_homedir: Path | None = None
    ed25519_key: Path | None = None


@dataclass(frozen=True)
class DeltaResult:
    from_checksum: str | None  # None: a "from scratch" delta
    to_checksum: str
    size: int  # bytes a client downloads for it


@dataclass(frozen=True)
class ComposeResult:
    ref: str
    changed: bool
    checksum: str | None  # None on a dry run
    version: str | None
    packages: tuple[ResolvedPackage, ...]
    inputhash: str
    size: int = 0  # bytes of the committed tree's files
    delta: DeltaResult | None = None  # the static delta written with --static-delta


def source_date_epoch_from_env() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    return int(value) if value and value.isdigit() else None


def image_repos(treefile: Treefile) -> tuple[str, tuple[RepoEntry, ...]]:
    """The suite and apt sources an image is composed from (the host's when none are given)."""
    suite = treefile.suite or host_codename()
    if treefile.repos is not None:
        return suite, treefile.repos
    return suite, tuple(read_host_sources(suite))


def input_hash(
    treefile: Treefile,
    packages: Sequence[ResolvedPackage],
    metadata: Sequence[tuple[str, str]] = (),
) -> str:
    """Hash of everything that goes into the commit (not the mirror it came from)."""
    data: dict[str, Any] = {
        "format": keys.COMPOSE_FORMAT,
        "treefile": treefile.flattened,
        "files": treefile.external_files_digest(),
        "shipped": shipped_digest(),
        "packages": [[p.name, p.version, p.architecture, p.sha256] for p in packages],
    }
    if metadata:  # absent when none, so that hashes of earlier composes stay as they were
        data["metadata"] = sorted(metadata)
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


def extra_metadata(treefile: Treefile, options: ComposeOptions) -> dict[str, MetadataValue]:
    """The commit's metadata beyond apt-ostree's own: the treefile's add-commit-metadata,
    then --add-metadata-string over it (the command line wins, as in rpm-ostree)."""
    return {**dict(treefile.add_commit_metadata), **dict(options.metadata)}


def commit_version(
    treefile: Treefile, options: ComposeOptions, previous: ostree.CommitInfo | None
) -> str | None:
    """The new commit's `version`: one given as metadata (the treefile's, or the command
    line's over it), else the next automatic one. Known before the tree is made, for
    mutate-os-release."""
    given = extra_metadata(treefile, options).get(keys.VERSION)
    if given is not None:
        return str(given)
    return next_version(treefile.automatic_version_prefix, previous.version if previous else None)


def _previous_commit(repo_path: Path, ref: str) -> ostree.CommitInfo | None:
    if not (repo_path / "config").exists():
        if repo_path.exists() and any(repo_path.iterdir()):
            raise RepoError(f"{repo_path} is not an OSTree repository (and not empty)")
        return None
    repo = ostree.Repo.open(repo_path)
    checksum = repo.resolve_ref(ref)
    return repo.read_commit(checksum) if checksum else None


WORKDIR_LOCK = ".apt-ostree-lock"  # held (flock) by the compose that works in the folder


@contextmanager
def workdir(cachedir: Path) -> Iterator[Path]:
    """A scratch folder under CACHEDIR/tmp, locked while this compose uses it, removed after;
    folders of composes that were killed are removed first (`remove_stale_workdirs`)."""
    base = cachedir / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_workdirs(cachedir)
    path = Path(tempfile.mkdtemp(prefix="compose-", dir=base))
    # locked before it has its name: another compose never finds the lock file free but ours
    lock = os.open(path / f"{WORKDIR_LOCK}.new", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(path / f"{WORKDIR_LOCK}.new", path / WORKDIR_LOCK)
    try:
        yield path
    finally:
        unmount_under(path)  # a tool killed before its own cleanup: never rm into its mounts
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)


def remove_stale_workdirs(cachedir: Path) -> list[Path]:
    """Remove the scratch folders whose compose is gone (SIGKILL, a crash): their lock is
    free. A folder without a lock file is left alone (being made, or from an older version)."""
    removed = []
    for path in sorted((cachedir / "tmp").glob("compose-*")):
        try:
            fd = os.open(path / WORKDIR_LOCK, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its compose is running
        try:
            unmount_under(path)
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(path)
    return removed


def _apt_root(cachedir: Path, suite: str, repos: Sequence[RepoEntry]) -> AptRoot:
    arch = native_architecture()
    return AptRoot(
        cachedir / "apt" / sources_key(repos, arch),
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
        packages = resolve(apt, request)
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
    if options.ed25519_key:  # before minutes of work, not after
        ostree.check_ed25519(f"--sign-ed25519 {options.ed25519_key}")
    for stale in remove_stale_workdirs(options.cachedir):
        progress.message(f"    removed {stale}, left by a compose that was killed")
    suite, repos = image_repos(treefile)
    previous = _previous_commit(options.repo, treefile.ref)
    apt = _apt_root(options.cachedir, suite, repos)
    packages = _resolve(treefile, options, apt, suite, progress)
    _check_debconf(treefile, packages)
    if options.write_lockfile_to:
        lockfile.write(options.write_lockfile_to, packages)
    inputhash = input_hash(treefile, packages, options.metadata)
    result = ComposeResult(treefile.ref, False, None, None, tuple(packages), inputhash)
    if options.dry_run:
        return result
    unchanged = previous is not None and previous.metadata.get(keys.INPUTHASH) == inputhash
    if previous and unchanged and not options.force_nocache:
        return ComposeResult(
            treefile.ref, False, previous.checksum, previous.version, tuple(packages), inputhash
        )
    accounts = passwd.previous_databases(options.repo, previous.checksum if previous else None)
    with progress.step("Downloading packages"):
        debs = apt.download(packages, progress)
    version = commit_version(treefile, options, previous)
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
                    dpkg_options=dpkg_path_filters(treefile.documentation, treefile.install_langs),
                    etc_seed=passwd.write_seed(
                        work / "etc-seed", passwd.seed_files(treefile, accounts)
                    ),
                    debconf_answers=_answers_file(work, treefile),
                ),
                progress,
            )
        with progress.step("Postprocessing"):
            postprocess(rootfs, postprocess_options(treefile, version), progress)
            passwd.check(treefile, rootfs / "usr/etc", accounts)
        with progress.step("Committing"):
            result = _commit(treefile, options, previous, rootfs, packages, inputhash, version)
    return publish(result, options, previous.checksum if previous else None, progress)


def _check_debconf(treefile: Treefile, packages: Sequence[ResolvedPackage]) -> None:
    if treefile.debconf and "debconf" not in {p.name for p in packages}:
        raise TreefileError(
            f"{treefile.path}: key 'debconf': the image has no debconf to take the answers "
            "(add it to 'packages')"
        )


def _answers_file(work: Path, treefile: Treefile) -> Path | None:
    if not treefile.debconf:
        return None
    path = work / "debconf-selections"
    path.write_text(debconf.render(treefile.debconf))
    return path


def postprocess_options(treefile: Treefile, version: str | None = None) -> PostprocessOptions:
    return PostprocessOptions(
        units=treefile.units,
        default_target=treefile.default_target,
        add_files=tuple((a.source, a.dest) for a in treefile.add_files),
        remove_files=treefile.remove_files,
        postprocess_scripts=treefile.postprocess,
        initramfs_args=treefile.initramfs_args,
        machineid_compat=treefile.machineid_compat,
        automatic_updates=treefile.automatic_updates,
        mutate_os_release=treefile.mutate_os_release,
        version=version,
        etc_group_members=treefile.etc_group_members,
        debconf=treefile.debconf,
    )


def sign_commit(repo: ostree.Repo, checksum: str, options: ComposeOptions) -> None:
    """Sign a new commit as asked; signatures are detached metadata, so the checksum stays."""
    if options.gpg_sign:
        repo.gpg_sign_commit(checksum, options.gpg_sign, options.gpg_homedir)
    if options.ed25519_key:
        repo.ed25519_sign_commit(checksum, options.ed25519_key)


def summary_signing(options: ComposeOptions) -> SummarySigning:
    return SummarySigning(options.gpg_sign, options.gpg_homedir, options.ed25519_key)


def publish(
    result: ComposeResult, options: ComposeOptions, parent: str | None, progress: Progress
) -> ComposeResult:
    """Make a new commit servable by a plain HTTP server: its static delta from the parent when
    asked, and always a fresh summary (clients of a static server learn refs from it)."""
    assert result.checksum is not None
    if not options.move_ref:  # the ref did not move: the summary still tells the truth
        return result
    repo = ostree.Repo.open(options.repo)
    delta = None
    if options.static_delta and parent is not None:
        delta = write_static_delta(repo, parent, result.checksum, progress)
    update_summary(repo, summary_signing(options), progress)
    return replace(result, delta=delta)


def write_static_delta(
    repo: ostree.Repo, from_checksum: str | None, to_checksum: str, progress: Progress
) -> DeltaResult:
    source = from_checksum[:6] if from_checksum else "scratch"
    with progress.step(f"Generating static delta {source} -> {to_checksum[:6]}"):
        repo.generate_static_delta(from_checksum, to_checksum)
    size = repo.static_delta_size(from_checksum, to_checksum)
    return DeltaResult(from_checksum, to_checksum, size)


def update_summary(repo: ostree.Repo, signing: SummarySigning, progress: Progress) -> None:
    """Regenerate the summary (refs and the delta index) and sign it as the commits are."""
    was_signed = (repo.path / "summary.sig").exists()
    with progress.step("Updating the summary"):
        repo.regenerate_summary()
        if signing.gpg_sign:
            repo.gpg_sign_summary(signing.gpg_sign, signing.gpg_homedir)
        if signing.ed25519_key:
            repo.ed25519_sign_summary(signing.ed25519_key)
    if was_signed and not (signing.gpg_sign or signing.ed25519_key):
        # libostree drops summary.sig with the old summary; remotes that verify it fail now
        progress.message("warning: the previous summary was signed, the new one is not")


def static_delta_for_ref(
    repo_path: Path,
    ref: str,
    *,
    from_checksum: str | None = None,
    from_scratch: bool = False,
    signing: SummarySigning | None = None,
    progress: Progress,
) -> DeltaResult:
    """`compose static-delta`: the delta to the commit of `ref` from `from_checksum` (default:
    that commit's parent), then the summary again so that clients find it."""
    repo = ostree.Repo.open(repo_path)
    to_checksum = repo.resolve_ref(ref)
    if to_checksum is None:
        raise RepoError(f"{ref}: no such ref in {repo_path}")
    if from_checksum is not None:
        source = repo.resolve_ref(from_checksum)
        if source is None:
            raise RepoError(f"--from {from_checksum}: no such ref or commit in {repo_path}")
        from_checksum = source
    elif not from_scratch:
        from_checksum = repo.read_commit(to_checksum).parent
        if from_checksum is None:
            raise RepoError(
                f"{ref} ({to_checksum[:6]}) has no parent commit: pass --from or --empty"
            )
    delta = write_static_delta(repo, from_checksum, to_checksum, progress)
    update_summary(repo, signing or SummarySigning(), progress)
    return delta


def tree_packages(rootfs: Path) -> list[tuple[str, str, str]]:
    """The packages installed in a postprocessed tree, from its own dpkg database."""
    return installed_packages(rootfs / "usr/lib/sysimage/dpkg/status")


def _commit(
    treefile: Treefile,
    options: ComposeOptions,
    previous: ostree.CommitInfo | None,
    rootfs: Path,
    packages: Sequence[ResolvedPackage],
    inputhash: str,
    version: str | None,
) -> ComposeResult:
    metadata: dict[str, Any] = {
        **extra_metadata(treefile, options),
        keys.PACKAGES: tree_packages(rootfs),
        keys.INPUTHASH: inputhash,
        keys.TREEFILE: treefile.flattened_json(),
    }
    if version:
        metadata[keys.VERSION] = version
    size = tree_size(rootfs)
    repo = ostree.Repo.open(options.repo, create=True)
    timestamp = options.source_date_epoch or int(time.time())
    checksum = repo.write_commit(
        rootfs,
        ref=treefile.ref if options.move_ref else None,
        parent=previous.checksum if previous else None,
        subject=f"{treefile.ref} {version}" if version else treefile.ref,
        metadata=metadata,
        timestamp=timestamp,
    )
    try:
        sign_commit(repo, checksum, options)
    except AptOstreeError:
        # the ref moved with the commit: put it back, a failed compose changes no ref
        if options.move_ref:
            repo.set_ref(treefile.ref, previous.checksum if previous else None)
        raise
    return ComposeResult(treefile.ref, True, checksum, version, tuple(packages), inputhash, size)
