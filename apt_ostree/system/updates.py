"""The image verbs: init, upgrade, deploy, rebase, rollback, cleanup, kargs,
finalize-deployment. Each takes a `System` and its request and returns an `Outcome`.

A rollback is a reorder of the deployment list (libostree 2022.7 has no rollback call of its
own); kernel argument changes make a new deployment of the same commit, so the old arguments
stay available for rollback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from apt_ostree import ostree
from apt_ostree.aptpkg.dpkg import version_compare
from apt_ostree.boot import trial
from apt_ostree.container import importer
from apt_ostree.container.imageref import ImageReference
from apt_ostree.errors import DeploymentError, UsageError
from apt_ostree.layering.build import remove_base_trees
from apt_ostree.origin import CHECKSUM_RE, Origin, Refspec
from apt_ostree.progress import Progress
from apt_ostree.system import containers, trials
from apt_ostree.system.requests import (
    Cleanup,
    Deploy,
    FinalizeDeployment,
    Init,
    KernelArgs,
    Rebase,
    Rollback,
    Upgrade,
)
from apt_ostree.system.results import Outcome, timestamp_text
from apt_ostree.system.sysroot import CommitSummary, System, parse_origin

# ---- upgrade ----


def upgrade(system: System, request: Upgrade) -> Outcome:
    with system.sysroot.locked():
        merge = system.merge_deployment()
        source = system.origin_deployment()
        origin = parse_origin(source)
        current = system.commit(system.commit(source.checksum).base_checksum)
        if isinstance(origin.refspec, ImageReference):
            return containers.upgrade(system, request, merge, origin, current)
        if origin.override_commit:
            return Outcome(
                False,
                (
                    f"Pinned to {origin.override_commit} (by deploy or rebase): not following"
                    f" {origin.refspec}; use `apt-ostree rebase {origin.refspec}` to follow"
                    " it again.",
                ),
            )
        new = _new_commit(system, origin.refspec, cache_only=request.cache_only)
        if new == current.checksum:
            return Outcome(False, ("No upgrade available.",))
        target = system.commit(new)
        if _is_older(system, target, current) and not request.allow_downgrade:
            raise DeploymentError(
                f"{origin.refspec} is at {new[:12]} (version {target.version or '-'},"
                f" {timestamp_text(target.timestamp)}), older than the deployed"
                f" {current.checksum[:12]} ({timestamp_text(current.timestamp)}):"
                " refusing to downgrade without --allow-downgrade"
            )
        if request.check or request.preview:
            head = f"Update available: {new} (version {target.version or '-'})"
            diff = system.package_diff(current.checksum, new) if request.preview else None
            return Outcome(True, (head,), diff, new, target.version)
        if not request.cache_only:
            system.fetch_commit(origin.refspec, new)
        if request.download_only:
            return Outcome(True, (f"Downloaded {new} (version {target.version or '-'})",))
        trials.refuse_blocked(system, new)
        check = trials.verify(new, system.progress) if request.verify else None
        deployed = system.deploy(new, origin, merge, check=check)
        return _deployed(system, merge, deployed)


def _new_commit(system: System, refspec: Refspec, *, cache_only: bool) -> str:
    """The ref's newest commit: from the remote (its commit object only), or with cache_only
    what is already downloaded."""
    if not cache_only:
        with system.progress.step(f"Checking {refspec} for updates"):
            return system.fetch_ref(refspec, commit_only=True)
    remote = system.remote(refspec)
    new = system.repo.resolve_ref(f"{remote}:{refspec.ref}")
    if new is None or system.repo.commit_is_partial(new):
        raise DeploymentError(
            f"no downloaded update for {refspec}: run upgrade --download-only first"
        )
    return new


def _is_older(system: System, new: CommitSummary, current: CommitSummary) -> bool:
    """Older by timestamp; with equal timestamps (SOURCE_DATE_EPOCH composes), an ancestor
    of the current commit, or a lower version in Debian's version order."""
    if new.timestamp != current.timestamp:
        return new.timestamp < current.timestamp
    checksum: str | None = current.checksum
    while checksum is not None and system.repo.has_commit(checksum):
        if checksum == new.checksum:
            return True
        checksum = system.repo.read_commit(checksum).parent
    if new.version and current.version:
        return version_compare(new.version, current.version) < 0
    return False


