"""`compose commit`: postprocess a root filesystem made by another tool, and commit it."""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_ostree import keys, ostree
from apt_ostree.compose.postprocess import prepare_foreign_rootfs
from apt_ostree.compose.tree import tree_packages, tree_size, workdir
from apt_ostree.errors import AptOstreeError
from apt_ostree.progress import Progress
from apt_ostree.run import run


@dataclass(frozen=True)
class CommitRootfsOptions:
    repo: Path
    branch: str
    rootfs: Path  # a folder, or a tarball (any compression tar reads)
    cachedir: Path
    version: str | None = None
    source_date_epoch: int | None = None


@dataclass(frozen=True)
class CommitRootfsResult:
    checksum: str
    packages: int
    size: int


def _copy_in(rootfs: Path, dest: Path) -> None:
    if rootfs.is_dir():
        run(["cp", "-a", "--reflink=auto", f"{rootfs}/.", str(dest)], what="copying the rootfs")
    elif rootfs.is_file() and tarfile.is_tarfile(rootfs):
        run(
            [
                "tar",
                "-xpf",
                str(rootfs),
                "-C",
                str(dest),
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
            ],
            what=f"unpacking {rootfs.name}",
        )
    else:
        raise AptOstreeError(f"{rootfs} is neither a folder nor a tarball")


def commit_rootfs(options: CommitRootfsOptions, progress: Progress) -> CommitRootfsResult:
    repo = ostree.Repo.open(options.repo)  # must exist: nothing is made on a typo
    parent = repo.resolve_ref(options.branch)
    with workdir(options.cachedir) as work:
        tree = work / "rootfs"
        tree.mkdir()
        with progress.step(f"Copying {options.rootfs}"):
            _copy_in(options.rootfs, tree)
        with progress.step("Postprocessing"):
            prepare_foreign_rootfs(tree)
        packages = tree_packages(tree)
        inputhash = hashlib.sha256(
            json.dumps({"format": keys.COMPOSE_FORMAT, "packages": packages}).encode()
        ).hexdigest()
        metadata: dict[str, Any] = {keys.PACKAGES: packages, keys.INPUTHASH: inputhash}
        if options.version:
            metadata[keys.VERSION] = options.version
        size = tree_size(tree)
        with progress.step("Committing"):
            checksum = repo.write_commit(
                tree,
                ref=options.branch,
                parent=parent,
                subject=options.version or options.branch,
                metadata=metadata,
                timestamp=options.source_date_epoch or int(time.time()),
            )
    return CommitRootfsResult(checksum, len(packages), size)
