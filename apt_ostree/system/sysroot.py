"""One sysroot and stateroot, as the verbs see it: reading deployments and commits, pulling,
and deploying a base with the origin's layered packages rebuilt on it.

Bus-free and typed: the CLI's `--sysroot` mode and apt-ostreed's worker both construct a
`System` and hand it to `execute`. Everything that touches deployments goes through
libostree (`apt_ostree.ostree.Sysroot`): deployments are written by `deploy_tree` +
`simple_write_deployment` in a folder sysroot and staged by `stage_tree` on a booted system,
/etc is merged by libostree. Every mutation holds libostree's sysroot lock. Settings (the
daemon's) and the progress sink are arguments, never module state.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree import keys, ostree
from apt_ostree.accounts import merge_accounts
from apt_ostree.boot import trial
from apt_ostree.config import DaemonConfig, load_config
from apt_ostree.container.imageref import ImageReference
from apt_ostree.container.importer import image_digests
from apt_ostree.errors import ConfigError, DeploymentError, StateError, UsageError
from apt_ostree.layering.build import LayerTarget
from apt_ostree.layering.build import build as build_layered
from apt_ostree.origin import Origin, Refspec
from apt_ostree.pkgdiff import diff_packages
from apt_ostree.progress import Progress, human_size
from apt_ostree.system.live_state import drop_stale_ref, read_state
from apt_ostree.system.results import (
    BootFailure,
    CachedUpdate,
    DeploymentInfo,
    Package,
    PackageDiff,
)

# what the last automatic check found, in the stateroot's /var (kept across reboots and the
# daemon's idle exits; /var/lib/apt-ostree on a booted machine)
CACHED_UPDATE = "var/lib/apt-ostree/cached-update.json"


def default_sysroot(given: Path | None) -> Path:
    """`--sysroot`, or / on a machine booted from OSTree."""
    if given is not None:
        # absolute: apt's Dir:: settings and bwrap binds made from it must not depend on
        # the working directory
        return given.absolute()
    if Path(keys.BOOTED_MARKER).exists():
        return Path("/")
    raise UsageError("this machine is not booted from OSTree: give --sysroot DIR")


@dataclass(frozen=True)
class Settings:
    """What the daemon's configuration changes in the verbs."""

    # layering also installs the packages' Recommends (apt-ostreed's `Recommends=`)
    recommends: bool = False
    # a deploy into a folder sysroot leaves the trees of the deployments it drops, and the
    # unreachable objects, to `System.run_deferred_cleanup()`: the daemon's worker reports
    # the result first, then cleans up (a booted machine's staged deployment is cleaned up at
    # shutdown anyway)
    defer_cleanup: bool = False


@dataclass(frozen=True)
class CommitSummary:
    checksum: str
    version: str | None
    timestamp: int
    packages: tuple[Package, ...]
    base_checksum: str

    @staticmethod
    def of(info: ostree.CommitInfo) -> CommitSummary:
        md = info.metadata
        return CommitSummary(
            checksum=info.checksum,
            version=info.version,
            timestamp=info.timestamp,
            packages=tuple((str(n), str(v), str(a)) for n, v, a in md.get(keys.PACKAGES, ())),
            base_checksum=str(md.get(keys.BASE_CHECKSUM, info.checksum)),
        )


def parse_origin(d: ostree.Deployment) -> Origin:
    try:
        return Origin.parse(d.origin)
    except StateError as e:
        raise StateError(f"deployment {d.id}: {e}") from e


