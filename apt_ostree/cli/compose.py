"""`apt-ostree compose ...`: the server-side verbs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from apt_ostree import treefile as treefile_mod
from apt_ostree.compose import chunking
from apt_ostree.compose import container as container_mod
from apt_ostree.compose import image as image_mod
from apt_ostree.compose.commit import CommitRootfsOptions, commit_rootfs
from apt_ostree.compose.tree import (
    DEFAULT_CACHEDIR,
    ComposeOptions,
    ComposeResult,
    DeltaResult,
    SummarySigning,
    compose_tree,
    source_date_epoch_from_env,
    static_delta_for_ref,
)
from apt_ostree.errors import UnchangedError, UsageError
from apt_ostree.progress import TerminalProgress, human_size


def register(verbs: Any, *, help: str) -> None:
    compose = verbs.add_parser("compose", help=help)
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
    tree.add_argument(
        "--static-delta",
        action="store_true",
        help="also write the static delta from the ref's previous commit",
    )
    _metadata_argument(tree, "more string metadata of the commit")
    tree.add_argument(
        "--write-commitid-to",
        type=Path,
        metavar="FILE",
        help="write the new commit's checksum to FILE, and leave the ref where it is",
    )
    tree.add_argument(
        "--write-composejson-to",
        type=Path,
        metavar="FILE",
        help="write what was composed (ref, commit, version, input hash, ...) to FILE as JSON",
    )
    tree.add_argument(
        "--print-only", action="store_true", help="print the flattened treefile, compose nothing"
    )
    tree.add_argument(
        "--container-image",
        metavar="IMAGE",
        help="then write the commit as a container image: oci:DIR[:TAG], oci-archive:FILE[:TAG]"
        " or docker://REF (as container-encapsulate)",
    )
    tree.set_defaults(func=cmd_tree)
    _register_static_delta(sub)
    commit = sub.add_parser("commit", help="postprocess and commit a rootfs made by another tool")
    commit.add_argument("rootfs", type=Path, help="a folder or a tarball")
    commit.add_argument("--repo", type=Path, required=True, help="an existing OSTree repository")
    commit.add_argument("--branch", "-b", required=True, help="the ref to commit to")
    _metadata_argument(commit, "only version=VALUE is supported")
    commit.add_argument("--cachedir", type=Path, default=DEFAULT_CACHEDIR)
    commit.set_defaults(func=cmd_commit)
    _register_image(sub)
    _register_encapsulate(sub)


def _metadata_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--add-metadata-string", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def _metadata(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """--add-metadata-string: KEY=VALUE, never one of apt-ostree's own keys."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--add-metadata-string: expected KEY=VALUE, got '{pair}'")
        if key.startswith("aptostree."):
            raise UsageError(f"--add-metadata-string {key}: apt-ostree's own key, not settable")
        out.append((key, value))
    return tuple(out)


def _signing_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--gpg-sign", metavar="KEYID", help=f"GPG-sign {what} with KEYID")
    parser.add_argument("--gpg-homedir", type=Path, help="GnuPG home for --gpg-sign")
    parser.add_argument(
        "--sign-ed25519",
        type=Path,
        metavar="KEYFILE",
        help=f"sign {what} with the ed25519 secret key in KEYFILE (base64)",
    )


def _register_static_delta(sub: Any) -> None:
    delta = sub.add_parser(
        "static-delta",
        help="write the static delta to a ref's commit and update the summary",
    )
    delta.add_argument("ref", metavar="REF")
    delta.add_argument("--repo", type=Path, required=True, help="an existing OSTree repository")
    source = delta.add_mutually_exclusive_group()
    source.add_argument(
        "--from",
        dest="from_rev",
        metavar="CHECKSUM",
        help="the commit clients update from (default: the parent of REF's commit)",
    )
    source.add_argument(
        "--empty", action="store_true", help="a delta from nothing, for first pulls"
    )
    _signing_arguments(delta, "the summary")
    delta.set_defaults(func=cmd_static_delta)


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
    if result.delta is not None:
        print(f"  delta:    {_delta_line(result.delta)}")


