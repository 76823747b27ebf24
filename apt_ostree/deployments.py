"""The client's image verbs on a sysroot: status, upgrade, deploy, rebase, rollback, cleanup,
kargs, db. Bus-free and typed: the CLI's `--sysroot` mode and the daemon both call this.

Everything that touches deployments goes through libostree (`apt_ostree.ostree.Sysroot`):
deployments are written by `deploy_tree` + `simple_write_deployment` in a folder sysroot and
staged by `stage_tree` on a booted system, /etc is merged by libostree, and a rollback is a
reorder of the deployment list (libostree 2022.7 has no rollback call; see
shared/notes/booting.md). Every mutation holds libostree's sysroot lock.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from apt_ostree import keys, ostree
from apt_ostree.accounts import merge_accounts
from apt_ostree.aptpkg.dpkg import version_compare
from apt_ostree.errors import (
    AptOstreeError,
    CommandError,
    LayeringError,
    RepoError,
    UnchangedError,
    UsageError,
)
from apt_ostree.layering.build import build as build_layered
from apt_ostree.layering.build import local_dir, remove_base_trees
from apt_ostree.layering.build import refresh as layering_refresh
from apt_ostree.layering.build import search as layering_search
from apt_ostree.live import LiveState, drop_stale_ref
from apt_ostree.live import read_state as read_live_state
from apt_ostree.origin import CHECKSUM_RE, Origin, Refspec
from apt_ostree.pkgdiff import PackageDiff, diff_packages
from apt_ostree.progress import Progress, human_size
from apt_ostree.run import run

BOOTED_MARKER = Path("/run/ostree-booted")

# Sysroots whose cleanup (dropped deployments' trees removed, repository pruned) was left for
# after the result: see `defer_cleanups`.
_cleanups_due: set[Path] = set()
_defer_cleanups = False
_recommends = False  # layering installs Recommends: apt-ostreed's `Recommends=` (see worker.py)


def install_recommends(enabled: bool) -> None:
    """Whether layering also installs the packages' Recommends (default: no, as compose)."""
    global _recommends
    _recommends = enabled


def defer_cleanups() -> None:
    """From now on, a deploy into a folder sysroot leaves the trees of the deployments it
    drops, and the unreachable objects, to `run_deferred_cleanups()`: the daemon's worker
    reports the result first, then cleans up before the next transaction starts (on a booted
    machine a staged deployment is cleaned up at shutdown anyway)."""
    global _defer_cleanups
    _defer_cleanups = True


def run_deferred_cleanups(progress: Progress) -> None:
    """Do the cleanups `defer_cleanups()` left; a sysroot locked by another process is left
    for its own next cleanup (libostree removes any tree that is not a deployment)."""
    while _cleanups_due:
        path = _cleanups_due.pop()
        sysroot = ostree.Sysroot(path)
        with progress.step("Removing dropped deployments and pruning"), sysroot.locked():
            sysroot.cleanup()


class DeploymentError(AptOstreeError):
    """A deployment operation was refused or failed (nothing was changed)."""

    dbus_name = "DeploymentFailed"


def default_sysroot(given: Path | None) -> Path:
    """`--sysroot`, or / on a machine booted from OSTree."""
    if given is not None:
        # absolute: apt's Dir:: settings and bwrap binds made from it must not depend on
        # the working directory
        return given.absolute()
    if BOOTED_MARKER.exists():
        return Path("/")
    raise UsageError("this machine is not booted from OSTree: give --sysroot DIR")


@dataclass(frozen=True)
class CommitSummary:
    checksum: str
    version: str | None
    timestamp: int
    packages: tuple[tuple[str, str, str], ...]
    base_checksum: str

    @staticmethod
    def of(info: ostree.CommitInfo) -> CommitSummary:
        md = info.metadata
        return CommitSummary(
            checksum=info.checksum,
            version=info.version,
            timestamp=info.timestamp,
            packages=tuple(tuple(p) for p in md.get(keys.PACKAGES, ())),
            base_checksum=str(md.get(keys.BASE_CHECKSUM, info.checksum)),
        )


