"""Postprocessing: a Debian root filesystem -> the layout of every commit (DESIGN.md, "Trees").

The steps, in this order, and why:

1. Forget the build host: mmdebstrap copies the host's /etc/resolv.conf and /etc/hostname
   into the tree so that maintainer scripts have a network (mmdebstrap(1), "OPERATION");
   as plain files they are dropped first, so that the user's steps below may still add them.
   Then `mutate-os-release` (`osrelease.py`), before the steps that may replace the file, as
   in rpm-ostree.
2. `remove-files`, then 3. `add-files`: removing first means an added file can replace a
   packaged one; both come before the scripts, which may use what was added.
4. The postprocess scripts, in order, inside the tree with bubblewrap (no network, cwd /).
5. `units` and `default-target` with the tree's own systemctl (offline): after the scripts
   and add-files, which may ship the unit files; then `automatic-updates` and the masks of
   apt's own update units (`automatic.py`).
6. Kernel and initramfs (`initramfs.py`): after every step that may change dracut's
   configuration, modules or firmware, and while /etc is still /etc for dracut to read.
7. The package databases into /usr/lib/sysimage (dpkg, debconf, apt's extended_states),
   with tmpfiles.d symlinks back from /var, so the image's package state follows the image
   (and before /var/cache is cleared: debconf's database lives there).
8. Per-machine state out: /etc/machine-id emptied (or removed), SSH host keys (and a unit
   that makes them on first boot), random seeds, D-Bus's machine-id, the contents of
   /var/log, /var/cache and apt's lists, the tools' backups of their last state (dpkg's
   `*-old`, /etc/shadow- and friends); /etc/resolv.conf points at systemd-resolved's
   stub when the tree has it.
9. /home, /root, /srv, /mnt, /usr/local move under /var (their own at runtime), /opt's
   content to /usr/lib/opt; files a package put under /usr/local are refused.
10. /var becomes tmpfiles.d lines and is emptied: libostree never touches a deployment's
    /var after the first deploy, so what packages put there must be recreated at boot by
    systemd-tmpfiles. Directories become `d` with their mode and owner; symlinks `L`;
    regular files move to /usr/share/factory/var and become `C` lines (copied when missing,
    with their mode and owner: systemd's own convention for vendor copies, tmpfiles.d(5)).
    So a package's state file survives, and a new image adds new ones without overwriting
    what a machine changed. Paths the packages' own tmpfiles.d already cover are left to them.
11. /etc -> /usr/etc (libostree's 3-way merge makes /etc from it on each deploy).
12. The top level: symlinks into /var, `/ostree -> sysroot/ostree`, `/media -> run/media`,
    empty /dev, /proc, /sys, /run, /boot, /efi, /sysroot, /var and /tmp (1777); then no
    device node, fifo or socket left anywhere (libostree refuses to commit them).

The same input gives a byte-identical tree: generated files are sorted and carry no dates.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree import accounts, debconf
from apt_ostree.accounts import install_unit as install_accounts_unit
from apt_ostree.compose.automatic import guard_apt, mask_apt_updates, set_policy
from apt_ostree.compose.initramfs import prepare_kernel
from apt_ostree.compose.osrelease import mutate_os_release
from apt_ostree.errors import CommandError, PostprocessError
from apt_ostree.progress import Progress
from apt_ostree.pycache import zero_source_mtimes
from apt_ostree.sandbox import Bind, passthrough_env, run_in_tree, stream_in_tree

TMPFILES_DIR = "usr/lib/tmpfiles.d"
SYSIMAGE_CONF = f"{TMPFILES_DIR}/apt-ostree-sysimage.conf"
VAR_CONF = f"{TMPFILES_DIR}/apt-ostree-var.conf"
FACTORY = "usr/share/factory"
USR_OPT = "usr/lib/opt"
SSH_KEYGEN_UNIT = "apt-ostree-ssh-keygen.service"

# (path in /var, where the image keeps it): state that must follow the image, not the machine.
SYSIMAGE_MOVES: tuple[tuple[str, str], ...] = (
    ("var/lib/dpkg", "usr/lib/sysimage/dpkg"),
    ("var/cache/debconf", "usr/lib/sysimage/debconf"),
    ("var/lib/apt/extended_states", "usr/lib/sysimage/apt/extended_states"),
)
# (top-level path, its place under /var), as on Fedora's ostree systems.
VAR_HOMES: tuple[tuple[str, str], ...] = (
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("srv", "var/srv"),
    ("mnt", "var/mnt"),
    ("opt", "var/opt"),
    ("usr/local", "var/usrlocal"),
)
PRIVATE_HOMES = frozenset({"var/roothome"})  # 0700 when the tree has no /root to copy
# Under these only the directories stay (as tmpfiles lines): their content is per machine.
DIRECTORIES_ONLY = ("var/log", "var/cache", "var/lib/apt/lists")
EMPTIED = ("var/tmp",)
MACHINE_FILES = (
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    "var/lib/urandom/random-seed",
    # backups the tools keep of their last state: never used from an image, and they make
    # every package change ship the dpkg status (and /etc/shadow) twice in each upgrade
    "usr/lib/sysimage/dpkg/*-old",
    "usr/lib/sysimage/debconf/*-old",
    "etc/passwd-",
    "etc/group-",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/subuid-",
    "etc/subgid-",
)
BUILD_HOST_FILES = ("etc/resolv.conf", "etc/hostname")
# Directories the conversion goes into: none may be a symlink out of the tree (an absolute
# link means a path in the tree, but the conversion runs on the host).
TRAVERSED = (
    "boot",
    "etc",
    "etc/ssh",
    "usr/lib",
    "usr/lib/modules",
    "usr/lib/opt",
    "usr/lib/sysimage",
    "usr/lib/systemd/system",
    "usr/lib/tmpfiles.d",
    "usr/share",
    "usr/share/factory",
    "var",
    "var/cache",
    "var/lib",
    "var/lib/apt",
    "var/lib/dbus",
    "var/lib/systemd",
    "var/lib/urandom",
    "var/log",
    "var/opt",
    "var/tmp",
)
RESOLVED = "usr/lib/systemd/systemd-resolved"
RESOLVED_STUB = "../run/systemd/resolve/stub-resolv.conf"
# (path, mode) of the empty directories of every commit.
EMPTY_DIRS: tuple[tuple[str, int], ...] = (
    ("boot", 0o755),
    ("dev", 0o755),
    ("efi", 0o755),  # systemd's gpt-auto generator mounts the ESP here (notes/booting.md)
    ("proc", 0o555),
    ("run", 0o755),
    ("sys", 0o555),
    ("sysroot", 0o755),
    ("tmp", 0o1777),
    ("var", 0o755),
)
TOP_LINKS: tuple[tuple[str, str], ...] = (
    *VAR_HOMES,
    ("media", "run/media"),  # removable media under /run, as on Fedora
    ("ostree", "sysroot/ostree"),
)
CONF_HEADER = (
    "# Made by apt-ostree compose: libostree keeps /var per machine and a commit's /var is\n"
    "# empty, so what the image's packages put there is recreated at boot from these lines.\n"
)
SSH_KEYGEN_TEXT = """\
# Made by apt-ostree compose: SSH host keys are per machine and never in an image.
[Unit]
Description=Generate missing SSH host keys
Documentation=man:ssh-keygen(1)
Before=ssh.service ssh.socket
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
"""


def shipped_digest() -> str:
    """Digest of the files compose writes from its own code (scripts, units): part of the
    input hash, so that a new apt-ostree that ships different ones makes a new commit."""
    texts = (accounts.SCRIPT_TEXT, accounts.UNIT_TEXT, SSH_KEYGEN_TEXT)
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


@dataclass(frozen=True)
class PostprocessOptions:
    units: tuple[str, ...] = ()
    default_target: str | None = None
    add_files: tuple[tuple[Path, str], ...] = ()  # (file on the host, absolute path in the tree)
    remove_files: tuple[str, ...] = ()  # paths or globs, relative to /
    postprocess_scripts: tuple[str, ...] = ()  # script texts with a #! line
    initramfs_args: tuple[str, ...] = ()
    machineid_compat: bool = True  # False: no /etc/machine-id at all; True: an empty one
    automatic_updates: str | None = None  # AutomaticUpdatePolicy of the image's apt-ostreed
    mutate_os_release: str | None = None  # the base version to replace in os-release
    version: str | None = None  # the version of the commit being made
    etc_group_members: tuple[str, ...] | None = None  # kept for the accounts merge
    debconf: tuple[str, ...] = ()  # the treefile's answers, kept for layering


def postprocess(rootfs: Path, options: PostprocessOptions, progress: Progress) -> None:
    """Turn the root filesystem in `rootfs` into the committed layout, in place."""
    _convert(rootfs, options, progress, foreign=False)


def prepare_foreign_rootfs(rootfs: Path, progress: Progress | None = None) -> None:
    """The same for a tree made by another tool, which may be converted already in part.

    A tree whose /etc is already /usr/etc, or whose dpkg database is already in
    /usr/lib/sysimage, is taken as it is; an initramfs already beside the kernel is kept.
    """
    _convert(rootfs, PostprocessOptions(), progress or Progress(), foreign=True)


def _convert(
    rootfs: Path, options: PostprocessOptions, progress: Progress, *, foreign: bool
) -> None:
    _check_tree(rootfs)
    _check_no_escape(rootfs)
    _restore_etc(rootfs)
    _remove_build_host_files(rootfs)
    if options.mutate_os_release is not None:
        mutate_os_release(rootfs, options.mutate_os_release, options.version, progress)
    if options.remove_files:
        progress.message("    removing files")
        remove_files(rootfs, options.remove_files, progress)
    if options.add_files:
        progress.message("    adding files")
        add_files(rootfs, options.add_files)
    run_scripts(rootfs, options.postprocess_scripts, progress)
    enable_units(rootfs, options.units, options.default_target)
    if options.automatic_updates not in (None, "none"):
        set_policy(rootfs, str(options.automatic_updates))
    masked = mask_apt_updates(rootfs)
    if masked:
        progress.message(f"    masked {' '.join(masked)}: apt cannot change an image's /usr")
    guarded = guard_apt(rootfs)
    if guarded:
        progress.message(f"    {', '.join(guarded)}: guarded, they point to apt-ostree's verbs")
    _check_no_escape(rootfs)  # again: the scripts may have made links
    prepare_kernel(rootfs, options.initramfs_args, progress, keep_initramfs=foreign)
    if (rootfs / "usr/lib/systemd/system").is_dir():
        install_accounts_unit(rootfs)
    accounts.install_group_members(rootfs, options.etc_group_members)
    debconf.install(rootfs, options.debconf)
    progress.message("    converting to the OSTree layout")
    move_sysimage(rootfs)
    drop_machine_state(rootfs, machineid_compat=options.machineid_compat)
    move_homes(rootfs)
    convert_var(rootfs)
    os.rename(rootfs / "etc", rootfs / "usr/etc")
    make_top_level(rootfs)
    _remove_special_files(rootfs, progress)
    zero_source_mtimes(rootfs / "usr")  # libostree checks out every file with mtime 0


# -- paths inside the tree ------------------------------------------------------------------


def _check_tree(rootfs: Path) -> None:
    if not (rootfs / "usr").is_dir():
        raise PostprocessError(f"{rootfs} is not a root filesystem (it has no /usr)")
    if (rootfs / "etc").is_dir() and (rootfs / "usr/etc").is_dir():
        raise PostprocessError(f"{rootfs} has both /etc and /usr/etc: keep only one")
    if not (rootfs / "etc").is_dir() and not (rootfs / "usr/etc").is_dir():
        raise PostprocessError(f"{rootfs} is not a root filesystem (it has no /etc)")


def _check_no_escape(rootfs: Path) -> None:
    for rel in TRAVERSED:
        path = rootfs / rel
        if path.is_symlink() and not _inside(rootfs, path):
            raise PostprocessError(
                f"/{rel} is a symlink out of the tree ({os.readlink(path)}): make it a directory"
            )


def _restore_etc(rootfs: Path) -> None:
    """A tree converted before gets its /etc back for the steps that read it."""
    if not (rootfs / "etc").is_dir():
        if (rootfs / "etc").is_symlink():
            (rootfs / "etc").unlink()
        os.rename(rootfs / "usr/etc", rootfs / "etc")


def _inside(rootfs: Path, path: Path) -> bool:
    """Whether `path` stays in the tree (an absolute symlink on the way would lead out)."""
    real = os.path.realpath(path)
    top = os.path.realpath(rootfs)
    return real == top or real.startswith(top + os.sep)


def _tree_path(rootfs: Path, path: str, what: str) -> Path:
    rel = path.lstrip("/")
    if not rel or ".." in Path(rel).parts:
        raise PostprocessError(f"{what}: '{path}' is not a path inside the tree")
    return rootfs / rel


def _mkdirs(path: Path, mode: int = 0o755) -> None:
    """mkdir -p with an exact mode (whatever the umask) for each directory it makes."""
    if path.is_dir():
        return
    _mkdirs(path.parent, mode)
    path.mkdir()
    path.chmod(mode)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _empty(path: Path) -> None:
    """Remove what is in the directory `path` (never through a symlink)."""
    if path.is_symlink() or not path.is_dir():
        return
    for child in list(path.iterdir()):
        _remove(child)


def _walk(top: Path) -> Iterator[Path]:
    """Everything under `top`, parents first, sorted, never following symlinks."""
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        yield Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))


def _remove_build_host_files(rootfs: Path) -> None:
    for rel in BUILD_HOST_FILES:
        path = rootfs / rel
        if path.is_file() and not path.is_symlink():
            path.unlink()


# -- the user's steps -----------------------------------------------------------------------


def remove_files(rootfs: Path, patterns: Sequence[str], progress: Progress) -> None:
    """Delete what each pattern (a path or glob relative to /) matches."""
    for pattern in patterns:
        base = _tree_path(rootfs, pattern, "remove-files")
        rel = base.relative_to(rootfs)
        matches = glob.glob(
            os.path.join(glob.escape(str(rootfs)), str(rel)), recursive=True, include_hidden=True
        )
        if not matches:
            progress.message(f"    remove-files: nothing matches {pattern}")
        for match in sorted(matches):
            path = Path(match)
            if not _inside(rootfs, path.parent):
                raise PostprocessError(
                    f"remove-files: {pattern} leads out of the tree through a symlink"
                )
            _remove(path)


def add_files(rootfs: Path, files: Iterable[tuple[Path, str]]) -> None:
    """Copy each host file to its absolute path in the tree (content and mode; owner root)."""
    for source, dest in files:
        if not dest.startswith("/"):
            raise PostprocessError(f"add-files: '{dest}' is not an absolute path")
        target = _tree_path(rootfs, dest, "add-files")
        if not source.is_file():
            raise PostprocessError(f"add-files: {source} is not a file")
        if not _inside(rootfs, target.parent):
            raise PostprocessError(f"add-files: {dest} leads out of the tree through a symlink")
        if target.is_dir() and not target.is_symlink():
            raise PostprocessError(f"add-files: {dest} is a directory in the tree")
        _mkdirs(target.parent)
        if target.is_symlink() or target.exists():
            target.unlink()  # never write through a symlink
        shutil.copyfile(source, target)
        os.chown(target, 0, 0)
        target.chmod(stat.S_IMODE(source.stat().st_mode))


def _check_script(index: int, text: str) -> None:
    if not text.startswith("#!"):
        raise PostprocessError(
            f"postprocess script {index} does not start with a #! line naming its interpreter"
        )


def run_scripts(rootfs: Path, scripts: Sequence[str], progress: Progress) -> None:
    """Run each script inside the tree (bubblewrap, no network, cwd /); stop at a failure."""
    for index, text in enumerate(scripts, 1):
        _check_script(index, text)
    for index, text in enumerate(scripts, 1):
        progress.message(f"    running postprocess script {index} of {len(scripts)}")
        with tempfile.TemporaryDirectory(prefix="apt-ostree-script-") as tmp:
            script = Path(tmp) / "script"
            script.write_text(text)
            script.chmod(0o755)
            inside = "/run/apt-ostree/postprocess-script"
            try:
                stream_in_tree(
                    rootfs,
                    [inside],
                    lambda line: progress.message(f"    | {line}"),
                    binds=(Bind(script, inside, readonly=True),),
                    env=passthrough_env(),
                    what=f"postprocess script {index}",
                )
            except CommandError as e:
                raise PostprocessError(str(e)) from e


def enable_units(rootfs: Path, units: Sequence[str], default_target: str | None) -> None:
    """`systemctl enable` and `set-default` with the tree's own systemctl, offline."""
    if not units and not default_target:
        return
    if not (rootfs / "usr/bin/systemctl").exists():
        raise PostprocessError("units to enable, but the tree has no systemctl: add 'systemd'")
    try:
        if units:
            run_in_tree(rootfs, ["systemctl", "enable", *units], what="enabling units")
        if default_target:
            run_in_tree(
                rootfs,
                ["systemctl", "set-default", default_target],
                what="setting the default target",
            )
    except CommandError as e:
        raise PostprocessError(str(e)) from e


