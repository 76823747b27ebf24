"""The kernel and its initramfs, where libostree looks for them.

libostree takes the kernel from `/usr/lib/modules/$kver/vmlinuz` and the initramfs from
`initramfs.img` beside it, and copies both to /boot at deploy time (ostree's
"deployments" documentation). Debian's kernel packages install to `/boot/vmlinuz-$kver`;
the image is moved, `config-$kver` and `System.map-$kver` go beside it as on Fedora, and
the initramfs is built with the tree's own dracut inside bubblewrap: generic
(`--no-hostonly`, nothing of the composing host), `--reproducible`, with ostree-boot's
`ostree` module that runs ostree-prepare-root before switch-root.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree.errors import CommandError, PostprocessError
from apt_ostree.progress import Progress
from apt_ostree.sandbox import passthrough_env, stream_in_tree

log = logging.getLogger(__name__)

MODULES = "usr/lib/modules"
DRACUT_PATHS = ("usr/bin/dracut", "usr/sbin/dracut")
OSTREE_DRACUT_MODULE = "usr/lib/dracut/modules.d/98ostree"
# Symlinks linux-base's linux-update-symlinks leaves at / (or in /boot).
BOOT_SYMLINKS = ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old")


@dataclass(frozen=True)
class Kernel:
    version: str
    moduledir: Path  # /usr/lib/modules/$kver in the tree

    @property
    def vmlinuz(self) -> Path:
        return self.moduledir / "vmlinuz"

    @property
    def initramfs(self) -> Path:
        return self.moduledir / "initramfs.img"


def kernel_versions(rootfs: Path) -> list[str]:
    """The versions of the kernels in the tree, in /boot or already in /usr/lib/modules."""
    found = set()
    boot = rootfs / "boot"
    if boot.is_dir() and not boot.is_symlink():
        for p in boot.glob("vmlinuz-*"):
            if p.is_file() and not p.is_symlink():
                found.add(p.name.removeprefix("vmlinuz-"))
    modules = rootfs / MODULES
    if modules.is_dir():
        found.update(p.parent.name for p in modules.glob("*/vmlinuz") if p.is_file())
    return sorted(found)


def find_kernel(rootfs: Path) -> Kernel | None:
    versions = kernel_versions(rootfs)
    if not versions:
        return None
    if len(versions) > 1:
        raise PostprocessError(
            f"the tree has {len(versions)} kernels ({', '.join(versions)}): an OSTree "
            "commit boots exactly one, so install only one linux-image package"
        )
    kver = versions[0]
    moduledir = rootfs / MODULES / kver
    if not moduledir.is_dir():
        raise PostprocessError(f"the tree has kernel {kver} but no /{MODULES}/{kver}")
    return Kernel(kver, moduledir)


def check_dracut(rootfs: Path, kernel: Kernel) -> None:
    """Fail with the missing package's name when the tree cannot build its initramfs."""
    if not any((rootfs / p).exists() for p in DRACUT_PATHS):
        raise PostprocessError(
            f"the tree has kernel {kernel.version} but no dracut to build its initramfs: "
            "add the 'dracut' package"
        )
    if not (rootfs / OSTREE_DRACUT_MODULE).is_dir():
        raise PostprocessError(
            f"the tree has kernel {kernel.version} and dracut but not dracut's ostree "
            f"module (/{OSTREE_DRACUT_MODULE}): add the 'ostree-boot' package"
        )


def install_kernel(rootfs: Path, kernel: Kernel) -> None:
    """Move /boot's vmlinuz (and config, System.map) into the kernel's module directory."""
    boot = rootfs / "boot"
    for name, dest in (("vmlinuz", "vmlinuz"), ("config", "config"), ("System.map", "System.map")):
        src = boot / f"{name}-{kernel.version}"
        if src.is_file() and not src.is_symlink():
            os.replace(src, kernel.moduledir / dest)


def dracut_argv(kernel_version: str, extra_args: Sequence[str]) -> list[str]:
    return [
        "dracut",
        "--no-hostonly",
        "--reproducible",
        "--add",
        "ostree",
        *extra_args,
        "-f",
        f"/{MODULES}/{kernel_version}/initramfs.img",
        kernel_version,
    ]


def build_initramfs(
    rootfs: Path, kernel: Kernel, extra_args: Sequence[str], progress: Progress
) -> None:
    progress.message(f"    building the initramfs of {kernel.version} with dracut")
    try:
        stream_in_tree(
            rootfs,
            dracut_argv(kernel.version, extra_args),
            lambda line: log.debug("dracut: %s", line),
            env=passthrough_env(),
            what="dracut",
        )
    except CommandError as e:
        raise PostprocessError(str(e)) from e
    # dracut writes it 0600; it holds nothing secret in --no-hostonly mode, and 0644 is
    # what libostree's copy in /boot would get on Fedora too.
    kernel.initramfs.chmod(0o644)


def empty_boot(rootfs: Path) -> None:
    """/boot is libostree's at runtime: the commit's is empty, with no links into it at /."""
    boot = rootfs / "boot"
    if boot.is_symlink() or (boot.exists() and not boot.is_dir()):
        boot.unlink()
    if boot.is_dir():
        shutil.rmtree(boot)
    boot.mkdir(mode=0o755)
    boot.chmod(0o755)
    for name in BOOT_SYMLINKS:
        link = rootfs / name
        if link.is_symlink():
            link.unlink()


def prepare_kernel(
    rootfs: Path, extra_args: Sequence[str], progress: Progress, *, keep_initramfs: bool = False
) -> Kernel | None:
    """Put the tree's kernel and a fresh initramfs into /usr/lib/modules/$kver; empty /boot.

    With `keep_initramfs`, an initramfs.img already beside the kernel is kept (for trees
    made by another tool, which may have built their own).
    """
    kernel = find_kernel(rootfs)
    if kernel is not None:
        install_kernel(rootfs, kernel)
        if not (keep_initramfs and kernel.initramfs.is_file()):
            check_dracut(rootfs, kernel)
            build_initramfs(rootfs, kernel, extra_args, progress)
    empty_boot(rootfs)
    return kernel