class System:
    """A sysroot (a folder, or /) and one of its stateroots."""

    def __init__(
        self,
        path: Path,
        osname: str | None,
        progress: Progress,
        settings: Settings = Settings(),  # noqa: B008 (frozen)
    ) -> None:
        self.progress = progress
        self.settings = settings
        self.sysroot = ostree.Sysroot(path.absolute())
        self._osname = osname
        self._cleanup_due = False

    @property
    def repo(self) -> ostree.Repo:
        return self.sysroot.repo

    # ---- reading ----

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
        return CommitSummary.of(self.repo.read_commit(checksum))

    def info(self, d: ostree.Deployment) -> DeploymentInfo:
        """A deployment as `status` shows it, from its origin and its commit's metadata."""
        try:
            o: Origin | None = Origin.parse(d.origin)
        except StateError:
            o = None
        c = self.commit(d.checksum) if self.repo.has_commit(d.checksum) else None
        live = read_state(d) if d.booted else None
        return DeploymentInfo(
            id=d.id,
            osname=d.osname,
            checksum=d.checksum,
            base_checksum=c.base_checksum if c else d.checksum,
            version=c.version if c else None,
            timestamp=c.timestamp if c else None,
            origin=str(o.refspec) if o else None,
            override_commit=o.override_commit if o else None,
            booted=d.booted,
            staged=d.staged,
            pinned=d.pinned,
            unlocked=d.unlocked,
            live_commit=live.commit if live else None,
            live_replaced=live.replaced if live else False,
            requested_packages=o.requested_packages if o else (),
            requested_local_packages=o.requested_local_packages if o else (),
            requested_base_removals=o.override_remove if o else (),
            requested_base_replacements=o.override_replace if o else (),
            requested_base_local_replacements=o.override_replace_local if o else (),
            kernel_arguments=d.kargs,
            regenerate_initramfs=o.regenerate_initramfs if o else False,
            initramfs_args=o.initramfs_args if o else (),
            package_count=len(c.packages) if c else None,
            **self._image_fields(o, c.base_checksum if c else d.checksum),
        )

    def _image_fields(self, o: Origin | None, base: str) -> dict[str, str | None]:
        if o is None or not isinstance(o.refspec, ImageReference):
            return {}
        digest = image_digests(self.repo).get(base)
        return {"container_image_reference": str(o.refspec), "container_image_digest": digest}

    def status(self) -> tuple[DeploymentInfo, ...]:
        state = self.trial_state()
        return tuple(_with_trial(self.info(d), d, state) for d in self.sysroot.deployments())

    def boot_failures(self) -> tuple[BootFailure, ...]:
        """The updates that failed their trial boot (the blocklist), oldest first."""
        return tuple(
            BootFailure(f.checksum, f.base_checksum, f.version, f.reason, f.time)
            for f in self.trial_state().blocklist()
        )

    def cached_update(self) -> CachedUpdate | None:
        """What the last automatic check found, unless it is deployed by now."""
        try:
            path = self.var() / CACHED_UPDATE
            update = CachedUpdate.from_wire(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            return None
        deployed = {self.commit(d.checksum).base_checksum for d in self.own()}
        return None if update is None or update.checksum in deployed else update

    def write_cached_update(self, update: CachedUpdate | None) -> None:
        path = self.var() / CACHED_UPDATE
        if update is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(update.to_wire(), indent=2) + "\n")
        tmp.replace(path)

    def config(self) -> DaemonConfig:
        """The machine's /etc/apt-ostreed.conf (the merge deployment's /etc: the daemon's own
        file on a booted machine); the defaults when it is missing or unreadable (the daemon
        refuses a malformed file itself)."""
        try:
            return load_config(self.merge_deployment().path / "etc" / "apt-ostreed.conf")
        except (ConfigError, DeploymentError, UsageError):
            return DaemonConfig()

    def trial_timeout(self) -> int:
        return self.config().boot_trial_timeout

    def policy(self) -> str:
        """AutomaticUpdatePolicy of the machine's /etc/apt-ostreed.conf (the merge
        deployment's /etc: the daemon's own file on a booted machine); none when unset or
        unreadable (the daemon refuses a malformed file itself)."""
        return self.config().automatic_update_policy.value

    def var(self) -> Path:
        """The stateroot's /var (a booted machine's /var is bound from it)."""
        return self.sysroot.path / "ostree" / "deploy" / self.osname() / "var"

    def trial_state(self) -> trial.TrialState:
        try:
            return trial.load(self.var())
        except (StateError, UsageError):
            return trial.TrialState()

    def own(self) -> list[ostree.Deployment]:
        """The deployments of our stateroot, in boot order."""
        name = self.osname()
        return [d for d in self.sysroot.deployments() if d.osname == name]

    def merge_deployment(self) -> ostree.Deployment:
        """The deployment whose /etc (and apt sources) a new deployment starts from: the
        booted one, else the default."""
        own = self.own()
        if not own:
            raise DeploymentError(f"stateroot {self.osname()} has no deployment")
        booted = [d for d in own if d.booted]
        return booted[0] if booted else own[0]

    def origin_deployment(self) -> ostree.Deployment:
        """The deployment whose origin (refspec, requests) and base a change starts from: the
        default one, so that changes queue up on a pending deployment (an upgrade staged, then
        a package layered on it) as rpm-ostree's origin merge deployment does; the new
        deployment's /etc and apt sources still come from `merge_deployment()`."""
        own = self.own()
        if not own:
            raise DeploymentError(f"stateroot {self.osname()} has no deployment")
        return own[0]

    def package_diff(self, old: str, new: str) -> PackageDiff:
        return repo_package_diff(self.repo, old, new)

    # ---- pulling ----

    def remote(self, refspec: Refspec) -> str:
        if refspec.remote is None:
            raise DeploymentError(
                f"the origin {refspec} names no remote: use rebase REMOTE:{refspec.ref}"
            )
        if refspec.remote not in self.repo.remote_names():
            raise DeploymentError(f"unknown remote {refspec.remote!r}")
        return refspec.remote

    def pull(self, remote: str, refs: Sequence[str], *, commit_only: bool = False) -> None:
        if commit_only:
            self.repo.pull(remote, refs, commit_only=True)
            return

        def show(fetched: int, requested: int, done: int, speed: float) -> None:
            self.progress.live(
                f"    receiving objects: {fetched}/{requested}, {human_size(done)}"
                f" at {human_size(speed)}/s"
            )

        with self.progress.step(f"Pulling {' '.join(refs)} from {remote}"):
            stats = self.repo.pull(remote, refs, on_progress=show)
            self.progress.live(
                f"    received {stats.fetched_objects} objects, "
                f"{human_size(stats.bytes_transferred)} in {stats.seconds:.1f} s"
                + (f" ({stats.delta_parts} delta parts)" if stats.delta_parts else ""),
                final=True,
            )

    def fetch_ref(self, refspec: Refspec, *, commit_only: bool) -> str:
        """Pull the ref (or only its commit object) and return its checksum."""
        remote = self.remote(refspec)
        self.pull(remote, [refspec.ref], commit_only=commit_only)
        checksum = self.repo.resolve_ref(f"{remote}:{refspec.ref}")
        if checksum is None:
            raise DeploymentError(f"{refspec} did not resolve after the pull")
        return checksum

    def fetch_commit(self, refspec: Refspec, checksum: str) -> None:
        """Have the whole tree of `checksum` (from refspec's remote when it is missing)."""
        if self.repo.has_commit(checksum) and not self.repo.commit_is_partial(checksum):
            return
        self.pull(self.remote(refspec), [checksum])

    # ---- deploying ----

    def deploy(
        self,
        base: str,
        origin: Origin,
        merge: ostree.Deployment,
        *,
        kargs: Sequence[str] | None = None,
        relayer: bool = True,
        allow_inactive: bool = True,
        check: Callable[[Path], str] | None = None,
    ) -> str:
        """Deploy `base` plus the origin's layered packages and overrides (rebuilt from the
        pristine base, never from the current deployment); return the deployed commit.

        `check`, when given, first sees the new tree as it would boot (/etc merged) and
        raises to refuse it: nothing is deployed then; its line is shown otherwise."""
        checksum = base
        if relayer:
            target = LayerTarget(
                self.sysroot,
                self.osname(),
                base,
                origin,
                merge.path,
                allow_inactive=allow_inactive,
                recommends=self.settings.recommends,
            )
            checksum, _ = build_layered(target, self.progress)
        if check is not None:
            self.progress.message(self._checked(checksum, origin, merge, kargs, check))
        stage = self.sysroot.is_booted()
        if stage:  # after a reboot, apply-live's ref only pins an old commit
            drop_stale_ref(
                self.repo, next((d for d in self.sysroot.deployments() if d.booted), None)
            )
        defer = self.settings.defer_cleanup and not stage
        with self.progress.step(f"{'Staging' if stage else 'Deploying'} {checksum[:12]}"):
            root = self.sysroot.deploy(
                self.osname(),
                checksum,
                origin.to_text(),
                merge=merge,
                kargs=kargs if kargs is not None else merge.kargs,
                stage=stage,
                clean=not defer,
            )
            self._cleanup_due = self._cleanup_due or defer
            if stage:
                self._arm_trial(base)
            if root is not None:
                added = merge_accounts(root)
                if added:
                    self.progress.message(
                        f"    accounts added to /etc: {' '.join(sorted(set(added)))}"
                    )
        return checksum

    def _checked(
        self,
        checksum: str,
        origin: Origin,
        merge: ostree.Deployment,
        kargs: Sequence[str] | None,
        check: Callable[[Path], str],
    ) -> str:
        with self.progress.step(f"Checking out {checksum[:12]} to check it"):
            root = self.sysroot.deploy(
                self.osname(), checksum, origin.to_text(), merge=merge,
                kargs=kargs if kargs is not None else merge.kargs, stage=False, write=False,
            )  # fmt: skip
            assert root is not None
        try:
            return check(root)
        finally:
            self.sysroot.cleanup()  # the checked tree was never in the boot list

    def _arm_trial(self, base: str) -> None:
        """Put the deployment just staged on trial at the next boot, where the machine boots
        through apt-ostree's GRUB config and BootTrialTimeout is not 0 (docs/boot.md)."""
        timeout = self.trial_timeout()
        if timeout == 0 or not trial.enabled(self.sysroot.path):
            return
        deployments = self.sysroot.deployments()
        staged = next((d for d in deployments if d.staged), None)
        booted = next((d for d in deployments if d.booted), None)
        if staged is None or booted is None:
            return
        version = self.commit(staged.checksum).version
        t = trial.Trial(staged.id, staged.checksum, base, version, booted.id, int(time.time()))
        trial.arm(self.sysroot.path, self.var(), t, timeout)

    def deployed_lines(self, new: str) -> tuple[str, ...]:
        c = self.commit(new)
        verb = "Staged" if self.sysroot.is_booted() else "Deployed"
        where = " (run `systemctl reboot` to start it)" if self.sysroot.is_booted() else ""
        lines = [f"{verb} {new} (version {c.version or '-'}){where}"]
        t = trial.load(self.var()).trial if self.sysroot.is_booted() else None
        if t is not None and t.checksum == new:
            lines.append(
                f"The next boot is a trial: it becomes the default once it passes the health"
                f" checks within {self.trial_timeout()} s, else the current deployment boots"
                " again by itself."
            )
        return tuple(lines)

    def run_deferred_cleanup(self, progress: Progress) -> None:
        """The cleanup `Settings.defer_cleanup` left; a sysroot locked by another process is
        left for its own next cleanup (libostree removes any tree that is not a deployment)."""
        if not self._cleanup_due:
            return
        self._cleanup_due = False
        sysroot = ostree.Sysroot(self.sysroot.path)
        with progress.step("Removing dropped deployments and pruning"), sysroot.locked():
            sysroot.cleanup()


def _with_trial(
    info: DeploymentInfo, d: ostree.Deployment, state: trial.TrialState
) -> DeploymentInfo:
    on_trial = state.trial is not None and state.trial.deployment == d.id
    failure = state.failure_of(d.id)
    if not on_trial and failure is None:
        return info
    return dataclasses.replace(
        info,
        boot_trial=("booting" if d.booted else "pending") if on_trial else None,
        boot_failure=failure.reason if failure else None,
    )


def commit_packages(repo: ostree.Repo, checksum: str) -> tuple[tuple[str, str, str], ...]:
    """A commit's package list, from its metadata."""
    return CommitSummary.of(repo.read_commit(checksum)).packages


def repo_package_diff(repo: ostree.Repo, old: str, new: str) -> PackageDiff:
    """The package changes from commit `old` to `new` of `repo`, from their metadata."""
    return diff_packages(commit_packages(repo, old), commit_packages(repo, new))