# -- per-machine state ----------------------------------------------------------------------


def drop_machine_state(rootfs: Path, *, machineid_compat: bool) -> None:
    drop_machine_files(rootfs)
    drop_var_state(rootfs)
    machine_id = rootfs / "etc/machine-id"
    _remove(machine_id)
    if machineid_compat:
        machine_id.write_bytes(b"")
        machine_id.chmod(0o444)
    resolv = rootfs / "etc/resolv.conf"
    if not resolv.is_symlink() and not resolv.exists() and (rootfs / RESOLVED).exists():
        resolv.symlink_to(RESOLVED_STUB)
    add_ssh_keygen(rootfs)


def drop_machine_files(rootfs: Path, *, etc: str = "etc") -> None:
    """Remove MACHINE_FILES; `etc` is where the tree's /etc is (usr/etc in a converted tree)."""
    for pattern in MACHINE_FILES:
        if pattern.startswith("etc/"):
            pattern = etc + pattern[3:]
        for match in glob.glob(os.path.join(glob.escape(str(rootfs)), pattern)):
            _remove(Path(match))


def drop_var_state(rootfs: Path) -> None:
    """Only the directories of DIRECTORIES_ONLY stay; EMPTIED are emptied."""
    for rel in DIRECTORIES_ONLY:
        top = rootfs / rel
        if top.is_dir() and not top.is_symlink():
            for path in reversed(list(_walk(top))):
                if path.is_symlink() or not path.is_dir():
                    path.unlink()
    for rel in EMPTIED:
        if (rootfs / rel).is_dir():
            _empty(rootfs / rel)