@dataclass(frozen=True)
class DeploymentStatus:
    deployment: ostree.Deployment
    origin: Origin | None
    commit: CommitSummary | None
    live: LiveState | None = None  # apply-live on this boot (the booted deployment only)

    def to_json(self) -> dict[str, Any]:
        d, o, c = self.deployment, self.origin, self.commit
        return {
            "id": d.id,
            "osname": d.osname,
            "checksum": d.checksum,
            "base-checksum": c.base_checksum if c else d.checksum,
            "version": c.version if c else None,
            "timestamp": c.timestamp if c else None,
            "origin": str(o.refspec) if o else None,
            "override-commit": o.override_commit if o else None,
            "booted": d.booted,
            "staged": d.staged,
            "pinned": d.pinned,
            "unlocked": d.unlocked,
            "live-commit": self.live.commit if self.live else None,
            "live-replaced": self.live.replaced if self.live else False,
            "packages": list(o.requested_packages) if o else [],
            "requested-packages": list(o.requested_packages) if o else [],
            "requested-local-packages": list(o.requested_local_packages) if o else [],
            "base-removals": list(o.override_remove) if o else [],
            "requested-base-removals": list(o.override_remove) if o else [],
            "base-local-replacements": list(o.override_replace_local) if o else [],
            "requested-base-local-replacements": list(o.override_replace_local) if o else [],
            "kernel-arguments": list(d.kargs),
            "regenerate-initramfs": o.regenerate_initramfs if o else False,
            "initramfs-args": list(o.initramfs_args) if o else [],
        }


@dataclass(frozen=True)
class UpgradeOptions:
    check: bool = False
    preview: bool = False
    download_only: bool = False
    cache_only: bool = False
    allow_downgrade: bool = False


@dataclass(frozen=True)
class Outcome:
    """What a verb did, for the CLI to print: lines, and whether anything changed."""

    changed: bool
    lines: tuple[str, ...]
    diff: PackageDiff | None = None
    checksum: str | None = None