def _delta_line(delta: DeltaResult) -> str:
    source = delta.from_checksum[:6] if delta.from_checksum else "scratch"
    return f"{source} -> {delta.to_checksum[:6]}, {human_size(delta.size)}"


def cmd_tree(args: argparse.Namespace) -> int:
    treefile = treefile_mod.load(args.treefile)
    if args.print_only:
        print(json.dumps(treefile.flattened, indent=2, sort_keys=True))
        return 0
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
        static_delta=args.static_delta,
        metadata=_metadata(args.add_metadata_string),
        move_ref=args.write_commitid_to is None,
    )
    _check_key_file(args.sign_ed25519)
    if args.container_image is not None:
        container_mod.Target.parse(args.container_image)  # a bad IMAGE fails before composing
    progress = TerminalProgress(sys.stderr)
    result = compose_tree(treefile, options, progress)
    _print_result(result)
    image = None
    if args.container_image is not None and not args.dry_run and result.checksum:
        # unchanged too: the same commit gives the same image, and a pipeline run again
        # makes sure the registry has it
        image = container_mod.encapsulate(
            args.repo.absolute(), result.checksum, args.container_image, progress
        )
        print(f"Wrote {args.container_image}")
        print(f"  manifest: {image.manifest_digest}")
    if args.write_commitid_to is not None and result.changed and result.checksum:
        args.write_commitid_to.write_text(result.checksum + "\n")
    if args.write_composejson_to is not None and not args.dry_run:
        composed = _compose_json(result)
        if image is not None:
            composed["container-image"] = args.container_image
            composed["container-image-manifest-digest"] = image.manifest_digest
        args.write_composejson_to.write_text(json.dumps(composed, indent=2) + "\n")
    if not result.changed and not args.dry_run and args.unchanged_exit_77:
        raise UnchangedError(f"{result.ref}: nothing changed")
    return 0


def _compose_json(result: ComposeResult) -> dict[str, Any]:
    """What a build pipeline reads after a compose (rpm-ostree's --write-composejson-to keys
    where they apply)."""
    return {
        "ref": result.ref,
        "ostree-commit": result.checksum,
        "commit-version": result.version,
        "changed": result.changed,
        "aptostree-inputhash": result.inputhash,
        "packages": len(result.packages),
    }


def _check_key_file(path: Path | None) -> None:
    if path and not path.is_file():
        raise UsageError(f"--sign-ed25519: {path} is not a file")


def cmd_static_delta(args: argparse.Namespace) -> int:
    _check_key_file(args.sign_ed25519)
    delta = static_delta_for_ref(
        args.repo.absolute(),
        args.ref,
        from_checksum=args.from_rev,
        from_scratch=args.empty,
        signing=SummarySigning(args.gpg_sign, args.gpg_homedir, args.sign_ed25519),
        progress=TerminalProgress(sys.stderr),
    )
    print(f"Static delta {_delta_line(delta)}")
    print(f"  ref:  {args.ref}")
    print(f"  from: {delta.from_checksum or '(scratch)'}")
    print(f"  to:   {delta.to_checksum}")
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


def _register_image(sub: Any) -> None:
    image = sub.add_parser("image", help="a bootable disk image from a commit")
    image.add_argument("output", type=Path, metavar="OUTPUT")
    image.add_argument("--repo", type=Path, required=True, help="the OSTree repository")
    image.add_argument("--ref", required=True, help="the ref (or checksum) to deploy")
    image.add_argument("--format", choices=[f.value for f in image_mod.ImageFormat], default="raw")
    image.add_argument("--size", default="4G", help="disk size (default 4G, sparse)")
    image.add_argument(
        "--karg", action="append", default=[], metavar="ARG", help="a kernel argument (repeat)"
    )
    image.add_argument(
        "--remote", metavar="NAME=URL", help="the remote the booted machine upgrades from"
    )
    verify = image.add_mutually_exclusive_group()
    verify.add_argument("--gpg-import", type=Path, metavar="KEYRING", help="the remote's GPG keys")
    verify.add_argument(
        "--no-gpg-verify", action="store_true", help="no signature checks for the remote"
    )
    image.add_argument(
        "--bootloader",
        choices=[b.value for b in image_mod.Bootloader],
        default=None,
        help="systemd-boot (UEFI, the default), grub (BIOS: GRUB 2.06 from grub-pc-bin,"
        " following libostree's /boot/loader/syslinux.cfg) or grub-efi (UEFI: Debian's signed"
        " shim and GRUB, following libostree's deployments through a generated grub.cfg)",
    )
    image.add_argument(
        "--secure-boot",
        action="store_true",
        help="grub-efi, and refuse a commit whose kernel (or shim, or GRUB) is not signed",
    )
    image.add_argument("--osname", default="debian", help="the stateroot (default debian)")
    image.add_argument(
        "--cachedir",
        type=Path,
        default=image_mod.DEFAULT_CACHEDIR,
        help="where systemd-boot's EFI ext4 driver and the signed shim and GRUB .debs are kept"
        f" (default {image_mod.DEFAULT_CACHEDIR})",
    )
    image.set_defaults(func=cmd_image)