def add_ssh_keygen(rootfs: Path) -> None:
    """Debian's ssh.service makes no host keys; this unit does, on the machine that boots."""
    if not (rootfs / "usr/sbin/sshd").exists() or not (rootfs / "usr/bin/ssh-keygen").exists():
        return
    units = rootfs / "usr/lib/systemd/system"
    _mkdirs(units)
    unit = units / SSH_KEYGEN_UNIT
    unit.write_text(SSH_KEYGEN_TEXT)
    unit.chmod(0o644)
    for wanted_by in ("ssh.service", "ssh.socket"):
        if (units / wanted_by).exists():
            wants = units / f"{wanted_by}.wants"
            _mkdirs(wants)
            link = wants / SSH_KEYGEN_UNIT
            _remove(link)
            link.symlink_to(f"../{SSH_KEYGEN_UNIT}")


# -- package state into /usr ----------------------------------------------------------------


def move_sysimage(rootfs: Path) -> None:
    """dpkg's, debconf's and apt's state into /usr/lib/sysimage; tmpfiles links them back."""
    lines = []
    for var_path, usr_path in SYSIMAGE_MOVES:
        src, dest = rootfs / var_path, rootfs / usr_path
        if src.is_symlink():
            src.unlink()  # converted before: the link comes back from tmpfiles.d
        elif src.exists():
            _remove(dest)
            _mkdirs(dest.parent)
            os.rename(src, dest)
        if dest.exists():
            target = os.path.relpath(dest, (rootfs / var_path).parent)
            lines.append(tmpfiles_line("L", "/" + var_path, argument=target))
    write_tmpfiles(rootfs / SYSIMAGE_CONF, lines)


