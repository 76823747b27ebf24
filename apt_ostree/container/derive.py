"""Derived images: the layers a Containerfile added on top of an apt-ostree image (`FROM` it,
`RUN apt-get install ...`), made into a commit a machine can boot (docs/container.md).

The layers are in the container view (apt_ostree.container.view) and in OCI's format:
whiteout files (`.wh.NAME`, `.wh..wh..opq`) stand for deletions. They are applied, in order,
to a scratch folder of their own (the base is never checked out for them); then the folder
is put in the commit's layout with the same steps as a layer of packages (`assemble.
translate`, compose's own conversions): /etc into /usr/etc, /var content into tmpfiles.d
lines and /usr/share/factory, no machine-id or SSH host keys, a kernel from /boot into
/usr/lib/modules, anything else outside /usr refused. The commit is the base's tree, loaded
by checksum, less the deletions, with the folder written on top: it costs what the derived
layers hold, not what the image weighs. When the layers change the kernel, the caller builds
the initramfs again (`Derived.kernel_changed`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_ostree import keys, ostree, ostree_container
from apt_ostree.aptpkg.dpkg import installed_packages
from apt_ostree.compose import initramfs, postprocess
from apt_ostree.container import view
from apt_ostree.errors import AptOstreeError, ImageError
from apt_ostree.layering import assemble
from apt_ostree.progress import Progress
from apt_ostree.pycache import zero_source_mtimes

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
# mount points a container engine leaves in a RUN step's layer, empty
ENGINE_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")
SCRATCH = ("tmp", "run", "var/tmp", "var/cache/apt", "var/lib/apt/lists", "var/log")
DERIVED_VAR_CONF = f"{postprocess.TMPFILES_DIR}/apt-ostree-derived-var.conf"
STATUS = "usr/lib/sysimage/dpkg/status"


@dataclass(frozen=True)
class Derived:
    checksum: str
    kernel_changed: bool  # the initramfs must be built again


def derive(
    repo: ostree.Repo,
    base: str,
    layers: Sequence[str],
    *,
    lower: Path,
    subject: str,
    metadata: Mapping[str, Any],
    progress: Progress,
) -> Derived:
    """Commit `base` plus the derived layers' commits `layers` (in order) into `repo`, no ref
    moving; `lower` is a tree of `base` (read, never written)."""
    workdir = Path(tempfile.mkdtemp(prefix="apt-ostree-derive-", dir=repo.path / "tmp"))
    try:
        upper = workdir / "upper"
        upper.mkdir()
        removed: list[str] = []
        with progress.step(f"Applying {len(layers)} derived layers"):
            for layer in layers:
                _apply(repo, layer, upper, removed)
        try:
            return _commit(repo, base, upper, lower, removed, subject, metadata, progress)
        except AptOstreeError as e:
            raise ImageError(f"the derived image cannot boot: {e}") from e
    except OSError as e:
        raise ImageError(f"cannot apply the derived layers: {e}") from e
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _apply(repo: ostree.Repo, layer: str, upper: Path, removed: list[str]) -> None:
    """One layer onto `upper`: its deletions first (they hide what is below the layer), then
    its files; `removed` gets the deletions, as container paths."""
    entries = list(ostree_container.walk_commit(repo, layer))
    whiteouts = []
    for entry in entries:
        parent, _, name = entry.path.rpartition("/")
        # libostree's checkout would follow such a link; this also covers the parents of
        # what a whiteout deletes, which are the whiteout's own
        _check_no_link_above(upper, entry.path)
        if entry.kind == "dir" and (upper / entry.path).is_symlink():
            raise ImageError(f"a derived layer makes a folder of the symlink /{entry.path}")
        if not name.startswith(WHITEOUT):
            continue
        whiteouts.append(entry.path)
        if name == OPAQUE:
            target = upper / parent
            if target.is_dir() and not target.is_symlink():
                for child in target.iterdir():
                    _remove(child)
            removed.append(parent)  # the base's folder goes; the layer's stays
        else:
            rel = f"{parent}/{name.removeprefix(WHITEOUT)}" if parent else name[len(WHITEOUT) :]
            _remove(upper / rel)
            removed.append(rel)
    ostree_container.checkout_union(repo, layer, upper)
    for rel in whiteouts:
        (upper / rel).unlink()


def _check_no_link_above(upper: Path, rel: str) -> None:
    """ImageError when a folder above `rel` in `upper` is a symlink (a layer that makes `etc`
    a link to `/` and then writes `etc/passwd` would otherwise write the host's)."""
    current = upper
    for part in Path(rel).parts[:-1] if rel else ():
        current = current / part
        if current.is_symlink():
            raise ImageError(f"a derived layer writes /{rel} through the symlink /{part}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _commit(
    repo: ostree.Repo,
    base: str,
    upper: Path,
    lower: Path,
    removed: list[str],
    subject: str,
    metadata: Mapping[str, Any],
    progress: Progress,
) -> Derived:
    for rel in ENGINE_FILES:
        path = upper / rel
        if path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
            path.unlink()
    for rel in SCRATCH:
        if (upper / rel).is_dir() and not (upper / rel).is_symlink():
            shutil.rmtree(upper / rel)
    etc = upper / "etc"
    if etc.is_dir() and not etc.is_symlink():
        assemble.ensure_dir(upper, lower, view.TREE_ETC)
        _merge_into(etc, upper / view.TREE_ETC)
    elif etc.exists() or etc.is_symlink():
        raise ImageError("a derived layer replaces the folder /etc")
    machine_id = upper / view.TREE_ETC / "machine-id"
    if machine_id.is_file() or machine_id.is_symlink():
        machine_id.unlink()  # the base's stays: it is the booted machine's to make
    tree_removed = sorted(
        {view.to_tree(p) for p in removed if p.split("/")[0] not in ("var", "boot", "tmp", "run")}
        - {f"{view.TREE_ETC}/machine-id"}
    )
    if (upper / "usr/sbin/sshd").exists():  # its host keys are dropped: made at first boot
        assemble.ensure_dir(upper, lower, "usr/lib/systemd/system")
        postprocess.add_ssh_keygen(upper)
    kernel = initramfs.find_kernel(upper)
    if kernel is not None:
        initramfs.install_kernel(upper, kernel)
    initramfs.empty_boot(upper)
    modules = initramfs.MODULES
    kernel_changed = (upper / modules).is_dir() or any(
        p == modules or p.startswith(modules + "/") for p in tree_removed
    )
    var = upper / "var"
    var.mkdir(exist_ok=True)
    assemble.translate(upper, lower, var, DERIVED_VAR_CONF)
    zero_source_mtimes(upper)
    status = upper / STATUS if (upper / STATUS).exists() else lower / STATUS
    full = {**metadata, keys.PACKAGES: installed_packages(status)}
    with progress.step("Writing the derived commit"):
        info = repo.read_commit(base)
        checksum = repo.write_commit(
            upper,
            base=base,
            remove=tree_removed,
            subject=subject,
            metadata=full,
            timestamp=info.timestamp,
        )
    return Derived(checksum, kernel_changed)


def _merge_into(src: Path, dest: Path) -> None:
    """Move the folder `src` into `dest`, merging with what `dest` has; `src` is gone."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dest)
        return
    for child in src.iterdir():
        target = dest / child.name
        if child.is_dir() and not child.is_symlink() and target.is_dir():
            _merge_into(child, target)
        else:
            _remove(target)
            os.rename(child, target)
    src.rmdir()