def _deployed(system: System, merge: ostree.Deployment, deployed: str) -> Outcome:
    c = system.commit(deployed)
    diff = system.package_diff(merge.checksum, deployed)
    return Outcome(True, system.deployed_lines(deployed), diff, deployed, c.version, deployed=True)


# ---- deploy and rebase ----


def _find_version(system: System, refspec: Refspec, version: str) -> str:
    """Walk the ref's history (commit objects only) for a commit with that version."""
    remote = system.remote(refspec)
    with system.progress.step(f"Looking for version {version} in {refspec}"):
        system.repo.pull(remote, [refspec.ref], commit_only=True, depth=-1)
    checksum = system.repo.resolve_ref(f"{remote}:{refspec.ref}")
    while checksum is not None:
        info = system.repo.read_commit(checksum)
        if info.version == version:
            return checksum
        parent = info.parent
        checksum = parent if parent and system.repo.has_commit(parent) else None
    raise DeploymentError(f"version {version} not found in the history of {refspec}")


def _revision(system: System, refspec: Refspec, revision: str) -> str:
    if revision.startswith("revision="):
        checksum = revision.removeprefix("revision=")
        if not CHECKSUM_RE.match(checksum):
            raise UsageError(f"revision={checksum}: expected a 64-character checksum")
        return checksum
    return _find_version(system, refspec, revision.removeprefix("version="))


def _deploy_target(
    system: System, merge: ostree.Deployment, origin: Origin, refspec: Refspec, checksum: str
) -> Outcome:
    system.fetch_commit(refspec, checksum)
    return _deployed(system, merge, system.deploy(checksum, origin, merge))


def deploy(system: System, request: Deploy) -> Outcome:
    """Deploy a version (or revision=CHECKSUM) of the origin's ref, pinning to it."""
    with system.sysroot.locked():
        merge = system.merge_deployment()
        origin = parse_origin(merge)
        if isinstance(origin.refspec, ImageReference):
            raise UsageError(
                f"deploy follows an ostree ref; {origin.refspec} is an image: rebase to the"
                " image's tag or digest"
            )
        checksum = _revision(system, origin.refspec, request.revision)
        if request.preview:
            return _preview(system, merge, origin.refspec, checksum)
        system.fetch_commit(origin.refspec, checksum)
        if checksum == merge.checksum and origin.override_commit == checksum:
            return Outcome(False, (f"Already deployed: {checksum}",))
        if trial.unblock(system.var(), checksum):  # deployed explicitly: tried again
            system.progress.message(f"    {checksum[:12]} failed a trial boot before: trying again")
        return _deploy_target(system, merge, origin.with_pin(checksum), origin.refspec, checksum)


def _preview(system: System, merge: ostree.Deployment, refspec: Refspec, checksum: str) -> Outcome:
    """`deploy --preview`: the package changes to `checksum`'s base, from its commit object."""
    if not system.repo.has_commit(checksum):
        system.pull(system.remote(refspec), [checksum], commit_only=True)
    target = system.commit(checksum)
    current = system.commit(merge.checksum).base_checksum
    if checksum == current:
        return Outcome(False, (f"Already deployed: {checksum}",))
    head = f"Would deploy {checksum} (version {target.version or '-'})"
    return Outcome(True, (head,), system.package_diff(current, checksum), checksum, target.version)


def rebase(system: System, request: Rebase) -> Outcome:
    """Follow another ref (REMOTE:REF, or REF on the current remote); pin with a revision."""
    target, pin = request.refspec, None
    head, _, last = target.rpartition(":")
    if head and CHECKSUM_RE.match(last):
        target, pin = head, last
    if ImageReference.looks_like(request.refspec) and request.revision is not None:
        raise UsageError("rebase to an image takes no revision: name the tag or the digest")
    with system.sysroot.locked():
        merge = system.merge_deployment()
        origin = parse_origin(merge)
        if ImageReference.looks_like(request.refspec):
            return containers.rebase(system, merge, origin, request.refspec)
        refspec = Refspec.parse(target)
        if refspec.remote is None:
            remote = origin.refspec.remote if isinstance(origin.refspec, Refspec) else None
            refspec = Refspec(remote, refspec.ref)
        if request.revision is not None:
            pin = _revision(system, refspec, request.revision)
        checksum = pin or system.fetch_ref(refspec, commit_only=False)
        new_origin = origin.with_refspec(refspec, pin=pin)
        if checksum == merge.checksum and new_origin == origin:
            return Outcome(False, (f"Already on {refspec} at {checksum}",))
        return _deploy_target(system, merge, new_origin, refspec, checksum)


