"""Build the commit a deployment runs: the base, plus what the origin asks for.

Every change (install, override, upgrade, rebase) rebuilds from the pristine base commit, so
the result never depends on history: resolve the origin's requests against the new base's
dpkg status and the machine's own apt sources (`resolve.plan_layer`), then apply the plan on
an overlay above a tree of the base (`base_tree`: a deployment of it, or a hardlinked checkout
kept while the base is current) and commit only the difference (`assemble.assemble`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_ostree import debconf, keys, ostree
from apt_ostree.compose.initramfs import MODULES, dracut_argv, find_kernel
from apt_ostree.errors import CommandError, LayeringError
from apt_ostree.layering import LayerPlan, LayerRequest
from apt_ostree.origin import Origin
from apt_ostree.progress import Progress
from apt_ostree.sandbox import Bind, run_in_tree

STATUS = "usr/lib/sysimage/dpkg/status"
ARCH = "usr/lib/sysimage/dpkg/arch"


def cache_dir(sysroot: Path, osname: str) -> Path:
    """The machine's /var/cache/apt-ostree (the stateroot's /var, in a folder or at /)."""
    return sysroot / "ostree" / "deploy" / osname / "var" / "cache" / "apt-ostree"


def local_dir(sysroot: Path, osname: str) -> Path:
    """Where requested local .debs are kept, so upgrades can apply them again."""
    return cache_dir(sysroot, osname) / "local"


def base_trees_dir(sysroot: Path, osname: str) -> Path:
    """Where the hardlinked checkout of the base being layered on is kept between changes."""
    return cache_dir(sysroot, osname) / "base"


def base_tree(sysroot: ostree.Sysroot, osname: str, base: str, *, progress: Progress) -> Path:
    """A tree of `base` to be the read-only lower layer of the assembly: a deployment of
    exactly `base` when there is one (an unlayered image), else a hardlinked checkout of it
    kept in the cache, made once per base (later changes on the same base reuse it; a new
    base replaces it). Its files are the repository's objects: nothing ever writes to them."""
    for d in sysroot.deployments():
        if d.osname == osname and d.checksum == base and (d.path / "usr").is_dir():
            return d.path
    trees = base_trees_dir(sysroot.path, osname)
    tree = trees / base
    if (tree / "usr").is_dir():  # renamed into place only when whole
        return tree
    remove_base_trees(sysroot.path, osname)
    partial = trees / f"{base}.partial"
    trees.mkdir(parents=True, exist_ok=True)
    with progress.step("Checking out base"):
        sysroot.repo.checkout_hardlinked(base, partial)
        partial.rename(tree)
    return tree


def remove_base_trees(sysroot: Path, osname: str) -> bool:
    """Drop the cached base checkouts (they keep their objects' data alive); True if any."""
    trees = base_trees_dir(sysroot, osname)
    found = trees.is_dir() and any(trees.iterdir())
    shutil.rmtree(trees, ignore_errors=True)
    return found


def request_of(origin: Origin, local: Path, *, recommends: bool) -> LayerRequest:
    return LayerRequest(
        packages=origin.requested_packages,
        local_debs=tuple(local / name for name in origin.requested_local_packages),
        remove=origin.override_remove,
        replace=origin.override_replace,
        replace_local=tuple(local / name for name in origin.override_replace_local),
        recommends=recommends,
    )


@contextmanager
def resolution_root(repo: ostree.Repo, base: str, deployment: Path | None) -> Iterator[Path]:
    """A small tree for the resolver: the machine's /etc (its apt sources and keys) and
    keyrings (`Signed-By: /usr/share/keyrings/...`) from the deployment it starts from, and
    the base's dpkg status and architecture, read from the repository with no checkout."""
    with tempfile.TemporaryDirectory(prefix="apt-ostree-resolve-") as tmp:
        root = Path(tmp)
        (root / STATUS).parent.mkdir(parents=True)
        for rel in (STATUS, ARCH):
            data = repo.read_file(base, "/" + rel)
            if data is not None:
                (root / rel).write_bytes(data)
        if deployment is not None and (deployment / "etc").is_dir():
            (root / "etc").symlink_to((deployment / "etc").resolve())
            keyrings = deployment / "usr/share/keyrings"
            if keyrings.is_dir():
                (root / "usr/share").mkdir(parents=True)
                (root / "usr/share/keyrings").symlink_to(keyrings.resolve())
        else:
            apt = root / "usr/etc/apt"
            apt.parent.mkdir(parents=True, exist_ok=True)
            repo.checkout_subpath(base, "/usr/etc/apt", apt)
        yield root


def layer_metadata(base: str, version: str | None, origin: Origin) -> dict[str, Any]:
    return {
        **({keys.VERSION: version} if version else {}),
        keys.CLIENTLAYER: True,
        keys.BASE_CHECKSUM: base,
        keys.REQUESTED_PACKAGES: list(origin.requested_packages),
        keys.REQUESTED_LOCAL_PACKAGES: list(origin.requested_local_packages),
        keys.OVERRIDE_REMOVE: list(origin.override_remove),
        keys.OVERRIDE_REPLACE: list(origin.override_replace + origin.override_replace_local),
    }


@dataclass(frozen=True)
class LayerTarget:
    """What a layer is built for: a base commit of a stateroot, the origin's requests, and the
    deployment whose /etc (its apt sources and keys) the packages come from."""

    sysroot: ostree.Sysroot
    osname: str
    base: str
    origin: Origin
    deployment: Path | None
    allow_inactive: bool = True
    recommends: bool = False
    refresh: bool | None = None  # lists: None as they age, True fetch, False as cached


