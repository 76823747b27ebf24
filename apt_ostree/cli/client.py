"""The client's image verbs: init, status, upgrade, deploy, rebase, rollback, cleanup, kargs,
finalize-deployment, db. In-process against `--sysroot DIR` (or / when booted from OSTree)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apt_ostree.errors import UsageError
from apt_ostree.progress import TerminalProgress

if TYPE_CHECKING:
    from types import ModuleType

    from apt_ostree.deployments import DeploymentStatus, Outcome, SysrootClient


# The in-process code (apt, libostree) is imported on first use: without --sysroot the CLI is
# apt-ostreed's client and needs none of it (a third of a second here, seconds under TCG).
def _deployments() -> ModuleType:
    from apt_ostree import deployments

    return deployments


def _pkgdiff() -> ModuleType:
    from apt_ostree import pkgdiff

    return pkgdiff


def _live() -> ModuleType:
    from apt_ostree import live

    return live


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sysroot", type=Path, help="the sysroot (default / when booted)")
    parser.add_argument("--os", dest="osname", metavar="NAME", help="the stateroot")


def _mutating(parser: argparse.ArgumentParser) -> None:
    _target(parser)
    parser.add_argument(
        "--unchanged-exit-77", action="store_true", help="exit 77 when nothing changed"
    )


def _client(args: argparse.Namespace) -> SysrootClient:
    from apt_ostree.deployments import SysrootClient, default_sysroot

    return SysrootClient(default_sysroot(args.sysroot), args.osname, TerminalProgress())


def _print(outcome: Outcome, args: argparse.Namespace) -> int:
    _deployments().unchanged(outcome, getattr(args, "unchanged_exit_77", False))
    for line in outcome.lines:
        print(line)
    if outcome.diff is not None:
        for line in _pkgdiff().render_diff(outcome.diff):
            print(line)
    if getattr(args, "reboot", False) and outcome.changed:
        _deployments().reboot_into_staged()
    return 0


def register(verbs: Any) -> None:
    p = verbs.add_parser("init", help="create a sysroot in a folder and deploy a remote's ref")
    _target(p)
    p.add_argument("ref", help="the ref to follow")
    p.add_argument("--remote", required=True, metavar="NAME=URL", help="the update remote")
    verify = p.add_mutually_exclusive_group(required=True)
    verify.add_argument("--gpg-import", type=Path, metavar="KEYRING", help="verify with GPG keys")
    verify.add_argument("--ed25519-key", metavar="BASE64", help="verify with an ed25519 key")
    verify.add_argument("--no-gpg-verify", action="store_true", help="no signature checks")
    p.add_argument("--karg", action="append", default=[], help="a kernel argument")
    p.set_defaults(func=cmd_init)

    p = verbs.add_parser("search", help="search the machine's apt sources for packages")
    _target(p)
    p.add_argument("patterns", nargs="+", metavar="PATTERN")
    p.set_defaults(func=cmd_search)

    p = verbs.add_parser("refresh-md", help="update the package lists of the apt sources")
    _target(p)
    p.set_defaults(func=lambda a: _print(_client(a).refresh_md(), a))

    p = verbs.add_parser("status", help="show the deployments")
    _target(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-b", "--booted", action="store_true", help="only the booted deployment")
    p.set_defaults(func=cmd_status)

    p = verbs.add_parser("upgrade", help="pull and deploy the newest commit of the origin")
    _mutating(p)
    p.add_argument("--check", action="store_true", help="only say whether an update exists")
    p.add_argument("--preview", action="store_true", help="--check, with the package diff")
    p.add_argument("--download-only", action="store_true", help="pull, do not deploy")
    p.add_argument("--cache-only", action="store_true", help="deploy what was downloaded")
    p.add_argument("--allow-downgrade", action="store_true", help="accept an older commit")
    p.set_defaults(func=cmd_upgrade)

    p = verbs.add_parser("deploy", help="deploy a version (or revision=CHECKSUM) of the ref")
    _mutating(p)
    p.add_argument("revision", metavar="VERSION|revision=CHECKSUM")
    p.set_defaults(func=cmd_deploy)

    p = verbs.add_parser("rebase", help="follow another ref")
    _mutating(p)
    p.add_argument("refspec", metavar="REMOTE:REF[:CHECKSUM]")
    p.add_argument("revision", nargs="?", metavar="VERSION|revision=CHECKSUM")
    p.set_defaults(func=cmd_rebase)

    p = verbs.add_parser("rollback", help="make the previous deployment the default")
    _mutating(p)
    p.set_defaults(func=lambda a: _print(_client(a).rollback(), a))

    p = verbs.add_parser("cleanup", help="remove deployments and cached data")
    _mutating(p)
    p.add_argument("-p", "--pending", action="store_true", help="the pending deployment")
    p.add_argument("-r", "--rollback", action="store_true", help="the rollback deployment")
    p.add_argument("-b", "--base", action="store_true", help="unreferenced objects")
    p.add_argument("-m", "--repomd", action="store_true", help="cached update metadata")
    p.set_defaults(func=cmd_cleanup)

    p = verbs.add_parser("kargs", help="show or change kernel arguments")
    _mutating(p)
    for flag in ("append", "delete", "replace", "append-if-missing", "delete-if-present"):
        p.add_argument(f"--{flag}", action="append", default=[], metavar="KARG")
    p.add_argument("--deploy-index", type=int, metavar="N")
    p.set_defaults(func=cmd_kargs)

    p = verbs.add_parser("finalize-deployment", help="let the staged deployment be finalized")
    _target(p)
    p.add_argument("checksum", nargs="?")
    p.set_defaults(func=lambda a: _print(_client(a).finalize_deployment(a.checksum), a))

    register_db(verbs)
    register_layering(verbs)
    register_live(verbs)


def register_live(verbs: Any) -> None:
    p = verbs.add_parser("apply-live", help="apply the pending deployment to the running system")
    _mutating(p)
    p.add_argument("--allow-replacement", action="store_true", help="also replace and remove files")
    p.set_defaults(func=cmd_apply_live)
    p = verbs.add_parser("usroverlay", help="a writable overlay on /usr until the next reboot")
    _mutating(p)
    p.add_argument("--hotfix", action="store_true", help="keep it across reboots")
    p.set_defaults(func=lambda a: _print(_live().usroverlay(_client(a), hotfix=a.hotfix), a))


def register_layering(verbs: Any) -> None:
    for verb, helptext, func in (
        ("install", "layer packages (names, or local .deb files)", cmd_install),
        ("uninstall", "remove layered packages", cmd_uninstall),
    ):
        p = verbs.add_parser(verb, help=helptext)
        _mutating(p)
        p.add_argument("packages", nargs="+", metavar="PKG")
        p.add_argument("--idempotent", action="store_true", help="no error when already so")
        if verb == "install":
            p.add_argument(
                "--allow-inactive", action="store_true", help="allow packages the base has"
            )
            p.add_argument(
                "-A",
                "--apply-live",
                action="store_true",
                help="also apply it to the running system",
            )
        p.add_argument("-r", "--reboot", action="store_true", help="reboot when staged")
        p.set_defaults(func=func)
    override = verbs.add_parser("override", help="remove or replace base packages")
    sub = override.add_subparsers(dest="override_verb", metavar="VERB", parser_class=type(override))
    sub.required = True
    p = sub.add_parser("remove", help="remove base packages")
    _mutating(p)
    p.add_argument("packages", nargs="+", metavar="PKG")
    p.set_defaults(func=lambda a: _print(_client(a).override_remove(a.packages), a))
    p = sub.add_parser("replace", help="replace base packages (./pkg.deb or PKG=VERSION)")
    _mutating(p)
    p.add_argument("packages", nargs="+", metavar="PKG")
    p.set_defaults(func=lambda a: _print(_client(a).override_replace(a.packages), a))
    p = sub.add_parser("reset", help="drop overrides")
    _mutating(p)
    p.add_argument("packages", nargs="*", metavar="PKG")
    p.add_argument("--all", action="store_true", dest="all_")
    p.set_defaults(func=cmd_override_reset)
    p = verbs.add_parser("initramfs", help="regenerate the initramfs on this machine")
    _mutating(p)
    switch = p.add_mutually_exclusive_group()
    switch.add_argument("--enable", action="store_true", help="regenerate it on every deploy")
    switch.add_argument("--disable", action="store_true", help="use the image's again")
    p.add_argument("--arg", action="append", default=[], help="a dracut argument")
    p.add_argument("-r", "--reboot", action="store_true", help="reboot when staged")
    p.set_defaults(func=cmd_initramfs)
    p = verbs.add_parser("reset", help="drop all layered packages and overrides")
    _mutating(p)
    p.add_argument("--overlays", action="store_true", help="only layered packages")
    p.add_argument("--overrides", action="store_true", help="only overrides")
    p.set_defaults(func=cmd_reset)


def register_db(verbs: Any) -> None:
    db = verbs.add_parser("db", help="packages of commits, from their metadata")
    sub = db.add_subparsers(dest="db_verb", metavar="VERB", parser_class=type(db))
    sub.required = True
    p = sub.add_parser("diff", help="package changes between two commits or deployments")
    _target(p)
    p.add_argument("from_rev", nargs="?", metavar="FROM")
    p.add_argument("to_rev", nargs="?", metavar="TO")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_diff)
    p = sub.add_parser("list", help="the packages of a commit")
    _target(p)
    p.add_argument("rev", nargs="?", metavar="REV")
    p.set_defaults(func=cmd_db_list)
    p = sub.add_parser("version", help="the dpkg database of a commit")
    _target(p)
    p.add_argument("rev", nargs="?", metavar="REV")
    p.set_defaults(func=cmd_db_version)


def cmd_init(args: argparse.Namespace) -> int:
    if args.sysroot is None or args.osname is None:
        raise UsageError("init needs --sysroot DIR and --os NAME")
    name, sep, url = args.remote.partition("=")
    if not sep or not name or not url:
        raise UsageError(f"--remote {args.remote}: expected NAME=URL")
    outcome = _deployments().init_sysroot(
        args.sysroot,
        args.osname,
        remote=name,
        url=url,
        ref=args.ref,
        verify={
            "gpg_verify": args.gpg_import is not None,
            "gpg_keyring": args.gpg_import,
            "ed25519_key": args.ed25519_key,
        },
        kargs=args.karg,
        progress=TerminalProgress(),
    )
    return _print(outcome, args)


def deployment_states(statuses: list[DeploymentStatus]) -> list[str]:
    """booted, staged, pending (ahead of the booted one), rollback; in a folder sysroot the
    first deployment is the default and the others are rollbacks."""
    any_booted = any(s.deployment.booted for s in statuses)
    states, seen = [], False
    for i, s in enumerate(statuses):
        d = s.deployment
        seen = seen or d.booted
        if d.staged or d.booted:
            states.append("staged" if d.staged else "booted")
        elif any_booted:
            states.append("rollback" if seen else "pending")
        else:
            states.append("default" if i == 0 else "rollback")
    return states


def render_status(statuses: list[DeploymentStatus], *, verbose: bool) -> list[str]:
    lines = ["Deployments:"]
    for s, state in zip(statuses, deployment_states(statuses), strict=True):
        d, o, c = s.deployment, s.origin, s.commit
        mark = "●" if d.booted else " "
        lines.append(f"{mark} {o.refspec if o else '(unknown origin)'} [{state}]")
        rows: list[tuple[str, str]] = []
        if c is not None:
            ts = _deployments().timestamp_text(c.timestamp)
            rows.append(("Version", f"{c.version or '-'} ({ts})"))
            if c.base_checksum != d.checksum:
                rows.append(("BaseCommit", c.base_checksum))
        rows.append(("Commit", d.checksum))
        if o is not None:
            if o.override_commit:
                rows.append(("Pinned to", o.override_commit))
            if o.requested_packages:
                rows.append(("LayeredPackages", " ".join(o.requested_packages)))
            if o.requested_local_packages:
                rows.append(("LocalPackages", " ".join(o.requested_local_packages)))
            if o.override_remove:
                rows.append(("RemovedBasePackages", " ".join(o.override_remove)))
            if o.regenerate_initramfs:
                rows.append(("Initramfs", "regenerated " + " ".join(o.initramfs_args)))
            if o.override_replace or o.override_replace_local:
                replaced = o.override_replace + o.override_replace_local
                rows.append(("ReplacedBasePackages", " ".join(replaced)))
        if d.pinned:
            rows.append(("Pinned", "yes"))
        if d.unlocked != "none":
            rows.append(("Unlocked", d.unlocked))
        if s.live is not None:
            how = " (files replaced)" if s.live.replaced else ""
            rows.append(("LiveCommit", f"{s.live.commit}{how}"))
        if verbose:
            rows += [("OSName", d.osname), ("Id", d.id), ("KernelArgs", " ".join(d.kargs))]
            if c is not None:
                rows.append(("Packages", str(len(c.packages))))
        lines += [f"{k:>21}: {v}" for k, v in rows]
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    statuses = _client(args).status()
    if args.booted:
        booted = [s for s in statuses if s.deployment.booted]
        statuses = booted or statuses[:1]
    if args.json:
        doc = {
            "deployments": [s.to_json() for s in statuses],
            "transaction": None,
            "cached-update": None,
        }
        print(json.dumps(doc, indent=2))
        return 0
    for line in render_status(statuses, verbose=args.verbose):
        print(line)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    if args.cache_only and args.download_only:
        raise UsageError("--cache-only and --download-only exclude each other")
    options = _deployments().UpgradeOptions(
        check=args.check,
        preview=args.preview,
        download_only=args.download_only,
        cache_only=args.cache_only,
        allow_downgrade=args.allow_downgrade,
    )
    outcome = _client(args).upgrade(options)
    if (args.check or args.preview) and not outcome.changed:
        args.unchanged_exit_77 = True  # rpm-ostree: --check/--preview exit 77 with no update
    return _print(outcome, args)


def cmd_deploy(args: argparse.Namespace) -> int:
    return _print(_client(args).deploy(args.revision), args)


def cmd_rebase(args: argparse.Namespace) -> int:
    return _print(_client(args).rebase(args.refspec, args.revision), args)


def cmd_cleanup(args: argparse.Namespace) -> int:
    outcome = _client(args).cleanup(
        pending=args.pending, rollback=args.rollback, base=args.base, metadata=args.repomd
    )
    return _print(outcome, args)


def cmd_kargs(args: argparse.Namespace) -> int:
    outcome = _client(args).kargs(
        append=args.append,
        delete=args.delete,
        replace=args.replace,
        append_if_missing=args.append_if_missing,
        delete_if_present=args.delete_if_present,
        deploy_index=args.deploy_index,
    )
    return _print(outcome, args)


def cmd_db_diff(args: argparse.Namespace) -> int:
    old, new, diff = _client(args).db_diff(args.from_rev, args.to_rev)
    if args.json:
        print(json.dumps({"from": old, "to": new, **diff.to_json()}, indent=2))
        return 0
    print(f"ostree diff commit from: {old}")
    print(f"ostree diff commit to:   {new}")
    for line in _pkgdiff().render_diff(diff):
        print(line)
    return 0


def cmd_db_list(args: argparse.Namespace) -> int:
    checksum, packages = _client(args).db_list(args.rev)
    print(f"ostree commit: {checksum}")
    for line in _pkgdiff().render_package_list(packages):
        print(f"  {line}")
    return 0


def cmd_db_version(args: argparse.Namespace) -> int:
    checksum, packages = _client(args).db_list(args.rev)
    dpkg = next((v for n, v, _ in packages if n == "dpkg"), "-")
    print(f"ostree commit: {checksum}")
    print(f"  dpkg database: dpkg {dpkg}, {len(packages)} packages")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    if args.apply_live and args.reboot:
        raise UsageError("install: --apply-live and --reboot exclude each other")
    client = _client(args)
    outcome = client.install(
        args.packages, idempotent=args.idempotent, allow_inactive=args.allow_inactive
    )
    if not args.apply_live:
        return _print(outcome, args)
    _print(outcome, argparse.Namespace())  # exit 77 only when nothing was applied either
    return _print(_live().apply_live(client), args)


def cmd_apply_live(args: argparse.Namespace) -> int:
    return _print(_live().apply_live(_client(args), allow_replacement=args.allow_replacement), args)


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _print(_client(args).uninstall(args.packages, idempotent=args.idempotent), args)


def cmd_override_reset(args: argparse.Namespace) -> int:
    if not args.packages and not args.all_:
        raise UsageError("override reset: name packages or give --all")
    return _print(_client(args).override_reset(args.packages, all_=args.all_), args)


def cmd_reset(args: argparse.Namespace) -> int:
    both = not (args.overlays or args.overrides)
    outcome = _client(args).reset(overlays=args.overlays or both, overrides=args.overrides or both)
    return _print(outcome, args)


def cmd_search(args: argparse.Namespace) -> int:
    found = _client(args).search(args.patterns)
    if not found:
        print("No matches.")
    for name, version, summary in found:
        print(f"{name} {version}: {summary}")
    return 0


def cmd_initramfs(args: argparse.Namespace) -> int:
    if args.arg and not args.enable:
        raise UsageError("initramfs: --arg needs --enable")
    enable = True if args.enable else False if args.disable else None
    return _print(_client(args).initramfs(enable=enable, args=args.arg), args)