def timestamp_text(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SysrootClient:
    """The verbs, on one sysroot and stateroot."""

    def __init__(self, path: Path, osname: str | None, progress: Progress) -> None:
        self.progress = progress
        self.sysroot = ostree.Sysroot(path.absolute())
        self._osname = osname

    # ---- reading ----

    @property
    def repo(self) -> Any:
        return self.sysroot.repo

    def osname(self) -> str:
        if self._osname:
            return self._osname
        deployments = self.sysroot.deployments()
        booted = [d for d in deployments if d.booted]
        names = sorted({d.osname for d in deployments})
        if booted:
            return booted[0].osname
        if len(names) == 1:
            return names[0]
        raise UsageError(
            f"the sysroot has {len(names)} stateroots ({', '.join(names) or 'none'}): give --os"
        )

    def commit(self, checksum: str) -> CommitSummary:
        return CommitSummary.of(ostree.read_commit(self.repo, checksum))

    def _status(self, d: ostree.Deployment) -> DeploymentStatus:
        try:
            origin: Origin | None = Origin.parse(d.origin)
        except UsageError:
            origin = None
        try:
            commit: CommitSummary | None = self.commit(d.checksum)
        except RepoError:
            commit = None
        return DeploymentStatus(d, origin, commit, read_live_state(d) if d.booted else None)

    def status(self) -> list[DeploymentStatus]:
        return [self._status(d) for d in self.sysroot.deployments()]

    def _own(self) -> list[ostree.Deployment]:
        name = self.osname()
        return [d for d in self.sysroot.deployments() if d.osname == name]

    def merge_deployment(self) -> ostree.Deployment:
        """The deployment whose origin and /etc a new deployment starts from."""
        own = self._own()
        if not own:
            raise DeploymentError(f"stateroot {self.osname()} has no deployment")
        booted = [d for d in own if d.booted]
        return booted[0] if booted else own[0]

    def origin_deployment(self) -> ostree.Deployment:
        """The deployment whose origin (refspec, requests) and base a change starts from: the
        default one, so that changes queue up on a pending deployment (an upgrade staged, then
        a package layered on it) as rpm-ostree's origin merge deployment does; the new
        deployment's /etc and apt sources still come from `merge_deployment()`."""
        own = self._own()
        if not own:
            raise DeploymentError(f"stateroot {self.osname()} has no deployment")
        return own[0]

    def _origin(self, d: ostree.Deployment) -> Origin:
        try:
            return Origin.parse(d.origin)
        except UsageError as e:
            raise DeploymentError(f"deployment {d.id}: {e}") from e

    # ---- pulling ----

    def _remote(self, refspec: Refspec) -> str:
        if refspec.remote is None:
            raise DeploymentError(
                f"the origin {refspec} names no remote: use rebase REMOTE:{refspec.ref}"
            )
        if refspec.remote not in ostree.remote_names(self.repo):
            raise DeploymentError(f"unknown remote {refspec.remote!r}")
        return refspec.remote

    def _pull(self, remote: str, refs: Sequence[str], *, commit_only: bool = False) -> None:
        if commit_only:
            ostree.pull(self.repo, remote, refs, commit_only=True)
            return

        def show(fetched: int, requested: int, done: int, speed: float) -> None:
            self.progress.live(
                f"    receiving objects: {fetched}/{requested}, {human_size(done)}"
                f" at {human_size(speed)}/s"
            )

        with self.progress.step(f"Pulling {' '.join(refs)} from {remote}"):
            stats = ostree.pull(self.repo, remote, refs, on_progress=show)
            self.progress.live(
                f"    received {stats.fetched_objects} objects, "
                f"{human_size(stats.bytes_transferred)} in {stats.seconds:.1f} s"
                + (f" ({stats.delta_parts} delta parts)" if stats.delta_parts else ""),
                final=True,
            )

    def _fetch_ref(self, refspec: Refspec, *, commit_only: bool) -> str:
        remote = self._remote(refspec)
        self._pull(remote, [refspec.ref], commit_only=commit_only)
        checksum = ostree.resolve_ref(self.repo, f"{remote}:{refspec.ref}")
        if checksum is None:
            raise DeploymentError(f"{refspec} did not resolve after the pull")
        return checksum

    def _fetch_commit(self, refspec: Refspec, checksum: str) -> None:
        if ostree.has_commit(self.repo, checksum) and not ostree.commit_is_partial(
            self.repo, checksum
        ):
            return
        self._pull(self._remote(refspec), [checksum])

    # ---- deploying ----

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.sysroot.locked():
            yield

    def _deploy(
        self,
        base: str,
        origin: Origin,
        merge: ostree.Deployment,
        *,
        kargs: Sequence[str] | None = None,
        relayer: bool = True,
        allow_inactive: bool = True,
    ) -> str:
        """Deploy `base` plus the origin's layered packages and overrides (rebuilt from the
        pristine base, never from the current deployment); return the deployed commit."""
        checksum = base
        if relayer:
            checksum, _ = build_layered(
                self.sysroot,
                self.osname(),
                base,
                origin,
                deployment=merge.path,
                progress=self.progress,
                allow_inactive=allow_inactive,
                recommends=_recommends,
            )
        stage = self.sysroot.is_booted()
        if stage:  # after a reboot, apply-live's ref only pins an old commit
            drop_stale_ref(
                self.repo, next((d for d in self.sysroot.deployments() if d.booted), None)
            )
        verb = "Staging" if stage else "Deploying"
        with self.progress.step(f"{verb} {checksum[:12]}"):
            root = self.sysroot.deploy(
                self.osname(),
                checksum,
                origin.to_text(),
                merge=merge,
                kargs=kargs if kargs is not None else merge.kargs,
                stage=stage,
                clean=not _defer_cleanups,
            )
            if _defer_cleanups and not stage:
                _cleanups_due.add(self.sysroot.path)
            if root is not None:
                added = merge_accounts(root)
                if added:
                    self.progress.message(
                        f"    accounts added to /etc: {' '.join(sorted(set(added)))}"
                    )
        return checksum

    def _diff(self, old: str, new: str) -> PackageDiff:
        return diff_packages(self.commit(old).packages, self.commit(new).packages)

    def _deployed_lines(self, new: str) -> tuple[str, ...]:
        c = self.commit(new)
        verb = "Staged" if self.sysroot.is_booted() else "Deployed"
        where = " (run `systemctl reboot` to start it)" if self.sysroot.is_booted() else ""
        return (f"{verb} {new} (version {c.version or '-'}){where}",)

    def _deploy_target(
        self, merge: ostree.Deployment, origin: Origin, refspec: Refspec, checksum: str
    ) -> Outcome:
        self._fetch_commit(refspec, checksum)
        deployed = self._deploy(checksum, origin, merge)
        diff = self._diff(merge.checksum, deployed)
        return Outcome(True, self._deployed_lines(deployed), diff, deployed)

    # ---- verbs ----

    def upgrade(self, options: UpgradeOptions) -> Outcome:
        with self._locked():
            merge = self.merge_deployment()
            origin = self._origin(self.origin_deployment())
            current = self.commit(self.commit(self.origin_deployment().checksum).base_checksum)
            if origin.override_commit:
                return Outcome(
                    False,
                    (
                        f"Pinned to {origin.override_commit} (by deploy or rebase): not following"
                        f" {origin.refspec}; use `apt-ostree rebase {origin.refspec}` to follow"
                        " it again.",
                    ),
                )
            if options.cache_only:
                remote = self._remote(origin.refspec)
                new = ostree.resolve_ref(self.repo, f"{remote}:{origin.refspec.ref}")
                if new is None or ostree.commit_is_partial(self.repo, new):
                    raise DeploymentError(
                        f"no downloaded update for {origin.refspec}: run upgrade --download-only"
                        " first"
                    )
            else:
                with self.progress.step(f"Checking {origin.refspec} for updates"):
                    new = self._fetch_ref(origin.refspec, commit_only=True)
            if new == current.checksum:
                return Outcome(False, ("No upgrade available.",))
            target = self.commit(new)
            if self._is_older(target, current) and not options.allow_downgrade:
                raise DeploymentError(
                    f"{origin.refspec} is at {new[:12]} (version {target.version or '-'},"
                    f" {timestamp_text(target.timestamp)}), older than the deployed"
                    f" {current.checksum[:12]} ({timestamp_text(current.timestamp)}):"
                    " refusing to downgrade without --allow-downgrade"
                )
            diff = diff_packages(current.packages, target.packages)
            head = f"Update available: {new} (version {target.version or '-'})"
            if options.check or options.preview:
                return Outcome(True, (head,), diff if options.preview else None, new)
            if not options.cache_only:
                self._fetch_commit(origin.refspec, new)
            if options.download_only:
                return Outcome(True, (f"Downloaded {new} (version {target.version or '-'})",))
            deployed = self._deploy(new, origin, merge)
            diff = self._diff(merge.checksum, deployed)
            return Outcome(True, self._deployed_lines(deployed), diff, deployed)

    def _is_older(self, new: CommitSummary, current: CommitSummary) -> bool:
        """Older by timestamp; with equal timestamps (SOURCE_DATE_EPOCH composes), an ancestor
        of the current commit, or a lower version in Debian's version order."""
        if new.timestamp != current.timestamp:
            return new.timestamp < current.timestamp
        checksum: str | None = current.checksum
        while checksum is not None and ostree.has_commit(self.repo, checksum):
            if checksum == new.checksum:
                return True
            checksum = ostree.read_commit(self.repo, checksum).parent
        if new.version and current.version:
            return version_compare(new.version, current.version) < 0
        return False

    def _find_version(self, refspec: Refspec, version: str) -> str:
        """Walk the ref's history (commit objects only) for a commit with that version."""
        remote = self._remote(refspec)
        with self.progress.step(f"Looking for version {version} in {refspec}"):
            ostree.pull(self.repo, remote, [refspec.ref], commit_only=True, depth=-1)
        checksum = ostree.resolve_ref(self.repo, f"{remote}:{refspec.ref}")
        while checksum is not None:
            info = ostree.read_commit(self.repo, checksum)
            if info.version == version:
                return checksum
            parent = info.parent
            checksum = parent if parent and ostree.has_commit(self.repo, parent) else None
        raise DeploymentError(f"version {version} not found in the history of {refspec}")

    def _revision(self, refspec: Refspec, revision: str) -> str:
        if revision.startswith("revision="):
            checksum = revision.removeprefix("revision=")
            if not CHECKSUM_RE.match(checksum):
                raise UsageError(f"revision={checksum}: expected a 64-character checksum")
            return checksum
        if revision.startswith("version="):
            revision = revision.removeprefix("version=")
        return self._find_version(refspec, revision)

    def deploy(self, revision: str) -> Outcome:
        """Deploy a version (or revision=CHECKSUM) of the origin's ref, pinning to it."""
        with self._locked():
            merge = self.merge_deployment()
            origin = self._origin(merge)
            checksum = self._revision(origin.refspec, revision)
            self._fetch_commit(origin.refspec, checksum)
            if checksum == merge.checksum and origin.override_commit == checksum:
                return Outcome(False, (f"Already deployed: {checksum}",))
            return self._deploy_target(merge, origin.with_pin(checksum), origin.refspec, checksum)

    def rebase(self, target: str, revision: str | None = None) -> Outcome:
        """Follow another ref (REMOTE:REF, or REF on the current remote); pin with a revision."""
        pin: str | None = None
        head, _, last = target.rpartition(":")
        if head and CHECKSUM_RE.match(last):
            target, pin = head, last
        with self._locked():
            merge = self.merge_deployment()
            origin = self._origin(merge)
            refspec = Refspec.parse(target)
            if refspec.remote is None:
                refspec = Refspec(origin.refspec.remote, refspec.ref)
            if revision is not None:
                pin = self._revision(refspec, revision)
            checksum = pin or self._fetch_ref(refspec, commit_only=False)
            new_origin = origin.with_refspec(refspec, pin=pin)
            if checksum == merge.checksum and new_origin == origin:
                return Outcome(False, (f"Already on {refspec} at {checksum}",))
            return self._deploy_target(merge, new_origin, refspec, checksum)

    def rollback(self) -> Outcome:
        """Make the previous deployment the default (instant: only the boot order changes).

        rpm-ostree's rule: when the booted deployment is not the default (an upgrade is
        pending), the booted one becomes the default again; otherwise the next one does.
        """
        with self._locked():
            all_ = [d for d in self.sysroot.deployments() if not d.staged]
            own = [d for d in all_ if d.osname == self.osname()]
            booted = [d for d in own if d.booted]
            if booted and own[0] != booted[0]:
                target = booted[0]
            elif len(own) >= 2:
                target = own[1]
            else:
                raise DeploymentError(
                    f"no rollback deployment: stateroot {self.osname()} has"
                    f" {len(own)} deployment(s)"
                )
            self.sysroot.write_order([target] + [d for d in all_ if d != target])
            c = self.commit(target.checksum)
            return Outcome(
                True,
                (f"Moving {target.checksum} (version {c.version or '-'}) to be first deployment",),
                self._diff(own[0].checksum, target.checksum),
                target.checksum,
            )

    def cleanup(self, *, pending: bool, rollback: bool, base: bool, metadata: bool) -> Outcome:
        if not (pending or rollback or base or metadata):
            raise UsageError("cleanup: give at least one of -p, -r, -b, -m")
        lines: list[str] = []
        with self._locked():
            all_ = self.sysroot.deployments()
            own = [d for d in all_ if d.osname == self.osname()]
            booted = [d for d in own if d.booted]
            unstaged = [d for d in own if not d.staged]
            current = booted[0] if booted else (unstaged[0] if unstaged else None)
            keep = list(all_)
            base_removed = False
            if pending and current is not None:
                cut = own[: own.index(current)]
                keep = [d for d in keep if d not in cut]
                lines += [f"Removed pending deployment {d.id}" for d in cut]
            if rollback and current is not None:
                cut = own[own.index(current) + 1 :]
                keep = [d for d in keep if d not in cut]
                lines += [f"Removed rollback deployment {d.id}" for d in cut]
            if keep != all_:
                self.sysroot.write_order(keep)
            if base:  # first: the cached base checkout keeps its objects' data alive
                base_removed = remove_base_trees(self.sysroot.path, self.osname())
            if base or keep != all_:
                self.sysroot.cleanup()
            if base:
                if base_removed:
                    lines.append("Removed the cached checkout of the base")
                lines.append("Pruned unreferenced objects")
            if metadata:
                lines += self._clean_metadata()
        return Outcome(bool(lines), tuple(lines) or ("Nothing to clean up.",))

    def _clean_metadata(self) -> list[str]:
        """Drop commit objects fetched for --check/--preview or version lookups only."""
        self.sysroot.cleanup()
        return ["Removed cached update metadata"]

    def kargs(
        self,
        *,
        append: Sequence[str] = (),
        delete: Sequence[str] = (),
        replace: Sequence[str] = (),
        append_if_missing: Sequence[str] = (),
        delete_if_present: Sequence[str] = (),
        deploy_index: int | None = None,
    ) -> Outcome:
        """Show or change kernel arguments; a change makes a new deployment (rollback works)."""
        with self._locked():
            own = self._own()
            if deploy_index is not None:
                if not 0 <= deploy_index < len(own):
                    raise UsageError(
                        f"--deploy-index {deploy_index}: stateroot {self.osname()} has"
                        f" {len(own)} deployments"
                    )
                source = own[deploy_index]
            else:
                source = self.merge_deployment()
            new = edit_kargs(
                list(source.kargs), append, delete, replace, append_if_missing, delete_if_present
            )
            if new == list(source.kargs):
                return Outcome(False, (" ".join(new),))
            self._deploy(source.checksum, self._origin(source), source, kargs=new, relayer=False)
            return Outcome(True, ("Kernel arguments updated:", " ".join(new)))

    def finalize_deployment(self, checksum: str | None) -> Outcome:
        staged = [d for d in self.sysroot.deployments() if d.staged]
        if not staged:
            raise DeploymentError("no staged deployment to finalize")
        if checksum is not None and staged[0].checksum != checksum:
            raise DeploymentError(f"the staged deployment is {staged[0].checksum}, not {checksum}")
        return Outcome(True, (f"Staged deployment {staged[0].id} is finalized at shutdown",))

    # ---- layering and overrides ----

    def _change_origin(
        self, edit: Callable[[Origin, CommitSummary], Origin], *, allow_inactive: bool = False
    ) -> Outcome:
        """Apply `edit` to the origin and deploy the base rebuilt with the new requests."""
        with self._locked():
            merge = self.merge_deployment()
            source = self.origin_deployment()
            origin = self._origin(source)
            base = self.commit(self.commit(source.checksum).base_checksum)
            new_origin = edit(origin, base)
            if new_origin == origin:
                return Outcome(False, ("No change.",))
            deployed = self._deploy(base.checksum, new_origin, merge, allow_inactive=allow_inactive)
            diff = self._diff(merge.checksum, deployed)
            return Outcome(True, self._deployed_lines(deployed), diff, deployed)

    def install(
        self, items: Sequence[str], *, idempotent: bool = False, allow_inactive: bool = False
    ) -> Outcome:
        """Layer packages from the repositories (names) or local .deb files (paths)."""
        names = [i for i in items if not _is_deb_path(i)]
        debs = [Path(i) for i in items if _is_deb_path(i)]

        def edit(origin: Origin, base: CommitSummary) -> Origin:
            requested = _add_requests(origin.requested_packages, names, idempotent=idempotent)
            local = _add_requests(
                origin.requested_local_packages,
                [self._keep_local(d) for d in debs],
                idempotent=idempotent,
            )
            return replace(origin, requested_packages=requested, requested_local_packages=local)

        return self._change_origin(edit, allow_inactive=allow_inactive)

    def uninstall(self, items: Sequence[str], *, idempotent: bool = False) -> Outcome:
        def edit(origin: Origin, base: CommitSummary) -> Origin:
            requested = list(origin.requested_packages)
            local = list(origin.requested_local_packages)
            for item in items:
                name = item.split("=", 1)[0]
                matches = [f for f in local if f.split("_", 1)[0] == name]
                if name in requested:
                    requested.remove(name)
                elif matches:
                    local.remove(matches[0])
                elif not idempotent:
                    raise LayeringError(f"{name} is not a layered package")
            return replace(
                origin, requested_packages=tuple(requested), requested_local_packages=tuple(local)
            )

        return self._change_origin(edit)

    def override_remove(self, names: Sequence[str]) -> Outcome:
        def edit(origin: Origin, base: CommitSummary) -> Origin:
            in_base = {p[0] for p in base.packages}
            missing = [n for n in names if n not in in_base]
            if missing:
                raise LayeringError(f"not in the base image: {', '.join(missing)}")
            return replace(
                origin,
                override_remove=_add_requests(origin.override_remove, names, idempotent=False),
            )

        return self._change_origin(edit)

    def override_replace(self, items: Sequence[str]) -> Outcome:
        """Replace base packages by NAME=VERSION from the repositories or by local .debs."""

        def edit(origin: Origin, base: CommitSummary) -> Origin:
            in_base = {p[0] for p in base.packages}
            pinned = [i for i in items if not _is_deb_path(i)]
            for item in pinned:
                name, sep, version = item.partition("=")
                if not sep or not version:
                    raise UsageError(f"override replace {item}: expected NAME=VERSION or a .deb")
                if name not in in_base:
                    raise LayeringError(f"{name} is not in the base image")
            local = [self._keep_local(Path(i)) for i in items if _is_deb_path(i)]
            return replace(
                origin,
                override_replace=_add_requests(origin.override_replace, pinned, idempotent=False),
                override_replace_local=_add_requests(
                    origin.override_replace_local, local, idempotent=False
                ),
            )

        return self._change_origin(edit)

    def override_reset(self, names: Sequence[str], *, all_: bool = False) -> Outcome:
        def edit(origin: Origin, base: CommitSummary) -> Origin:
            if all_:
                return replace(
                    origin, override_remove=(), override_replace=(), override_replace_local=()
                )
            known = set(origin.override_remove)
            known |= {r.split("=", 1)[0] for r in origin.override_replace}
            known |= {f.split("_", 1)[0] for f in origin.override_replace_local}
            unknown = [n for n in names if n not in known]
            if unknown:
                raise LayeringError(f"no override for: {', '.join(unknown)}")
            return replace(
                origin,
                override_remove=tuple(n for n in origin.override_remove if n not in names),
                override_replace=tuple(
                    r for r in origin.override_replace if r.split("=", 1)[0] not in names
                ),
                override_replace_local=tuple(
                    f for f in origin.override_replace_local if f.split("_", 1)[0] not in names
                ),
            )

        return self._change_origin(edit)

    def reset(self, *, overlays: bool = True, overrides: bool = True) -> Outcome:
        def edit(origin: Origin, base: CommitSummary) -> Origin:
            if overlays:
                origin = replace(origin, requested_packages=(), requested_local_packages=())
            if overrides:
                origin = replace(
                    origin, override_remove=(), override_replace=(), override_replace_local=()
                )
            return origin

        return self._change_origin(edit)

    def initramfs(self, *, enable: bool | None, args: Sequence[str] = ()) -> Outcome:
        """Regenerate the initramfs on the client (dracut in the sandbox), or stop doing so;
        kept in the origin, so every upgrade regenerates it again. enable=None shows it."""
        if enable is None:
            origin = self._origin(self.merge_deployment())
            state = "enabled" if origin.regenerate_initramfs else "disabled"
            extra = (
                f" (arguments: {' '.join(origin.initramfs_args)})" if origin.initramfs_args else ""
            )
            return Outcome(False, (f"Initramfs regeneration: {state}{extra}",))

        def edit(origin: Origin, base: CommitSummary) -> Origin:
            if enable:
                return replace(origin, regenerate_initramfs=True, initramfs_args=tuple(args))
            if not origin.regenerate_initramfs:
                raise LayeringError("initramfs regeneration is not enabled")
            return replace(origin, regenerate_initramfs=False, initramfs_args=())

        return self._change_origin(edit)

    def search(self, patterns: Sequence[str]) -> list[tuple[str, str, str]]:
        merge = self.merge_deployment()
        base = self.commit(merge.checksum).base_checksum
        return layering_search(
            self.sysroot, self.osname(), base, patterns, deployment=merge.path,
            progress=self.progress,
        )  # fmt: skip

    def refresh_md(self) -> Outcome:
        merge = self.merge_deployment()
        base = self.commit(merge.checksum).base_checksum
        layering_refresh(
            self.sysroot, self.osname(), base, deployment=merge.path, progress=self.progress
        )
        return Outcome(True, ("Package lists updated.",))

    def _keep_local(self, deb: Path) -> str:
        """Copy a local .deb into the machine's cache (upgrades apply it again); its name."""
        if not deb.is_file():
            raise LayeringError(f"{deb}: no such file")
        try:
            fields = run(["dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture"])
        except CommandError as e:
            raise LayeringError(f"{deb} is not a valid .deb: {e}") from e
        info = dict(line.split(": ", 1) for line in fields.stdout.splitlines() if ": " in line)
        try:
            version = info["Version"].replace(":", "%3a")
            name = f"{info['Package']}_{version}_{info['Architecture']}.deb"
        except KeyError as e:
            raise LayeringError(f"{deb} is not a valid .deb: no {e.args[0]} field") from e
        local = local_dir(self.sysroot.path, self.osname())
        local.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb, local / name)
        return name

    # ---- db ----

    def resolve_commit(self, spec: str) -> str:
        """A deployment index, a checksum (or prefix), a ref, or booted/pending/rollback."""
        own = self._own()
        if spec.isdigit() and int(spec) < len(own):
            return own[int(spec)].checksum
        if spec in ("booted", "default"):
            return self.merge_deployment().checksum
        if spec == "rollback":
            merge = self.merge_deployment()
            later = own[own.index(merge) + 1 :]
            if not later:
                raise DeploymentError("there is no rollback deployment")
            return later[0].checksum
        try:
            checksum = ostree.resolve_ref(self.repo, spec)
        except RepoError as e:
            raise DeploymentError(f"unknown commit, ref or deployment {spec!r}") from e
        if checksum is None:
            raise DeploymentError(f"unknown commit, ref or deployment {spec!r}")
        return checksum

    def db_diff(self, old: str | None, new: str | None) -> tuple[str, str, PackageDiff]:
        own = self._own()
        if old is None and new is None:
            if len(own) < 2:
                raise DeploymentError("db diff: there is only one deployment; name two commits")
            merge = self.merge_deployment()
            others = [d for d in own if d != merge]
            old_c, new_c = merge.checksum, others[0].checksum
            if own.index(others[0]) > own.index(merge):
                old_c, new_c = others[0].checksum, merge.checksum
        else:
            old_c = self.resolve_commit(old or "booted")
            new_c = self.resolve_commit(new or "booted")
        return old_c, new_c, self._diff(old_c, new_c)

    def db_list(self, spec: str | None) -> tuple[str, list[tuple[str, str, str]]]:
        checksum = self.resolve_commit(spec or "booted")
        return checksum, list(self.commit(checksum).packages)