def build(target: LayerTarget, progress: Progress) -> tuple[str, LayerPlan]:
    """The commit to deploy for the origin on the base: the base itself when nothing is
    layered."""
    checksum, plan = _layer(target, progress)
    if target.origin.regenerate_initramfs:
        checksum = regenerate_initramfs(target.sysroot, checksum, target.origin, progress=progress)
    return checksum, plan


def _layer(target: LayerTarget, progress: Progress) -> tuple[str, LayerPlan]:
    plan = layer_plan(target, progress)
    if plan.is_empty():
        return target.base, plan
    # imported here: a machine with nothing layered never loads apt or the assembler
    from apt_ostree.layering.assemble import AssembleOptions, assemble

    options = AssembleOptions(debconf_answers=machine_answers(target.deployment))
    sysroot, base = target.sysroot, target.base
    repo = sysroot.repo
    workdir = Path(
        tempfile.mkdtemp(prefix="apt-ostree-layer-", dir=sysroot.path / "ostree/repo/tmp")
    )
    try:
        checksum = assemble(
            repo,
            base,
            plan,
            lower=base_tree(sysroot, target.osname, base, progress=progress),
            workdir=workdir,
            metadata=layer_metadata(base, repo.read_commit(base).version, target.origin),
            progress=progress,
            options=options,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return checksum, plan


def machine_answers(deployment: Path | None) -> str:
    """The machine's own debconf answers, from the /etc of the deployment it starts from."""
    try:
        return debconf.machine_answers(deployment / "etc") if deployment is not None else ""
    except ValueError as e:
        raise LayeringError(f"debconf answers: {e}") from e


def layer_plan(target: LayerTarget, progress: Progress, *, fetch: bool = True) -> LayerPlan:
    """What the origin asks for, resolved on the base (with fetch=False nothing is downloaded:
    `install --dry-run`)."""
    local = local_dir(target.sysroot.path, target.osname)
    request = request_of(target.origin, local, recommends=target.recommends)
    if request.is_empty():
        return LayerPlan()
    from apt_ostree.layering.resolve import plan_layer

    with (
        progress.step("Resolving layered packages"),
        resolution_root(target.sysroot.repo, target.base, target.deployment) as root,
    ):
        return plan_layer(
            root,
            request,
            cachedir=cache_dir(target.sysroot.path, target.osname),
            progress=progress,
            allow_inactive=target.allow_inactive,
            refresh=target.refresh,
            fetch=fetch,
        )


def search(
    sysroot: ostree.Sysroot,
    osname: str,
    base: str,
    patterns: Sequence[str],
    *,
    deployment: Path | None,
    progress: Progress,
) -> list[tuple[str, str, str]]:
    from apt_ostree.layering.resolve import search as resolve_search

    with resolution_root(sysroot.repo, base, deployment) as root:
        return resolve_search(
            root, patterns, cachedir=cache_dir(sysroot.path, osname), progress=progress
        )


def refresh(
    sysroot: ostree.Sysroot, osname: str, base: str, *, deployment: Path | None, progress: Progress
) -> None:
    from apt_ostree.layering.resolve import refresh as resolve_refresh

    with resolution_root(sysroot.repo, base, deployment) as root:
        resolve_refresh(root, cachedir=cache_dir(sysroot.path, osname), progress=progress)


def regenerate_initramfs(
    sysroot: ostree.Sysroot,
    commit: str,
    origin: Origin,
    *,
    progress: Progress,
    client_layer: bool = True,
) -> str:
    """A commit of `commit` with its initramfs rebuilt by the tree's own dracut, with the
    origin's arguments (`initramfs --enable --arg ...`). dracut runs in bubblewrap on the
    hardlinked checkout bound read-only (its files are the repository's objects) and writes
    to a scratch folder; only the new initramfs.img is committed on top. Without
    `client_layer` (a derived image's kernel) the commit is a base, not a layer on one."""
    repo = sysroot.repo
    workdir = Path(
        tempfile.mkdtemp(prefix="apt-ostree-initramfs-", dir=sysroot.path / "ostree/repo/tmp")
    )
    try:
        tree, out = workdir / "tree", workdir / "out"
        repo.checkout_hardlinked(commit, tree)
        kernel = find_kernel(tree)
        if kernel is None:
            raise LayeringError("the deployment has no kernel in /usr/lib/modules to build for")
        target = out / MODULES / kernel.version
        target.mkdir(parents=True)
        # the commit has no /etc (it is /usr/etc): a mount point for bwrap's read-only root,
        # made in this checkout's own folder (no object is touched)
        (tree / "etc").mkdir(exist_ok=True)
        argv = dracut_argv(kernel.version, origin.initramfs_args)
        argv[-2] = "/run/apt-ostree-initramfs/initramfs.img"
        with progress.step(f"Generating the initramfs of {kernel.version}"):
            try:
                run_in_tree(
                    tree,
                    argv,
                    binds=(
                        Bind(tree / "usr/etc", "/etc", readonly=True),
                        Bind(target, "/run/apt-ostree-initramfs"),
                    ),
                    readonly=True,
                    what="dracut",
                )
            except CommandError as e:
                raise LayeringError(f"dracut failed: {e}") from e
        (target / "initramfs.img").chmod(0o644)
        info = repo.read_commit(commit)
        with progress.step("Writing the commit"):
            return repo.write_commit(
                out,
                base=commit,
                subject="apt-ostree: regenerated initramfs",
                metadata={
                    **info.metadata,
                    keys.BASE_CHECKSUM: info.metadata.get(keys.BASE_CHECKSUM, commit),
                    keys.CLIENTLAYER: True,
                }
                if client_layer
                else info.metadata,
                timestamp=info.timestamp,
            )
    finally:
        remove_checkout(workdir)


def remove_checkout(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