# -- /home, /root, /opt, /usr/local ---------------------------------------------------------


def move_homes(rootfs: Path) -> None:
    check_usr_local(rootfs)
    move_opt(rootfs)
    for top, var_path in VAR_HOMES:
        _move_into(rootfs, top, var_path)
        dest = rootfs / var_path
        if not dest.exists():
            _mkdirs(dest, 0o700 if var_path in PRIVATE_HOMES else 0o755)


def _move_into(rootfs: Path, src_rel: str, dest_rel: str) -> None:
    """Move the directory `src_rel` to `dest_rel`, merging into `dest_rel` when it exists."""
    src, dest = rootfs / src_rel, rootfs / dest_rel
    if src.is_symlink():
        src.unlink()  # converted before: make_top_level links it again
        return
    if not src.is_dir():
        return
    if not dest.exists():
        _mkdirs(dest.parent)
        os.rename(src, dest)
        return
    for child in sorted(src.iterdir()):
        if (dest / child.name).exists() or (dest / child.name).is_symlink():
            raise PostprocessError(
                f"both /{src_rel}/{child.name} and /{dest_rel}/{child.name} exist"
            )
        os.rename(child, dest / child.name)
    st = src.lstat()
    os.chown(dest, st.st_uid, st.st_gid)
    dest.chmod(stat.S_IMODE(st.st_mode))
    src.rmdir()


