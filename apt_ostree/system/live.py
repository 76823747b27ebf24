"""Changes of the running system without a reboot: `usroverlay` and `apply-live`.

Both start from libostree's unlock of the booted deployment (`ostree admin unlock`): an
overlayfs on /usr whose upper layer lives in /var/tmp, so that it is gone at the next boot.

- `usroverlay` is the development unlock: /usr writable for everyone until reboot
  (`--hotfix`: libostree's persistent unlock, which first clones the deployment as a
  rollback target).
- `apply-live` copies the difference between the booted (or last live) commit and the
  pending deployment's commit into that overlay, as rpm-ostree's apply-live does
  (docs/apply-live.md there): the overlay is the transient unlock, mounted read-only for the
  rest of the system, and written through a remount in a private mount namespace. Only
  package additions on the same base are applied unless `--allow-replacement`; new /etc
  files are added by the 3-way rule (an /etc file the machine has is kept), new accounts are
  merged into /etc, new tmpfiles.d fragments are run and systemd is reloaded. What was
  applied is recorded in /run (gone at reboot, as the overlay), so `status` shows it; the
  target commit stays on the ref `aptostree/live-apply` so that a cleanup cannot prune it.

libostree mounts the overlay in the caller's mount namespace. The daemon's worker runs in a
private one (and the daemon itself with MountFlags=slave), where the mount would vanish with
the worker: the unlock is then run by a helper in pid 1's namespace
(`nsenter --mount=/proc/1/ns/mnt python3 -m apt_ostree.system.live unlock STATE`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from apt_ostree import ostree
from apt_ostree.accounts import merge_accounts
from apt_ostree.errors import AptOstreeError, CommandError, LiveError
from apt_ostree.pkgdiff import diff_packages
from apt_ostree.run import run
from apt_ostree.syscalls import SyscallError, make_mounts_slave, remount, unshare_mounts
from apt_ostree.system.live_state import (
    LIVE_REF,
    LiveState,
    drop_stale_ref,
    read_state,
    write_state,
)
from apt_ostree.system.requests import ApplyLive, UsrOverlay
from apt_ostree.system.results import Outcome, PackageDiff
from apt_ostree.system.sysroot import System

# Always brought up to date when packages are only added: the package database (dpkg, apt,
# debconf under /usr/lib/sysimage) must describe the live /usr, and the accounts and the
# linker cache are what the new packages' scripts and triggers changed.
REFRESHED = (
    "usr/lib/sysimage/",
    "usr/etc/ld.so.cache",
    *(f"usr/etc/{db}" for db in ("passwd", "group", "shadow", "gshadow")),
)
SHOWN = 5  # files named in a refusal


# ---- refusals (nothing is changed before these pass) ----


def _booted(system: System, verb: str) -> ostree.Deployment:
    booted = [d for d in system.sysroot.deployments() if d.booted]
    if not booted:
        raise LiveError(
            f"{verb} changes the running system: {system.sysroot.path} is not a booted OSTree"
            " system (a sysroot in a folder boots nothing)"
        )
    return booted[0]


def _pending(system: System, booted: ostree.Deployment) -> ostree.Deployment:
    own = [d for d in system.sysroot.deployments() if d.osname == booted.osname]
    if not own or own[0] == booted:
        raise LiveError(
            "no pending deployment to apply: install packages (or `apt-ostree install"
            " --apply-live PKG`) first"
        )
    return own[0]


def _check_base(system: System, booted: ostree.Deployment, target: str) -> None:
    mine, theirs = system.commit(booted.checksum), system.commit(target)
    if mine.base_checksum != theirs.base_checksum:
        raise LiveError(
            f"the pending deployment is built on base commit {theirs.base_checksum[:12]}, the"
            f" booted one on {mine.base_checksum[:12]}: only layered package changes can be"
            " applied live; reboot to use the new base"
        )


def _named(paths: Sequence[str]) -> str:
    shown = ", ".join(f"/{p}" for p in paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _check_additions(packages: PackageDiff, files: ostree.TreeDiff) -> None:
    """Without --allow-replacement only package additions are applied, as rpm-ostree."""
    changed = [
        f"{c.name} {c.old_version}" + (f" -> {c.new_version}" if c.new_version else " removed")
        for c in (*packages.removed, *packages.upgraded, *packages.downgraded)
    ]
    if changed:
        raise LiveError(
            f"packages would change or go: {', '.join(changed[:SHOWN])}; only additions are"
            " applied live without --allow-replacement"
        )
    files_changed = [p for p in (*files.modified, *files.removed) if not _refreshed(p)]
    if files_changed:
        raise LiveError(
            f"{len(files_changed)} files would be replaced or removed ({_named(files_changed)});"
            " only additions are applied live without --allow-replacement"
        )


def _refreshed(path: str) -> bool:
    return any(path == r or (r.endswith("/") and path.startswith(r)) for r in REFRESHED)


# ---- copying ----


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def copy_entry(source: Path, dest: Path) -> None:
    """Put `source` (a file, symlink or folder, not its content) at `dest` with its owner,
    mode and extended attributes; files and symlinks replace by rename, never half-written."""
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
            dest.unlink()
        dest.mkdir(exist_ok=True)
        os.chown(dest, st.st_uid, st.st_gid)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
        return
    tmp = dest.parent / f".{dest.name}.apt-ostree-live"
    _remove(tmp)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), tmp)
    else:
        shutil.copy2(source, tmp, follow_symlinks=False)
    os.chown(tmp, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(tmp, stat.S_IMODE(st.st_mode))  # after chown, which drops set-id bits
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    tmp.replace(dest)


def apply_tree_diff(diff: ostree.TreeDiff, source: Path, live: Path, *, replace: bool) -> None:
    """Make `live` (a root) follow `source` (the target's tree) on the paths of `diff`:
    additions always, modifications and removals when `replace` (or refreshed paths)."""
    if replace:
        for rel in sorted(diff.removed, reverse=True):
            _remove(live / rel)
    for rel in (*diff.modified, *diff.added):
        if replace or rel in diff.added or _refreshed(rel):
            copy_entry(source / rel, live / rel)


def _same_entry(a: Path, b: Path) -> bool:
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    if a.is_dir() or b.is_dir():
        return a.is_dir() and b.is_dir()
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def etc_changes(diff: ostree.TreeDiff, source: Path, live: Path, *, replace: bool) -> list[str]:
    """libostree's 3-way rule for /etc, live: a new default is added where /etc has no such
    file; a changed or removed default reaches /etc only where /etc still has the old
    default (read from the live /usr/etc, so call this before /usr is changed)."""
    done: list[str] = []
    for rel in diff.added:
        if rel.startswith("usr/etc/"):
            etc = live / rel.removeprefix("usr/")
            if not (etc.exists() or etc.is_symlink()):
                copy_entry(source / rel, etc)
                done.append(f"/{rel.removeprefix('usr/')}")
    for rel in (*diff.modified, *diff.removed):
        if not rel.startswith("usr/etc/") or not (replace or _refreshed(rel)):
            continue
        etc = live / rel.removeprefix("usr/")
        if (etc.exists() or etc.is_symlink()) and _same_entry(etc, live / rel):
            if rel in diff.removed:
                _remove(etc)
            else:
                copy_entry(source / rel, etc)
            done.append(f"/{rel.removeprefix('usr/')}")
    return done


# ---- mounts ----


def _host_namespace() -> bool:
    try:
        return os.readlink("/proc/self/ns/mnt") == os.readlink("/proc/1/ns/mnt")
    except OSError:
        return True  # cannot tell: act where we are


def _unlock(system: System, deployment: ostree.Deployment, state: str) -> None:
    if _host_namespace():
        system.sysroot.unlock(deployment, state)
        return
    argv = [
        "nsenter",
        "--mount=/proc/1/ns/mnt",
        "--",
        sys.executable,
        "-m",
        "apt_ostree.system.live",
    ]
    try:
        run([*argv, "unlock", state])
    except CommandError as e:
        raise LiveError(f"cannot unlock /usr: {e.stderr.strip() or e}") from e
    system.sysroot.load()


def _writable_usr() -> None:
    """/usr writable for this process only: a private mount namespace (slave: nothing we
    mount leaks out) in which the read-only transient overlay is remounted read-write."""
    try:
        unshare_mounts()
        make_mounts_slave()
        remount("/usr", fstype="overlay", read_only=False)
    except SyscallError as e:
        raise LiveError(f"cannot make /usr writable: {e.strerror}") from e


# ---- verbs ----


def usroverlay(system: System, request: UsrOverlay) -> Outcome:
    hotfix = request.hotfix
    with system.sysroot.locked():
        booted = _booted(system, "usroverlay")
        if booted.unlocked != "none":
            return Outcome(False, (f"/usr is already unlocked ({booted.unlocked}).",))
        state = "hotfix" if hotfix else "development"
        with system.progress.step(f"Unlocking {booted.id} ({state})"):
            _unlock(system, booted, state)
    if hotfix:
        return Outcome(True, ("Hotfix mode: /usr is writable, and stays so across reboots.",))
    return Outcome(
        True,
        ("Development mode: /usr is writable until the next reboot, which drops the changes.",),
    )


def apply_live(system: System, request: ApplyLive) -> Outcome:
    allow_replacement = request.allow_replacement
    with system.sysroot.locked():
        booted = _booted(system, "apply-live")
        pending = _pending(system, booted)
        _check_base(system, booted, pending.checksum)
        live = read_state(booted)
        drop_stale_ref(system.repo, booted)
        source = live.commit if live else booted.checksum
        if source == pending.checksum:
            return Outcome(False, ("No changes to apply: the pending deployment is live.",))
        packages = diff_packages(
            system.commit(source).packages, system.commit(pending.checksum).packages
        )
        files = system.repo.diff_commits(source, pending.checksum)
        if not allow_replacement:
            _check_additions(packages, files)
        replaced = bool(allow_replacement and (files.modified or files.removed))
        lines = _apply(system, booted, pending, files, replace=allow_replacement)
        system.repo.set_ref(LIVE_REF, pending.checksum)
        write_state(
            LiveState(
                booted.id,
                booted.checksum,
                pending.checksum,
                replaced or bool(live and live.replaced),
            )
        )
    added = [f"{c.name} {c.new_version}" for c in packages.added]
    head = f"Applied {pending.checksum} live: {len(files.added)} added"
    head += f", {len(files.modified)} replaced, {len(files.removed)} removed" if replaced else ""
    return Outcome(
        True,
        (f"{head}.", *([f"Added packages: {', '.join(added)}"] if added else []), *lines),
        packages,
        pending.checksum,
    )


def _apply(
    system: System,
    booted: ostree.Deployment,
    pending: ostree.Deployment,
    files: ostree.TreeDiff,
    *,
    replace: bool,
) -> list[str]:
    root = Path("/")
    if booted.unlocked == "none":
        with system.progress.step(f"Unlocking {booted.id} (transient)"):
            _unlock(system, booted, "transient")
    _writable_usr()
    with system.progress.step("Applying the changes to /etc and /usr"):
        etc = etc_changes(files, pending.path, root, replace=replace)
        apply_tree_diff(files, pending.path, root, replace=replace)
        accounts = merge_accounts(root)
    lines = [f"Updated in /etc: {' '.join(etc)}"] if etc else []
    lines += [f"Accounts added to /etc: {' '.join(sorted(set(accounts)))}"] if accounts else []
    return lines + _services(system, (*files.added, *files.modified))


def _services(system: System, changed: Iterable[str]) -> list[str]:
    """Run new tmpfiles.d fragments (their /var content) and reload systemd for new units."""
    paths = list(changed)
    tmpfiles = [
        f"/{p}" for p in paths if p.startswith("usr/lib/tmpfiles.d/") and p.endswith(".conf")
    ]
    units = any(p.startswith(("usr/lib/systemd/system/", "usr/lib/systemd/user/")) for p in paths)
    lines = []
    try:
        if tmpfiles:
            run(["systemd-tmpfiles", "--create", *tmpfiles])
            lines.append(f"Ran tmpfiles.d: {' '.join(tmpfiles)}")
        if units:
            run(["systemctl", "daemon-reload"])
            lines.append("Reloaded systemd units")
    except CommandError as e:
        system.progress.message(f"warning: {e}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m apt_ostree.system.live unlock STATE`: libostree's unlock of the booted deployment,
    run in pid 1's mount namespace by `_unlock` (the caller holds the sysroot lock)."""
    p = argparse.ArgumentParser(prog="apt_ostree.system.live")
    p.add_argument("action", choices=("unlock",))
    p.add_argument("state", choices=sorted(ostree.UNLOCK_STATES))
    args = p.parse_args(argv)
    sysroot = ostree.Sysroot(Path("/"))
    booted = [d for d in sysroot.deployments() if d.booted]
    try:
        if not booted:
            raise LiveError("not booted from OSTree")
        sysroot.unlock(booted[0], args.state)
    except AptOstreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