def _is_deb_path(item: str) -> bool:
    return item.endswith(".deb") and ("/" in item or Path(item).is_file())


def _add_requests(
    current: tuple[str, ...], new: Sequence[str], *, idempotent: bool
) -> tuple[str, ...]:
    out = list(current)
    for item in new:
        if item in out:
            if not idempotent:
                raise LayeringError(f"{item} is already requested")
            continue
        out.append(item)
    return tuple(out)


def edit_kargs(
    current: list[str],
    append: Sequence[str],
    delete: Sequence[str],
    replace: Sequence[str],
    append_if_missing: Sequence[str],
    delete_if_present: Sequence[str],
) -> list[str]:
    """rpm-ostree's kargs semantics: KEY=VALUE or KEY; replace is KEY=OLD=NEW or KEY=NEW."""
    out = list(current)
    for arg in delete:
        if arg not in out and not any(a.split("=", 1)[0] == arg for a in out):
            raise DeploymentError(f"kernel argument {arg!r} is not present")
        out = _without(out, arg)
    for arg in delete_if_present:
        out = _without(out, arg)
    for arg in replace:
        key, _, rest = arg.partition("=")
        old, sep, new = rest.partition("=")
        matches = [i for i, a in enumerate(out) if a.split("=", 1)[0] == key]
        if sep:
            matches = [i for i in matches if out[i] == f"{key}={old}"]
        if not matches:
            raise DeploymentError(f"kernel argument {key!r} is not present to replace")
        out[matches[0]] = f"{key}={new if sep else rest}" if (new if sep else rest) else key
    out += list(append)
    out += [a for a in append_if_missing if a not in out]
    return out