def move_opt(rootfs: Path) -> None:
    """/opt is the machine's (/var/opt); what packages put there moves to /usr/lib/opt."""
    opt = rootfs / "opt"
    if opt.is_symlink() or not opt.is_dir():
        return
    names = move_opt_content(rootfs, opt)
    _move_into(rootfs, "opt", "var/opt")
    for name in names:
        link = rootfs / "var/opt" / name
        link.symlink_to(f"../../{USR_OPT}/{name}")


def move_opt_content(rootfs: Path, opt: Path) -> list[str]:
    """Move what is in the folder `opt` (the tree's /opt) to /usr/lib/opt; the names moved."""
    names = sorted(p.name for p in opt.iterdir())
    if names:
        _mkdirs(rootfs / USR_OPT)
    for name in names:
        _remove(rootfs / USR_OPT / name)
        os.rename(opt / name, rootfs / USR_OPT / name)
    return names


def check_usr_local(rootfs: Path, local: Path | None = None) -> None:
    """Refuse files under /usr/local: it is the machine's own (/var/usrlocal) at runtime.

    `local` is the folder that holds the tree's /usr/local (by default rootfs/usr/local).
    """
    local = rootfs / "usr/local" if local is None else local
    if local.is_symlink() or not local.is_dir():
        return
    files = [p for p in _walk(local) if not p.is_dir() and not p.is_symlink()]
    if not files:
        return
    names = [f"/usr/local/{p.relative_to(local)}" for p in files]
    owners = package_owners(rootfs, names)
    shown = [f"{name}{owners.get(name, '')}" for name in names[:5]]
    more = f" and {len(files) - 5} more" if len(files) > 5 else ""
    raise PostprocessError(
        "an image cannot have files under /usr/local (the machine's own /var/usrlocal at "
        f"runtime): {', '.join(shown)}{more}"
    )


