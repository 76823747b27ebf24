"""The package verbs: install, uninstall, override remove/replace/reset, reset, initramfs,
search, refresh-md, and db diff/list (from commit metadata, no checkout).

Every change edits the origin (what the user asked for) and deploys the base rebuilt with the
new requests (`System.deploy`): nothing depends on history. Changes start from the default
deployment's origin and base, so they queue up on a pending deployment.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from apt_ostree import ostree
from apt_ostree.changelogs import changelogs
from apt_ostree.errors import CommandError, DeploymentError, LayeringError, RepoError, UsageError
from apt_ostree.layering.build import LayerTarget, layer_plan, local_dir
from apt_ostree.layering.build import refresh as layering_refresh
from apt_ostree.layering.build import search as layering_search
from apt_ostree.origin import Origin
from apt_ostree.pkgdiff import diff_packages
from apt_ostree.run import run
from apt_ostree.system.requests import (
    DbDiff,
    DbList,
    Initramfs,
    Install,
    OverrideRemove,
    OverrideReplace,
    OverrideReset,
    RefreshMd,
    Reset,
    Search,
    Uninstall,
    is_deb_path,
)
from apt_ostree.system.results import CommitDiff, Outcome, PackageList, SearchMatch
from apt_ostree.system.sysroot import (
    CommitSummary,
    System,
    commit_packages,
    parse_origin,
    repo_package_diff,
)

Edit = Callable[[Origin, CommitSummary], Origin]


def change_origin(
    system: System, edit: Edit, *, allow_inactive: bool = False, dry_run: bool = False
) -> Outcome:
    """Apply `edit` to the origin and deploy the base rebuilt with the new requests (with
    dry_run, only resolve them and say what would change)."""
    with system.sysroot.locked():
        merge = system.merge_deployment()
        source = system.origin_deployment()
        origin = parse_origin(source)
        base = system.commit(system.commit(source.checksum).base_checksum)
        new_origin = edit(origin, base)
        if new_origin == origin:
            return Outcome(False, ("No change.",))
        if dry_run:
            return _dry_run(system, merge, base, new_origin, allow_inactive=allow_inactive)
        deployed = system.deploy(base.checksum, new_origin, merge, allow_inactive=allow_inactive)
        diff = system.package_diff(merge.checksum, deployed)
        version = system.commit(deployed).version
        return Outcome(
            True, system.deployed_lines(deployed), diff, deployed, version, deployed=True
        )


def _dry_run(
    system: System,
    merge: ostree.Deployment,
    base: CommitSummary,
    origin: Origin,
    *,
    allow_inactive: bool,
) -> Outcome:
    """The package changes the new origin would make on the base, resolved and not fetched."""
    recommends = system.settings.recommends
    target = LayerTarget(system.sysroot, system.osname(), base.checksum, origin, merge.path,
                         allow_inactive=allow_inactive, recommends=recommends)  # fmt: skip
    plan = layer_plan(target, system.progress, fetch=False)
    layered = {(n, a): v for n, v, a in base.packages if n not in plan.remove}
    layered |= {(d.name, d.architecture): d.version for d in plan.install}
    after = [(n, v, a) for (n, a), v in layered.items()]
    diff = diff_packages(system.commit(merge.checksum).packages, after)
    return Outcome(False, ("Dry run: nothing was changed; the deployment would have:",), diff)


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


def keep_local(system: System, deb: Path) -> str:
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
    local = local_dir(system.sysroot.path, system.osname())
    local.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(deb, local / name)
    return name


# ---- layering ----


def install(system: System, request: Install) -> Outcome:
    """Layer packages from the repositories (names) or local .deb files (paths)."""
    names = [i for i in request.packages if not is_deb_path(i)]
    debs = [Path(i) for i in request.packages if is_deb_path(i)]
    idempotent = request.idempotent

    def edit(origin: Origin, base: CommitSummary) -> Origin:
        requested = _add_requests(origin.requested_packages, names, idempotent=idempotent)
        local = _add_requests(
            origin.requested_local_packages,
            [keep_local(system, d) for d in debs],
            idempotent=idempotent,
        )
        return replace(origin, requested_packages=requested, requested_local_packages=local)

    return change_origin(
        system, edit, allow_inactive=request.allow_inactive, dry_run=request.dry_run
    )


def uninstall(system: System, request: Uninstall) -> Outcome:
    def edit(origin: Origin, base: CommitSummary) -> Origin:
        requested = list(origin.requested_packages)
        local = list(origin.requested_local_packages)
        if request.all_:
            return replace(origin, requested_packages=(), requested_local_packages=())
        for item in request.packages:
            name = item.split("=", 1)[0]
            matches = [f for f in local if f.split("_", 1)[0] == name]
            if name in requested:
                requested.remove(name)
            elif matches:
                local.remove(matches[0])
            elif not request.idempotent:
                raise LayeringError(f"{name} is not a layered package")
        return replace(
            origin, requested_packages=tuple(requested), requested_local_packages=tuple(local)
        )

    return change_origin(system, edit)


# ---- overrides ----


def override_remove(system: System, request: OverrideRemove) -> Outcome:
    def edit(origin: Origin, base: CommitSummary) -> Origin:
        in_base = {p[0] for p in base.packages}
        missing = [n for n in request.packages if n not in in_base]
        if missing:
            raise LayeringError(f"not in the base image: {', '.join(missing)}")
        removed = _add_requests(origin.override_remove, request.packages, idempotent=False)
        return replace(origin, override_remove=removed)

    return change_origin(system, edit)


def override_replace(system: System, request: OverrideReplace) -> Outcome:
    """Replace base packages by NAME=VERSION from the repositories or by local .debs."""

    def edit(origin: Origin, base: CommitSummary) -> Origin:
        in_base = {p[0] for p in base.packages}
        pinned = [i for i in request.packages if not is_deb_path(i)]
        for item in pinned:
            name, sep, version = item.partition("=")
            if not sep or not version:
                raise UsageError(f"override replace {item}: expected NAME=VERSION or a .deb")
            if name not in in_base:
                raise LayeringError(f"{name} is not in the base image")
        local = [keep_local(system, Path(i)) for i in request.packages if is_deb_path(i)]
        return replace(
            origin,
            override_replace=_add_requests(origin.override_replace, pinned, idempotent=False),
            override_replace_local=_add_requests(
                origin.override_replace_local, local, idempotent=False
            ),
        )

    return change_origin(system, edit)


def _without_overrides(origin: Origin) -> Origin:
    return replace(origin, override_remove=(), override_replace=(), override_replace_local=())


def override_reset(system: System, request: OverrideReset) -> Outcome:
    names = request.packages

    def edit(origin: Origin, base: CommitSummary) -> Origin:
        if request.all_:
            return _without_overrides(origin)
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

    return change_origin(system, edit)


def reset(system: System, request: Reset) -> Outcome:
    both = not (request.overlays or request.overrides)

    def edit(origin: Origin, base: CommitSummary) -> Origin:
        if request.overlays or both:
            origin = replace(origin, requested_packages=(), requested_local_packages=())
        if request.overrides or both:
            origin = _without_overrides(origin)
        return origin

    return change_origin(system, edit)


def initramfs(system: System, request: Initramfs) -> Outcome:
    """Regenerate the initramfs on the client (dracut in the sandbox), or stop doing so;
    kept in the origin, so every upgrade regenerates it again. Neither flag shows it."""
    if not (request.enable or request.disable):
        origin = parse_origin(system.merge_deployment())
        state = "enabled" if origin.regenerate_initramfs else "disabled"
        args = origin.initramfs_args
        extra = f" (arguments: {' '.join(args)})" if args else ""
        return Outcome(False, (f"Initramfs regeneration: {state}{extra}",))

    def edit(origin: Origin, base: CommitSummary) -> Origin:
        if request.enable:
            return replace(origin, regenerate_initramfs=True, initramfs_args=request.arg)
        if not origin.regenerate_initramfs:
            raise LayeringError("initramfs regeneration is not enabled")
        return replace(origin, regenerate_initramfs=False, initramfs_args=())

    return change_origin(system, edit)


# ---- the machine's apt sources ----


def search(system: System, request: Search) -> tuple[SearchMatch, ...]:
    merge = system.merge_deployment()
    base = system.commit(merge.checksum).base_checksum
    found = layering_search(
        system.sysroot, system.osname(), base, request.patterns, deployment=merge.path,
        progress=system.progress,
    )  # fmt: skip
    return tuple(SearchMatch(*row) for row in found)


def refresh_md(system: System, request: RefreshMd) -> Outcome:
    merge = system.merge_deployment()
    base = system.commit(merge.checksum).base_checksum
    layering_refresh(
        system.sysroot, system.osname(), base, deployment=merge.path, progress=system.progress
    )
    return Outcome(True, ("Package lists updated.",))


# ---- db: packages of commits, from their metadata ----


def resolve_commit(system: System, spec: str) -> str:
    """A deployment index, a checksum (or prefix), a ref, or booted/pending/rollback."""
    own = system.own()
    if spec.isdigit() and int(spec) < len(own):
        return own[int(spec)].checksum
    if spec in ("booted", "default"):
        return system.merge_deployment().checksum
    if spec == "rollback":
        merge = system.merge_deployment()
        later = own[own.index(merge) + 1 :]
        if not later:
            raise DeploymentError("there is no rollback deployment")
        return later[0].checksum
    try:
        checksum = system.repo.resolve_ref(spec)
    except RepoError as e:
        raise DeploymentError(f"unknown commit, ref or deployment {spec!r}") from e
    if checksum is None:
        raise DeploymentError(f"unknown commit, ref or deployment {spec!r}")
    return checksum


def db_diff(system: System, request: DbDiff) -> CommitDiff:
    """With no commits named: the default (booted) deployment and the other one."""
    own = system.own()
    if request.from_rev is None and request.to_rev is None:
        if len(own) < 2:
            raise DeploymentError("db diff: there is only one deployment; name two commits")
        merge = system.merge_deployment()
        others = [d for d in own if d != merge]
        old, new = merge.checksum, others[0].checksum
        if own.index(others[0]) > own.index(merge):
            old, new = others[0].checksum, merge.checksum
    else:
        old = resolve_commit(system, request.from_rev or "booted")
        new = resolve_commit(system, request.to_rev or "booted")
    return commit_diff(system.repo, old, new, with_changelogs=request.changelogs)


def commit_diff(repo: ostree.Repo, old: str, new: str, *, with_changelogs: bool) -> CommitDiff:
    diff = repo_package_diff(repo, old, new)
    logs = changelogs(repo, new, diff) if with_changelogs else {}
    return CommitDiff(old, new, diff, logs)


def db_list(system: System, request: DbList) -> PackageList:
    checksum = resolve_commit(system, request.rev or "booted")
    return PackageList(checksum, system.commit(checksum).packages)


# ---- db diff/list --repo: a compose server's repository, no sysroot ----


def repo_query(path: Path, request: DbDiff | DbList) -> CommitDiff | PackageList:
    """`db diff --repo REPO FROM [TO]` (FROM alone: its parent to it, what its compose
    changed) and `db list --repo REPO REV`, on the commits of an OSTree repository."""
    repo = ostree.Repo.open(path)
    if isinstance(request, DbList):
        if request.rev is None:
            raise UsageError("db list --repo: name a ref or commit")
        checksum = _repo_commit(repo, path, request.rev)
        return PackageList(checksum, commit_packages(repo, checksum))
    if request.from_rev is None:
        raise UsageError("db diff --repo: name a ref or commit (and a second to compare with)")
    old = _repo_commit(repo, path, request.from_rev)
    if request.to_rev is None:
        new, parent = old, repo.read_commit(old).parent
        if parent is None or not repo.has_commit(parent):
            raise DeploymentError(f"db diff: {request.from_rev} has no parent commit in {path}")
        old = parent
    else:
        new = _repo_commit(repo, path, request.to_rev)
    return commit_diff(repo, old, new, with_changelogs=request.changelogs)


def _repo_commit(repo: ostree.Repo, path: Path, spec: str) -> str:
    try:
        checksum = repo.resolve_ref(spec)
    except RepoError as e:
        raise DeploymentError(f"unknown commit or ref {spec!r} in {path}") from e
    if checksum is None or not repo.has_commit(checksum):
        raise DeploymentError(f"unknown commit or ref {spec!r} in {path}")
    return checksum