def _without(args: list[str], arg: str) -> list[str]:
    if "=" in arg:
        return [a for a in args if a != arg]
    return [a for a in args if a.split("=", 1)[0] != arg]


def init_sysroot(
    path: Path,
    osname: str,
    *,
    remote: str,
    url: str,
    ref: str,
    verify: dict[str, Any],
    kargs: Sequence[str],
    progress: Progress,
) -> Outcome:
    """A sysroot in a folder: stateroot, remote with its verification, pull, first deployment.

    On failure a folder that this call created is removed again, so a mistyped URL or ref
    leaves nothing behind.
    """
    path = path.absolute()
    fresh = not path.exists() or not any(path.iterdir())
    if not fresh and (path / "ostree" / "repo").is_dir():
        if any(d.osname == osname for d in ostree.Sysroot(path).deployments()):
            raise DeploymentError(f"stateroot {osname} in {path} already has deployments")
    elif not fresh:
        raise DeploymentError(f"{path} is neither empty nor an OSTree sysroot")
    try:
        return _init(path, osname, Refspec(remote, ref), url, kargs, progress, verify)
    except BaseException:
        if fresh:
            remove_tree(path)
        raise


def _init(
    path: Path,
    osname: str,
    refspec: Refspec,
    url: str,
    kargs: Sequence[str],
    progress: Progress,
    verify: dict[str, Any],
) -> Outcome:
    with progress.step(f"Initializing the sysroot {path}"):
        sysroot = ostree.Sysroot.initialize(path, osname)
        ostree.add_remote(sysroot.repo, str(refspec.remote), url, **verify)
    client = SysrootClient(path, osname, progress)
    with client._locked():
        checksum = client._fetch_ref(refspec, commit_only=False)
        with progress.step(f"Deploying {checksum[:12]}"):
            client.sysroot.deploy(
                osname, checksum, Origin(refspec).to_text(), merge=None, kargs=kargs, stage=False
            )
    c = client.commit(checksum)
    return Outcome(True, (f"Deployed {checksum} (version {c.version or '-'}) in {path}",))


def remove_tree(path: Path) -> None:
    """Remove a folder sysroot, whose deployment roots libostree made immutable."""
    deploys = list(path.glob("ostree/deploy/*/deploy/*"))
    if deploys:
        with contextlib.suppress(CommandError):
            run(["chattr", "-i", *map(str, deploys)])
    shutil.rmtree(path, ignore_errors=True)


def reboot_into_staged() -> None:
    """`-r`: reboot into the staged deployment (only on a machine booted from OSTree)."""
    if BOOTED_MARKER.exists():
        run(["systemctl", "reboot"])


def unchanged(outcome: Outcome, exit_77: bool) -> Outcome:
    if exit_77 and not outcome.changed:
        raise UnchangedError("\n".join(outcome.lines))
    return outcome