def package_owners(rootfs: Path, paths: Sequence[str]) -> dict[str, str]:
    """' (from package X)' for each path a dpkg file list names."""
    wanted = set(paths)
    owners: dict[str, str] = {}
    for info in ("var/lib/dpkg/info", "usr/lib/sysimage/dpkg/info"):
        for lst in sorted((rootfs / info).glob("*.list")) if (rootfs / info).is_dir() else []:
            for line in lst.read_text(errors="replace").splitlines():
                if line in wanted:
                    owners[line] = f" (from package {lst.stem.split(':')[0]})"
    return owners


# -- /var -> tmpfiles.d ---------------------------------------------------------------------


def tmpfiles_quote(path: str) -> str:
    """A path as one tmpfiles.d field: % doubled, quoted when it has spaces or quotes."""
    if "\n" in path:
        raise PostprocessError(f"a path in /var has a newline in its name: {path!r}")
    path = path.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\" for c in path):
        return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return path


def tmpfiles_line(
    kind: str,
    path: str,
    mode: str = "-",
    user: str = "-",
    group: str = "-",
    argument: str = "-",
) -> str:
    # The argument is the raw rest of the line, where only specifiers (%) are expanded.
    arg = argument if argument == "-" else argument.replace("%", "%%")
    return f"{kind} {tmpfiles_quote(path)} {mode} {user} {group} - {arg}"