def _bootloader(args: argparse.Namespace) -> image_mod.Bootloader:
    """--bootloader, default systemd-boot; --secure-boot means grub-efi."""
    if args.bootloader is None:
        grub_efi = image_mod.Bootloader.GRUB_EFI
        return grub_efi if args.secure_boot else image_mod.Bootloader.SYSTEMD_BOOT
    return image_mod.Bootloader(args.bootloader)


def cmd_image(args: argparse.Namespace) -> int:
    remote = None
    if args.remote is not None:
        name, sep, url = args.remote.partition("=")
        if not sep or not name or not url:
            raise UsageError(f"--remote: expected NAME=URL, got {args.remote!r}")
        if args.gpg_import is None and not args.no_gpg_verify:
            raise UsageError("--remote needs --gpg-import KEYRING or --no-gpg-verify")
        remote = image_mod.UpdateRemote(name, url, args.gpg_import)
    options = image_mod.ImageOptions(
        repo=args.repo.absolute(),
        ref=args.ref,
        output=args.output.absolute(),
        format=image_mod.ImageFormat(args.format),
        size=image_mod.parse_size(args.size),
        kargs=tuple(args.karg),
        remote=remote,
        bootloader=_bootloader(args),
        secure_boot=args.secure_boot,
        osname=args.osname,
        cachedir=args.cachedir.absolute(),
    )
    result = image_mod.build_image(options, TerminalProgress(sys.stderr))
    print(f"Wrote {result.output}")
    print(f"  commit:  {result.checksum}")
    print(f"  version: {result.version or '(none)'}")
    print(f"  size:    {human_size(options.size)} disk, {human_size(result.file_size)} on disk")
    print(f"  kargs:   {' '.join(result.kargs)}")
    return 0


def _register_encapsulate(sub: Any) -> None:
    enc = sub.add_parser(
        "container-encapsulate", help="a commit as an OCI container image, layered by package"
    )
    enc.add_argument("--repo", type=Path, required=True, help="the OSTree repository")
    enc.add_argument("rev", metavar="REF", help="the ref (or checksum) to encapsulate")
    enc.add_argument(
        "image", metavar="IMAGE", help="oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker://REF"
    )
    enc.add_argument(
        "--max-layers",
        type=int,
        default=chunking.MAX_LAYERS,
        help=f"at most this many layers (default {chunking.MAX_LAYERS})",
    )
    enc.set_defaults(func=cmd_encapsulate)


def cmd_encapsulate(args: argparse.Namespace) -> int:
    if args.max_layers < chunking.MIN_LAYERS:
        raise UsageError(f"--max-layers: at least {chunking.MIN_LAYERS}")
    result = container_mod.encapsulate(
        args.repo.absolute(),
        args.rev,
        args.image,
        TerminalProgress(sys.stderr),
        max_layers=args.max_layers,
    )
    print(f"Wrote {args.image}")
    print(f"  commit:   {result.checksum}")
    print(f"  manifest: {result.manifest_digest}")
    print(f"  layers:   {result.layers}, {human_size(result.size)}")
    return 0
