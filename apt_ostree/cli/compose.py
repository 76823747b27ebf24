"""`apt-ostree compose ...`: the server-side verbs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from apt_ostree import treefile as treefile_mod
from apt_ostree.compose.commit import CommitRootfsOptions, commit_rootfs
from apt_ostree.compose.tree import (
    DEFAULT_CACHEDIR,
    ComposeOptions,
    ComposeResult,
    compose_tree,
    source_date_epoch_from_env,
)
from apt_ostree.errors import UnchangedError, UsageError
from apt_ostree.progress import TerminalProgress, human_size


def register(verbs: Any) -> None:
    compose = verbs.add_parser("compose", help="compose images on a build server")
    sub = compose.add_subparsers(dest="compose_verb", metavar="VERB", parser_class=type(compose))
    sub.required = True
    tree = sub.add_parser("tree", help="compose a treefile into an OSTree commit")
    tree.add_argument("treefile", type=Path)
    tree.add_argument("--repo", type=Path, required=True, help="OSTree repository (made if absent)")
    tree.add_argument(
        "--cachedir",
        type=Path,
        default=DEFAULT_CACHEDIR,
        help=f"apt state and downloaded packages (default {DEFAULT_CACHEDIR})",
    )
    tree.add_argument("--dry-run", action="store_true", help="print the resolved package set")
    tree.add_argument("--lockfile", type=Path, help="compose exactly these package versions")
    tree.add_argument(
        "--write-lockfile-to",
        type=Path,
        metavar="FILE",
        help="write the resolved package versions to FILE",
    )
    tree.add_argument(
        "--force-nocache", action="store_true", help="compose even when the inputs have not changed"
    )
    tree.add_argument(
        "--unchanged-exit-77",
        action="store_true",
        help="exit 77 when there is nothing new to commit",
    )
    tree.add_argument("--gpg-sign", metavar="KEYID", help="GPG-sign the commit with KEYID")
    tree.add_argument("--gpg-homedir", type=Path, help="GnuPG home for --gpg-sign")
    tree.add_argument(
        "--sign-ed25519",
        type=Path,
        metavar="KEYFILE",
        help="sign the commit with the ed25519 secret key in KEYFILE (base64)",
    )
    tree.set_defaults(func=cmd_tree)
    commit = sub.add_parser("commit", help="postprocess and commit a rootfs made by another tool")
    commit.add_argument("rootfs", type=Path, help="a folder or a tarball")
    commit.add_argument("--repo", type=Path, required=True, help="an existing OSTree repository")
    commit.add_argument("--branch", "-b", required=True, help="the ref to commit to")
    commit.add_argument(
        "--add-metadata-string",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only version=VALUE is supported",
    )
    commit.add_argument("--cachedir", type=Path, default=DEFAULT_CACHEDIR)
    commit.set_defaults(func=cmd_commit)


def _print_result(result: ComposeResult) -> None:
    if result.checksum is None:
        for p in result.packages:
            print(f"{p.name} {p.version} {p.architecture}")
        print(
            f"{len(result.packages)} packages, {human_size(sum(p.size for p in result.packages))}"
            " to download"
        )
        return
    if not result.changed:
        print(f"No changes: {result.ref} is {result.checksum} (input hash unchanged)")
        return
    print(f"Committed {result.checksum}")
    print(f"  ref:      {result.ref}")
    print(f"  version:  {result.version or '(none)'}")
    print(f"  packages: {len(result.packages)}")
    print(f"  size:     {human_size(result.size)}")


def cmd_tree(args: argparse.Namespace) -> int:
    treefile = treefile_mod.load(args.treefile)
    options = ComposeOptions(
        repo=args.repo.absolute(),
        cachedir=args.cachedir.absolute(),
        dry_run=args.dry_run,
        lockfile=args.lockfile,
        write_lockfile_to=args.write_lockfile_to,
        force_nocache=args.force_nocache,
        source_date_epoch=source_date_epoch_from_env(),
        gpg_sign=args.gpg_sign,
        gpg_homedir=args.gpg_homedir,
        ed25519_key=args.sign_ed25519,
    )
    if args.sign_ed25519 and not args.sign_ed25519.is_file():
        raise UsageError(f"--sign-ed25519: {args.sign_ed25519} is not a file")
    result = compose_tree(treefile, options, TerminalProgress(sys.stderr))
    _print_result(result)
    if not result.changed and not args.dry_run and args.unchanged_exit_77:
        raise UnchangedError(f"{result.ref}: nothing changed")
    return 0


def _version_arg(pairs: list[str]) -> str | None:
    version = None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key != "version":
            raise UsageError(f"--add-metadata-string: expected version=VALUE, got '{pair}'")
        version = value
    return version


def cmd_commit(args: argparse.Namespace) -> int:
    if not args.rootfs.exists():
        raise UsageError(f"{args.rootfs}: no such file or folder")
    options = CommitRootfsOptions(
        repo=args.repo.absolute(),
        branch=args.branch,
        rootfs=args.rootfs.absolute(),
        cachedir=args.cachedir.absolute(),
        version=_version_arg(args.add_metadata_string),
        source_date_epoch=source_date_epoch_from_env(),
    )
    result = commit_rootfs(options, TerminalProgress(sys.stderr))
    print(f"Committed {result.checksum}")
    print(f"  ref:      {args.branch}")
    print(f"  packages: {result.packages}")
    print(f"  size:     {human_size(result.size)}")
    return 0