def tmpfiles_fields(text: str) -> Iterator[list[str]]:
    """The lines of a tmpfiles.d fragment as their seven fields ("-" for those left out)."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            try:
                fields = shlex.split(line)
            except ValueError:
                continue
            if len(fields) >= 2:
                yield (fields + ["-"] * 7)[:7]


def _line_path(line: str) -> str | None:
    try:
        fields = shlex.split(line, comments=False)
    except ValueError:
        return None
    return fields[1] if len(fields) >= 2 and "%" not in fields[1] else None


def covered_paths(rootfs: Path, own: Iterable[Path] = ()) -> set[str]:
    """The paths that the tree's tmpfiles.d fragments (except `own`) already have a line for."""
    skip = {p.name for p in own}
    paths = set()
    for d in (TMPFILES_DIR, "etc/tmpfiles.d"):
        folder = rootfs / d
        for conf in sorted(folder.glob("*.conf")) if folder.is_dir() else []:
            if conf.name in skip:
                continue
            for line in conf.read_text(errors="replace").splitlines():
                line = line.strip()
                path = _line_path(line) if line and not line.startswith("#") else None
                if path:
                    paths.add(path)
    return paths


def write_tmpfiles(conf: Path, lines: Iterable[str]) -> None:
    """Write sorted lines, keeping an earlier run's lines for paths not written again."""
    merged = {}
    if conf.exists():
        for line in conf.read_text().splitlines():
            path = _line_path(line) if line and not line.startswith("#") else None
            if path:
                merged[path] = line
    for line in lines:
        path = _line_path(line)
        merged[path or line] = line
    _mkdirs(conf.parent)
    body = "".join(f"{merged[p]}\n" for p in sorted(merged))
    conf.write_text(CONF_HEADER + body)
    conf.chmod(0o644)