# ---- rollback, cleanup ----


def rollback(system: System, request: Rollback) -> Outcome:
    """Make the previous deployment the default (instant: only the boot order changes).

    rpm-ostree's rule: when the booted deployment is not the default (an upgrade is
    pending), the booted one becomes the default again; otherwise the next one does.
    """
    with system.sysroot.locked():
        all_ = [d for d in system.sysroot.deployments() if not d.staged]
        own = [d for d in all_ if d.osname == system.osname()]
        booted = [d for d in own if d.booted]
        if booted and own[0] != booted[0]:
            target = booted[0]
        elif len(own) >= 2:
            target = own[1]
        else:
            raise DeploymentError(
                f"no rollback deployment: stateroot {system.osname()} has"
                f" {len(own)} deployment(s)"
            )
        system.sysroot.write_order([target] + [d for d in all_ if d != target])
        trial.disarm(system.sysroot.path, system.var())  # a rollback is never a trial
        c = system.commit(target.checksum)
        return Outcome(
            True,
            (f"Moving {target.checksum} (version {c.version or '-'}) to be first deployment",),
            system.package_diff(own[0].checksum, target.checksum),
            target.checksum,
            c.version,
            deployed=True,
        )


def cleanup(system: System, request: Cleanup) -> Outcome:
    lines: list[str] = []
    with system.sysroot.locked():
        all_ = system.sysroot.deployments()
        own = [d for d in all_ if d.osname == system.osname()]
        booted = [d for d in own if d.booted]
        unstaged = [d for d in own if not d.staged]
        current = booted[0] if booted else (unstaged[0] if unstaged else None)
        keep = list(all_)
        if request.pending and current is not None:
            cut = own[: own.index(current)]
            keep = [d for d in keep if d not in cut]
            lines += [f"Removed pending deployment {d.id}" for d in cut]
            if cut:  # the trial of a pending deployment goes with it
                trial.disarm(system.sysroot.path, system.var())
        if request.rollback and current is not None:
            cut = own[own.index(current) + 1 :]
            keep = [d for d in keep if d not in cut]
            lines += [f"Removed rollback deployment {d.id}" for d in cut]
        if keep != all_:
            system.sysroot.write_order(keep)
        # first: the cached base checkout keeps its objects' data alive
        base_removed = request.base and remove_base_trees(system.sysroot.path, system.osname())
        layers = 0
        if request.base:
            running = {d.checksum for d in keep}
            running |= {system.commit(c).base_checksum for c in running}
            layers = importer.prune_refs(system.repo, running)
        if request.base or request.repomd or keep != all_:
            # one prune serves all three: dropped deployments' trees, objects nothing
            # references, and commit objects fetched only for --check/--preview/versions
            system.sysroot.cleanup()
        if base_removed:
            lines.append("Removed the cached checkout of the base")
        if layers:
            lines.append(f"Removed {layers} image layers no deployment uses")
        if request.base:
            lines.append("Pruned unreferenced objects")
        if request.repomd:
            lines.append("Removed cached update metadata")
    return Outcome(bool(lines), tuple(lines) or ("Nothing to clean up.",))


# ---- kernel arguments ----