@dataclass(frozen=True)
class Accounts:
    """User and group names of the tree (tmpfiles.d lines name owners as packages do)."""

    users: Mapping[int, str]
    groups: Mapping[int, str]

    def user(self, uid: int) -> str:
        return self.users.get(uid, str(uid))

    def group(self, gid: int) -> str:
        return self.groups.get(gid, str(gid))


def _read_ids(path: Path) -> dict[int, str]:
    ids: dict[int, str] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdigit():
                ids.setdefault(int(fields[2]), fields[0])
    return ids


def read_accounts(etc: Path) -> Accounts:
    return Accounts(_read_ids(etc / "passwd"), _read_ids(etc / "group"))


def var_lines(rootfs: Path, accounts: Accounts, covered: set[str]) -> list[str]:
    """tmpfiles.d lines for /var; regular files move to the factory for their `C` lines."""
    lines: list[str] = []
    if (rootfs / "var").is_symlink() or not (rootfs / "var").is_dir():
        return lines
    for path in list(_walk(rootfs / "var")):
        name = "/" + str(path.relative_to(rootfs))
        st = path.lstat()
        if name in covered:
            continue
        owner = (accounts.user(st.st_uid), accounts.group(st.st_gid))
        if stat.S_ISDIR(st.st_mode):
            lines.append(tmpfiles_line("d", name, f"{stat.S_IMODE(st.st_mode):04o}", *owner))
        elif stat.S_ISLNK(st.st_mode):
            lines.append(tmpfiles_line("L", name, argument=os.readlink(path)))
        elif stat.S_ISREG(st.st_mode):
            _to_factory(rootfs, path)
            lines.append(tmpfiles_line("C", name))
    return lines


def _to_factory(rootfs: Path, path: Path) -> None:
    """Move a file of /var to /usr/share/factory/var, its directories' modes and owners kept."""
    rel = path.relative_to(rootfs)
    dest = rootfs / FACTORY / rel
    for parent in reversed(rel.parents[:-1]):
        made = rootfs / FACTORY / parent
        if not made.is_dir():
            _mkdirs(made.parent)
            made.mkdir()
            st = (rootfs / parent).lstat()
            os.chown(made, st.st_uid, st.st_gid)
            made.chmod(stat.S_IMODE(st.st_mode))
    _remove(dest)
    os.rename(path, dest)


def convert_var(rootfs: Path) -> None:
    own = (rootfs / SYSIMAGE_CONF, rootfs / VAR_CONF)
    covered = covered_paths(rootfs, own) | {"/" + v for v, _ in SYSIMAGE_MOVES}
    lines = var_lines(rootfs, read_accounts(rootfs / "etc"), covered)
    lines.append(tmpfiles_line("d", "/run/media", "0755", "root", "root"))
    write_tmpfiles(rootfs / VAR_CONF, lines)
    _empty(rootfs / "var")


# -- the top level --------------------------------------------------------------------------


def make_top_level(rootfs: Path) -> None:
    for rel, mode in EMPTY_DIRS:
        path = rootfs / rel
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        if path.is_dir():
            _empty(path)
        else:
            path.mkdir()
        os.chown(path, 0, 0)
        path.chmod(mode)
    for rel, target in TOP_LINKS:
        link = rootfs / rel
        if link.is_dir() and not link.is_symlink():
            if any(link.iterdir()):
                raise PostprocessError(
                    f"/{rel} must be empty in an image: it becomes a " f"symlink to /{target}"
                )
            link.rmdir()
        _remove(link)
        link.symlink_to(os.path.relpath(rootfs / target, link.parent))


def _remove_special_files(rootfs: Path, progress: Progress) -> None:
    """libostree commits only files, directories and symlinks."""
    removed = []
    for path in list(_walk(rootfs)):
        mode = path.lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            path.unlink()
            removed.append("/" + str(path.relative_to(rootfs)))
    if removed:
        progress.message(
            f"    removed {len(removed)} device nodes, fifos or sockets: " + ", ".join(removed[:5])
        )