def edit_kargs(current: Sequence[str], request: KernelArgs) -> list[str]:
    """rpm-ostree's kargs semantics: KEY=VALUE or KEY; replace is KEY=OLD=NEW or KEY=NEW."""
    out = list(current)
    for arg in request.delete:
        if arg not in out and not any(a.split("=", 1)[0] == arg for a in out):
            raise DeploymentError(f"kernel argument {arg!r} is not present")
        out = _without(out, arg)
    for arg in request.delete_if_present:
        out = _without(out, arg)
    for arg in request.replace:
        key, _, rest = arg.partition("=")
        old, sep, new = rest.partition("=")
        matches = [i for i, a in enumerate(out) if a.split("=", 1)[0] == key]
        if sep:
            matches = [i for i in matches if out[i] == f"{key}={old}"]
        if not matches:
            raise DeploymentError(f"kernel argument {key!r} is not present to replace")
        value = new if sep else rest
        out[matches[0]] = f"{key}={value}" if value else key
    out += list(request.append)
    out += [a for a in request.append_if_missing if a not in out]
    return out


def _without(args: list[str], arg: str) -> list[str]:
    if "=" in arg:
        return [a for a in args if a != arg]
    return [a for a in args if a.split("=", 1)[0] != arg]


def kargs(system: System, request: KernelArgs) -> Outcome:
    """Show or change kernel arguments; a change makes a new deployment (rollback works)."""
    with system.sysroot.locked():
        own = system.own()
        index = request.deploy_index
        if index is not None and not 0 <= index < len(own):
            raise UsageError(
                f"--deploy-index {index}: stateroot {system.osname()} has {len(own)} deployments"
            )
        source = own[index] if index is not None else system.merge_deployment()
        new = edit_kargs(source.kargs, request)
        if new == list(source.kargs):
            return Outcome(False, (" ".join(new),))
        origin = parse_origin(source)
        system.deploy(source.checksum, origin, source, kargs=new, relayer=False)
        return Outcome(True, ("Kernel arguments updated:", " ".join(new)), deployed=True)


def finalize_deployment(system: System, request: FinalizeDeployment) -> Outcome:
    staged = [d for d in system.sysroot.deployments() if d.staged]
    if not staged:
        raise DeploymentError("no staged deployment to finalize")
    if request.checksum is not None and staged[0].checksum != request.checksum:
        raise DeploymentError(
            f"the staged deployment is {staged[0].checksum}, not {request.checksum}"
        )
    return Outcome(True, (f"Staged deployment {staged[0].id} is finalized at shutdown",))


# ---- init: a sysroot in a folder ----


def init_sysroot(path: Path, osname: str, request: Init, progress: Progress) -> Outcome:
    """A sysroot in a folder: stateroot, remote with its verification, pull, first deployment.

    On failure a folder that this call created is removed again, so a mistyped URL or ref
    leaves nothing behind.
    """
    fresh = not path.exists() or not any(path.iterdir())
    if not fresh and (path / "ostree" / "repo").is_dir():
        if any(d.osname == osname for d in ostree.Sysroot(path).deployments()):
            raise DeploymentError(f"stateroot {osname} in {path} already has deployments")
    elif not fresh:
        raise DeploymentError(f"{path} is neither empty nor an OSTree sysroot")
    try:
        return _init(path, osname, request, progress)
    except BaseException:
        if fresh:
            ostree.remove_sysroot(path)
        raise


def _init(path: Path, osname: str, request: Init, progress: Progress) -> Outcome:
    name, _, url = request.remote.partition("=")
    refspec = Refspec(name, request.ref)
    with progress.step(f"Initializing the sysroot {path}"):
        sysroot = ostree.Sysroot.initialize(path, osname)
        sysroot.repo.add_remote(
            name,
            url,
            gpg_verify=request.gpg_import is not None,
            gpg_keyring=Path(request.gpg_import) if request.gpg_import else None,
            ed25519_key=request.ed25519_key,
        )
    system = System(path, osname, progress)
    with system.sysroot.locked():
        checksum = system.fetch_ref(refspec, commit_only=False)
        with progress.step(f"Deploying {checksum[:12]}"):
            system.sysroot.deploy(
                osname,
                checksum,
                Origin(refspec).to_text(),
                merge=None,
                kargs=request.karg,
                stage=False,
            )
    c = system.commit(checksum)
    return Outcome(
        True, (f"Deployed {checksum} (version {c.version or '-'}) in {path}",), None, checksum
    )
