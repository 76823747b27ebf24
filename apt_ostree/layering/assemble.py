"""A layered commit: a base commit plus a `LayerPlan`, at the cost of the layer alone.

How, and why:

1. The base is checked out with hard links into the repository's objects (`workdir/lower`,
   no file copied), and an overlayfs puts a scratch `workdir/upper` above it. Nothing ever
   writes into the lower: its files are the repository's objects, and overlayfs copies a
   file up before changing it.
2. dpkg runs in bubblewrap with the overlay as `/`, and the commit's layout (DESIGN.md
   "Trees") made to look like a Debian root: the tree's /usr/etc at /etc, a throwaway /var
   (a second overlay over a skeleton made from the base's own tmpfiles.d lines, with
   /var/lib/dpkg -> ../../usr/lib/sysimage/dpkg), tmpfs /tmp and /run, a policy-rc.d that
   denies every service start (invoke-rc.d(8)), no network, the host invisible, and only the
   capabilities dpkg and maintainer scripts use (no CAP_SYS_ADMIN, no CAP_MKNOD: a script
   cannot mount or reach a host disk). The .debs are bound read-only.
3. dpkg runs in phases, each checked before the next: `--purge` of plan.remove (with
   `--force-depends`: the resolver checked the final state, dpkg only sees the one in
   between), `--unpack` of every .deb in one call (dpkg orders them; preinst run here), then
   `--configure --pending` (postinst and triggers). `--debug=2` makes dpkg name every
   maintainer script it forks, so a failure, a timeout or damage names the package and the
   script. `--force-confdef --force-confold`: no one can answer a conffile prompt, and the
   image's own configuration is kept as unattended upgrades keep it. `--force-unsafe-io`:
   the tree is scratch until libostree commits it (and makes that durable). Before the
   first phase that installs (unpack, else configure when debconf itself comes with the
   layer), debconf-set-selections gives the sandbox's debconf the image's answers and then
   the machine's (`apt_ostree/debconf.py`), so that no question is asked and none defaults.
4. After each phase the upper is checked for damage: its deletions (overlayfs whiteouts and
   opaque directories) may only hit files of packages being removed or replaced, dpkg's own
   database, alternatives, and unowned files under /etc or in a leaving package's folders.
   A postinst that runs `rm -rf /` fails the transaction as "postinst of PKG damaged the
   tree". The script named is the last one dpkg ran in that phase.
5. The layer is translated as compose translates a tree (`compose/postprocess.py`, the same
   functions on the layer's new files): /var content into tmpfiles.d lines (a fragment of
   its own, `apt-ostree-layer-var.conf`) and /usr/share/factory/var, /opt content into
   /usr/lib/opt with links from /var/opt, per-machine files dropped, files under
   /usr/local refused, and anything outside /usr (a kernel in /boot) refused.
6. The commit is the base's tree loaded by checksum (no file of the base is read) less the
   upper's deletions, with the upper written on top, in one transaction. It moves no ref,
   its parent is None (a layered commit is derived from its base, not a successor in the
   ref's history: the base is recorded in the metadata the caller passes), and it takes the
   base's timestamp, so ordering and downgrade checks keep comparing bases.

Users and groups that scripts create land in /usr/etc/passwd and group, since that is /etc
in the sandbox. Everything under `workdir` except what the caller made is removed at the end,
and nothing stays mounted, whatever happened.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_ostree import debconf, keys, ostree
from apt_ostree.aptpkg.dpkg import auto_installed_entry, installed_packages
from apt_ostree.compose import postprocess
from apt_ostree.errors import AptOstreeError, CommandError, LayeringError
from apt_ostree.layering import LayerPlan, PlannedDeb
from apt_ostree.progress import Progress
from apt_ostree.pycache import zero_source_mtimes
from apt_ostree.run import run
from apt_ostree.sandbox import Bind, bwrap_argv, passthrough_env

log = logging.getLogger(__name__)

ADMINDIR = "/usr/lib/sysimage/dpkg"
DEBS_INSIDE = "/run/apt-ostree/debs"
ANSWERS_INSIDE = "/run/apt-ostree/debconf-selections"
POLICY_RC_D = "usr/sbin/policy-rc.d"
POLICY_RC_D_TEXT = "#!/bin/sh\n# apt-ostree: no service starts while layering\nexit 101\n"
LAYER_VAR_CONF = f"{postprocess.TMPFILES_DIR}/apt-ostree-layer-var.conf"
# What dpkg and maintainer scripts need (chown, setuid helpers, setcap, chroot, kill of
# their own children, audit lines of useradd); not SYS_ADMIN (mounts) nor MKNOD (disks).
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
)
DPKG_ENV = {"DEBCONF_NONINTERACTIVE_SEEN": "true", "APT_LISTCHANGES_FRONTEND": "none"}
# Overlayfs' own bookkeeping and bare-user's metadata xattr: never part of a commit.
XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.", "user.ostreemeta")
OPAQUE = "trusted.overlay.opaque"
# Deletions never allowed, whoever asks: the accounts of the image.
ACCOUNT_FILES = frozenset(f"usr/etc/{n}" for n in ("passwd", "group", "shadow", "gshadow"))
ALWAYS_DELETABLE = ("usr/lib/sysimage/", "usr/etc/alternatives/")
SCRIPT_NAMES = {
    ("pre", "installation"): "preinst",
    ("post", "installation"): "postinst",
    ("pre", "removal"): "prerm",
    ("post", "removal"): "postrm",
}
PHASE_SCRIPT = {"purge": "prerm", "unpack": "preinst", "configure": "postinst"}


@dataclass(frozen=True)
class AssembleOptions:
    script_timeout: float = 600.0  # seconds for the whole dpkg run; past it, fail
    debconf_answers: str = ""  # the machine's own, given after the image's


DEFAULT_OPTIONS = AssembleOptions()


def assemble(
    repo: ostree.Repo,
    base: str,
    plan: LayerPlan,
    *,
    workdir: Path,
    metadata: Mapping[str, Any],
    progress: Progress,
    options: AssembleOptions = DEFAULT_OPTIONS,
    lower: Path | None = None,
) -> str:
    """Commit `base` + `plan` into `repo` (no ref moves); return the new commit's checksum.

    `workdir` is a scratch folder on the repository's filesystem. `lower` is a tree of
    `base` to use as the overlay's read-only lower layer (never written); without it `base`
    is checked out with hardlinks into `workdir`. Any failure raises an
    AptOstreeError (LayeringError naming the package and script when dpkg failed); the
    repository then has no new commit and nothing stays mounted.
    """
    layer = _Layer(workdir, lower)
    try:
        return _assemble(repo, base, plan, layer, metadata, progress, options)
    except OSError as e:  # our own file work on the layer; tools' errors are already ours
        raise LayeringError(f"layering failed: {e}") from e
    finally:
        layer.remove()


def _assemble(
    repo: ostree.Repo,
    base: str,
    plan: LayerPlan,
    layer: _Layer,
    metadata: Mapping[str, Any],
    progress: Progress,
    options: AssembleOptions,
) -> str:
    layer.make_dirs()
    if not layer.lower.is_dir():
        with progress.step("Checking out base"):
            repo.checkout_hardlinked(base, layer.lower)
    _var_skeleton(layer.lower, layer.var_lower)
    _copy_dir_meta(layer.lower, layer.upper)
    with layer.mounted():
        _write_policy_rc_d(layer.merged)
        _run_dpkg(layer, plan, progress, options)
        _update_extended_states(layer.merged, plan)
    _clean_upper(layer)
    removals = hidden_paths(layer.upper, layer.lower)
    _strip(layer.upper)
    zero_source_mtimes(layer.upper)  # py3compile's new .pyc files, as compose leaves them
    _translate(layer)
    with progress.step("Writing the layered commit"):
        info = repo.read_commit(base)
        full = {keys.PACKAGES: _packages(layer)}
        full.update(metadata)
        checksum = repo.write_commit(
            layer.upper,
            base=base,
            remove=removals,
            subject=_subject(plan),
            metadata=full,
            timestamp=info.timestamp,
        )
    files = sum(1 for p in _walk(layer.upper) if not p.is_dir() or p.is_symlink())
    progress.message(f"    {files} files written, {len(removals)} removed: {checksum}")
    return checksum


EXTENDED_STATES = Path("usr/lib/sysimage/apt/extended_states")


def _update_extended_states(root: Path, plan: LayerPlan) -> None:
    """apt's automatic marks follow the change: the new packages that came only as
    dependencies are marked, removed packages lose their entry, the base's marks stay."""
    path = root / EXTENDED_STATES
    text = path.read_text() if path.exists() else ""
    entries: dict[tuple[str, str], str] = {}
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
        if "Package" in fields:
            entries[fields["Package"], fields.get("Architecture", "")] = block.strip() + "\n"
    removed = set(plan.remove)
    entries = {k: v for k, v in entries.items() if k[0] not in removed}
    for deb in plan.install:
        if deb.auto and (deb.name, deb.architecture) not in entries:
            entries[deb.name, deb.architecture] = auto_installed_entry(deb.name, deb.architecture)
    new = "".join(entries[k] + "\n" for k in sorted(entries))
    if new != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new)


# -- the scratch folders ----------------------------------------------------------------------


class _Layer:
    """The scratch folders under the caller's workdir: the base's checkout (lower), the
    overlay's upper, work and mount point, and the same four for the sandbox's /var."""

    NAMES = ("lower", "upper", "work", "merged", "var-lower", "var-upper", "var-work", "var")

    def __init__(self, workdir: Path, lower: Path | None = None) -> None:
        if any(c in str(p) for p in (workdir, lower or workdir) for c in ",:\\\n"):
            raise LayeringError(f"{workdir}: a layering folder cannot have ',', ':' or '\\'")
        self.workdir = workdir
        self.lower = lower or workdir / "lower"  # a given lower is never removed nor written
        self.upper = workdir / "upper"
        self.work = workdir / "work"
        self.merged = workdir / "merged"
        self.var_lower = workdir / "var-lower"
        self.var_upper = workdir / "var-upper"
        self.var_work = workdir / "var-work"
        self.var_merged = workdir / "var"

    def make_dirs(self) -> None:
        for name in self.NAMES[1:]:  # libostree makes lower, or it is given
            (self.workdir / name).mkdir()

    def remove(self) -> None:
        """Remove what we made; only hard links of the repository's objects go from lower."""
        for name in self.NAMES:
            path = self.workdir / name
            if path.is_dir() and not os.path.ismount(path):
                shutil.rmtree(path, ignore_errors=True)

    @contextmanager
    def mounted(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(_overlay(self.lower, self.upper, self.work, self.merged))
            stack.enter_context(
                _overlay(self.var_lower, self.var_upper, self.var_work, self.var_merged)
            )
            yield


@contextmanager
def _overlay(lower: Path, upper: Path, work: Path, merged: Path) -> Iterator[None]:
    """overlayfs at `merged`. No redirects nor metacopy: the upper must hold whole files and
    plain whiteouts, readable without the lower (kernel's overlayfs.rst)."""
    opts = f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off"
    run(["mount", "-t", "overlay", "overlay", "-o", opts, merged], what="mounting the overlay")
    try:
        yield
    finally:
        _unmount(merged)


def _unmount(path: Path) -> None:
    for _ in range(20):
        if run(["umount", path], check=False).returncode == 0:
            return
        time.sleep(0.25)  # the sandbox's last processes are still exiting
    # Detach it: nothing can reach the files through `path` any more.
    run(["umount", "--lazy", path], what=f"unmounting {path}")


# -- the sandbox's /var and the tree ----------------------------------------------------------


def _var_skeleton(lower: Path, var: Path) -> None:
    """/var as systemd-tmpfiles would make it at boot from the base's own lines (the `d`,
    `L` and `C` lines compose writes), so maintainer scripts find /var/lib, /var/log ..."""
    confs = (postprocess.SYSIMAGE_CONF, postprocess.VAR_CONF)
    texts = [(lower / c).read_text(errors="replace") for c in confs if (lower / c).is_file()]
    for line in (ln for text in texts for ln in postprocess.tmpfiles_fields(text)):
        kind, path, mode, user, group, _age, arg = line
        if not path.startswith("/var/") or ".." in path.split("/"):
            continue
        dest = var / path.removeprefix("/var/")
        if dest.exists() or dest.is_symlink():
            continue
        # parents as systemd-tmpfiles makes them (the sysimage links come before var.conf's
        # `d /var/cache`: without this, /var/cache/debconf was missing and debconf failed)
        if not _mkdir_parents_inside(var, dest):
            continue
        if kind == "d":
            dest.mkdir()
            dest.chmod(int(mode, 8) if mode != "-" else 0o755)
        elif kind == "L":
            dest.symlink_to(arg)
        elif kind == "C":
            source = lower / postprocess.FACTORY / path.lstrip("/")
            if source.is_file() and not source.is_symlink():
                shutil.copy2(source, dest)
    (var / "lib").mkdir(exist_ok=True)
    dpkg = var / "lib/dpkg"
    if not dpkg.is_symlink():
        shutil.rmtree(dpkg, ignore_errors=True)
        dpkg.symlink_to(os.path.relpath(ADMINDIR, "/var/lib"))


def _mkdir_parents_inside(top: Path, dest: Path) -> bool:
    """Make dest's missing parents (0755) under `top`, never through a symlink (an `L` line
    may point anywhere, the host included); False when a parent is a symlink or a file."""
    current = top
    for part in dest.relative_to(top).parts[:-1]:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            return False
        if not current.exists():
            current.mkdir(mode=0o755)
    return True


def _copy_dir_meta(source: Path, dest: Path) -> None:
    """Mode, owner and xattrs of `source` onto the folder `dest` (a folder we made in the
    upper stands for the base's: libostree takes a folder's metadata from the upper)."""
    st = source.lstat()
    os.chown(dest, st.st_uid, st.st_gid)
    dest.chmod(stat.S_IMODE(st.st_mode))
    for name in os.listxattr(source, follow_symlinks=False):
        if not name.startswith(XATTR_PREFIXES):
            os.setxattr(dest, name, os.getxattr(source, name, follow_symlinks=False))


def _write_policy_rc_d(merged: Path) -> None:
    path = merged / POLICY_RC_D
    if path.exists() or path.is_symlink():
        return  # the base has its own policy; leave it
    path.write_text(POLICY_RC_D_TEXT)
    path.chmod(0o755)


# -- dpkg ---------------------------------------------------------------------------------------


def _deb_inside(deb: PlannedDeb) -> str:
    return f"{DEBS_INSIDE}/{deb.name}_{deb.architecture}.deb"


def _run_dpkg(layer: _Layer, plan: LayerPlan, progress: Progress, options: AssembleOptions) -> None:
    deadline = time.monotonic() + options.script_timeout
    checker = _DamageCheck(layer.upper, layer.lower, plan)
    phases: list[tuple[str, str, list[str]]] = []
    if plan.remove:
        title = f"Removing {len(plan.remove)} packages"
        phases.append((title, "purge", ["--purge", "--force-depends", *plan.remove]))
    if plan.install:
        title = f"Unpacking {len(plan.install)} packages"
        phases.append((title, "unpack", ["--unpack", *map(_deb_inside, plan.install)]))
    phases.append(("Running maintainer scripts", "configure", ["--configure", "--pending"]))
    answered = False
    for title, phase, args in phases:
        if phase != "purge" and not answered:
            answered = _give_answers(layer, options.debconf_answers)
        with progress.step(title):
            status, output = _dpkg(layer, plan, args, deadline, options.script_timeout)
            checker.check(phase, output)  # damage first: a script may fail after doing it
            if status != 0:
                raise LayeringError(failure_message(output, status))


def _give_answers(layer: _Layer, machine: str) -> bool:
    """debconf-set-selections of the image's answers, then the machine's; False when the
    tree has no debconf yet (nothing there could ask)."""
    if not (layer.merged / "usr/bin/debconf-set-selections").exists():
        return False
    text = debconf.image_answers(layer.merged) + machine
    if not text:
        return True
    with tempfile.NamedTemporaryFile("w", prefix="apt-ostree-answers-") as answers:
        answers.write(text)
        answers.flush()
        argv = _sandbox_argv(
            layer,
            ["debconf-set-selections", ANSWERS_INSIDE],
            (Bind(Path(answers.name), ANSWERS_INSIDE, readonly=True),),
        )
        try:
            run(argv, what="debconf-set-selections")
        except CommandError as e:
            raise LayeringError(f"debconf's answers were refused: {e}") from e
    return True


def _sandbox_argv(layer: _Layer, command: Sequence[str], binds: Sequence[Bind]) -> list[str]:
    """bwrap for `command` on the overlay, with the tree's /usr/etc as /etc, /var, `binds`."""
    return bwrap_argv(
        layer.merged,
        command,
        binds=[Bind(layer.merged / "usr/etc", "/etc"), Bind(layer.var_merged, "/var"), *binds],
        env={**DPKG_ENV, **passthrough_env()},
        capabilities=CAPABILITIES,
    )


def _dpkg_argv(layer: _Layer, plan: LayerPlan, args: Sequence[str]) -> list[str]:
    dpkg = [
        "dpkg",
        f"--admindir={ADMINDIR}",
        "--debug=2",  # names each maintainer script it forks
        "--force-unsafe-io",
        "--force-confdef",
        "--force-confold",
        *args,
    ]
    # stdin from /dev/null (nothing may prompt), stderr into stdout (in order), and dpkg's
    # exit status as the last line, so a failure keeps all of the output
    script = '"$@" </dev/null 2>&1; echo "$1-exit-status=$?"'
    command = ["/bin/sh", "-c", script, "sh", *dpkg]
    debs = [Bind(deb.path, _deb_inside(deb), readonly=True) for deb in plan.install]
    return _sandbox_argv(layer, command, debs)


def _dpkg(
    layer: _Layer, plan: LayerPlan, args: Sequence[str], deadline: float, limit: float
) -> tuple[int, str]:
    """Run dpkg with `args` in the sandbox: its exit status and output."""
    argv = _dpkg_argv(layer, plan, args)
    remaining = max(deadline - time.monotonic(), 0.1)
    try:
        output = run(argv, timeout=remaining, what="the dpkg sandbox").stdout
    except CommandError as e:
        if not isinstance(e.__cause__, subprocess.TimeoutExpired):
            raise LayeringError(str(e)) from e
        text = _text(e.__cause__.output)
        log.debug("dpkg output (killed after %.0f s):\n%s", limit, text)
        script = last_script(text)
        who = f"{script[0]} of {script[1]}" if script else "dpkg"
        raise LayeringError(f"{who} did not finish within {limit:g} s: stopped") from e
    log.debug("dpkg output:\n%s", output)
    body, _, last = output.rstrip("\n").rpartition("\n")
    match = re.fullmatch(r"dpkg-exit-status=(\d+)", last)
    if not match:
        raise LayeringError(f"dpkg did not run: {_one_line(output)}")
    return int(match.group(1)), body


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# -- reading dpkg's output ------------------------------------------------------------------

_FORK = re.compile(r"^D0+2: fork/exec (\S+)")
_PACKAGE_LINE = re.compile(
    r"^(?:Preparing to unpack \S*/(?P<deb>[^/_ ]+)_\S*\.deb"
    r"|(?:Unpacking|Setting up|Removing|Purging configuration files for) (?P<pkg>[^ :]+))"
)
_SCRIPT_FAILED = re.compile(
    r"(?:new|old|installed|previous|old-version) (?P<pkg>[^ :]+)(?::\S+)? package "
    r"(?P<when>pre|post)-(?P<what>installation|removal) script subprocess (?P<how>.*)$"
)


def last_script(output: str) -> tuple[str, str] | None:
    """(script, package) of the last maintainer script dpkg forked, from its --debug=2 lines."""
    found: tuple[str, str] | None = None
    package = ""
    for line in output.splitlines():
        if m := _PACKAGE_LINE.match(line):
            package = m.group("deb") or m.group("pkg")
        elif m := _FORK.match(line):
            name = Path(m.group(1)).name
            pkg, dot, script = name.rpartition(".")
            found = (script, pkg.split(":")[0]) if dot else (name, package)
    return found


def failure_message(output: str, status: int) -> str:
    """One line: the package and script that failed (dpkg's own words), or dpkg's error."""
    for line in output.splitlines():
        if m := _SCRIPT_FAILED.search(line.strip()):
            script = SCRIPT_NAMES[(m.group("when"), m.group("what"))]
            how = m.group("how").removeprefix("returned error ").removeprefix("was ")
            return f"{script} of {m.group('pkg')} failed: {how}"
    errors = [line for line in output.splitlines() if line.startswith("dpkg: error")]
    if errors:
        index = output.splitlines().index(errors[0])
        detail = output.splitlines()[index + 1 : index + 2]
        return " ".join([errors[0], *(d.strip() for d in detail)])
    return f"dpkg failed (exit status {status}): {_one_line(output)}"


# -- what the upper deletes ---------------------------------------------------------------------


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _walk(top: Path) -> Iterator[Path]:
    """Everything under `top`, never following symlinks."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            yield Path(dirpath, name)


def hidden_paths(upper: Path, lower: Path) -> list[str]:
    """The paths of the lower (relative, top-most first) whose entry the upper takes away:
    whiteouts, opaque folders, and a folder replaced by a file or a file by a folder. The
    commit drops each from the base before the upper is written on top."""
    found: list[str] = []

    def visit(rel_dir: str) -> None:
        with os.scandir(upper / rel_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            low = lower / rel
            if not os.path.lexists(low):
                continue  # new in the layer
            low_dir = low.is_dir() and not low.is_symlink()
            st = entry.stat(follow_symlinks=False)
            if _is_whiteout(st):
                found.append(rel)
            elif stat.S_ISDIR(st.st_mode):
                if not low_dir or _opaque(Path(entry.path)):
                    found.append(rel)
                else:
                    visit(rel)
            elif low_dir:
                found.append(rel)

    visit("")
    return found


class _DamageCheck:
    """Deletions a layer may make: files of the packages that leave (removed, or replaced by
    another version), dpkg's database and alternatives, and files no package owns that were
    generated in /etc or in a leaving package's folders. Anything else is damage."""

    def __init__(self, upper: Path, lower: Path, plan: LayerPlan) -> None:
        self.upper, self.lower = upper, lower
        self.leaving = set(plan.remove) | {deb.name for deb in plan.install}
        self.judged: set[str] = set()
        self._owners: dict[str, set[str]] | None = None

    def check(self, phase: str, output: str) -> None:
        hidden = [h for h in hidden_paths(self.upper, self.lower) if h not in self.judged]
        self.judged.update(hidden)
        bad = sorted(p for h in hidden for p in self._gone(h) if not self._allowed(p))
        if not bad:
            return
        script = last_script(output)
        who = f"{script[0]} of {script[1]}" if script else f"dpkg --{phase}"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise LayeringError(f"{who} damaged the tree: removed /{bad[0]}{more}")

    def _gone(self, rel: str) -> Iterator[str]:
        """`rel` and what is under it in the lower, less what the upper still has."""
        low = self.lower / rel
        paths = [low]
        if low.is_dir() and not low.is_symlink():
            paths += list(_walk(low))
        for path in paths:
            sub = str(path.relative_to(self.lower))
            up = self.upper / sub
            if not os.path.lexists(up) or _is_whiteout(up.lstat()):
                yield sub

    def _allowed(self, rel: str) -> bool:
        if rel.startswith(ALWAYS_DELETABLE):
            return True
        if rel in ACCOUNT_FILES:
            return False
        owners = self.owners().get(rel)
        if owners:
            return owners <= self.leaving
        low = self.lower / rel
        if low.is_symlink() and "/etc/alternatives/" in os.readlink(low):
            return True
        parent = self.owners().get(rel.rpartition("/")[0], set())
        return bool(parent & self.leaving) or rel.startswith("usr/etc/")

    def owners(self) -> dict[str, set[str]]:
        if self._owners is None:
            self._owners = file_owners(self.lower)
        return self._owners


def file_owners(tree: Path) -> dict[str, set[str]]:
    """Tree path (relative: usr/etc/..., usr/bin/...) -> the packages whose file list has it."""
    links = {}
    for entry in tree.iterdir():
        target = os.readlink(entry) if entry.is_symlink() else ""
        if target.startswith("usr/") and ".." not in target:
            links[entry.name] = target
    owners: dict[str, set[str]] = {}
    info = tree / ADMINDIR.lstrip("/") / "info"
    for lst in sorted(info.glob("*.list")) if info.is_dir() else []:
        package = lst.stem.split(":")[0]
        for line in lst.read_text(errors="replace").splitlines():
            first, _, rest = line.lstrip("/").partition("/")
            top = "usr/etc" if first == "etc" else links.get(first, first)
            if top and top != ".":
                owners.setdefault(f"{top}/{rest}" if rest else top, set()).add(package)
    return owners


# -- the layer, ready to commit ---------------------------------------------------------------


def _strip(top: Path) -> None:
    """Whiteouts out, overlayfs' xattrs off: `top` becomes a plain tree."""
    for path in [*_walk(top), top]:
        if _is_whiteout(path.lstat()):
            path.unlink()
            continue
        for name in os.listxattr(path, follow_symlinks=False):
            if name.startswith(XATTR_PREFIXES):
                os.removexattr(path, name, follow_symlinks=False)


def _clean_upper(layer: _Layer) -> None:
    """The sandbox's own traces out of the upper: the /etc mount point, our policy-rc.d."""
    etc = layer.upper / "etc"
    if etc.is_dir() and not etc.is_symlink():
        shutil.rmtree(etc)
    policy = layer.upper / POLICY_RC_D
    if policy.is_file() and not policy.is_symlink() and policy.read_text() == POLICY_RC_D_TEXT:
        policy.unlink()
    var = layer.upper / "var"
    if var.is_dir() and not var.is_symlink() and not any(var.iterdir()):
        var.rmdir()  # the /var mount point, copied up


def ensure_dir(upper: Path, lower: Path, rel: str) -> None:
    """Make the folders of `rel` that the lower has in the upper, with the lower's metadata."""
    path = Path()
    for part in Path(rel).parts:
        path /= part
        low = lower / path
        if not low.is_dir() or low.is_symlink():
            return
        if not (upper / path).is_dir():
            (upper / path).mkdir()
            _copy_dir_meta(low, upper / path)


def _accounts(upper: Path, lower: Path) -> postprocess.Accounts:
    base = postprocess.read_accounts(lower / "usr/etc")
    new = postprocess.read_accounts(upper / "usr/etc")
    return postprocess.Accounts({**base.users, **new.users}, {**base.groups, **new.groups})


def _outside(upper: Path) -> None:
    """Only /usr (with /etc in it) and /var may change: /boot, /sys ... are refused."""
    for top in sorted(upper.iterdir()):
        if top.name in ("usr", "var"):
            continue
        if top.is_dir() and not top.is_symlink():
            files = [p for p in _walk(top) if not p.is_dir() or p.is_symlink()]
            if not files:
                shutil.rmtree(top)  # a folder copied up, nothing in it
                continue
        else:
            files = [top]
        names = ["/" + str(p.relative_to(upper)) for p in files]
        owners = postprocess.package_owners(upper, names)
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise LayeringError(
            "cannot layer files outside /usr, /etc, /var and /opt: "
            f"{names[0]}{owners.get(names[0], '')}{more}"
        )


def _translate(layer: _Layer) -> None:
    _strip(layer.var_upper)
    translate(layer.upper, layer.lower, layer.var_upper)


def translate(upper: Path, lower: Path, var: Path, conf: str = LAYER_VAR_CONF) -> None:
    """A layer `upper` on the tree `lower` in the commit's layout, with compose's own steps
    (postprocess.py): `var`, the layer's /var, becomes tmpfiles.d lines (in the fragment
    `conf`) and factory files; files outside /usr and /var are refused (LayeringError)."""
    os.rename(var, upper / "var")
    _outside(upper)
    try:
        postprocess.check_usr_local(upper, upper / "var/usrlocal")
    except AptOstreeError as e:
        raise LayeringError(f"cannot layer: {e}") from e
    opt = upper / "var/opt"
    if opt.is_dir() and not opt.is_symlink() and any(opt.iterdir()):
        ensure_dir(upper, lower, postprocess.USR_OPT)
        for name in postprocess.move_opt_content(upper, opt):
            (opt / name).symlink_to(f"../../{postprocess.USR_OPT}/{name}")
    postprocess.drop_machine_files(upper, etc="usr/etc")
    postprocess.drop_var_state(upper)
    ensure_dir(upper, lower, f"{postprocess.FACTORY}/var")
    ensure_dir(upper, lower, postprocess.TMPFILES_DIR)
    own = upper / conf
    covered = postprocess.covered_paths(lower) | postprocess.covered_paths(upper, (own,))
    covered |= {"/" + v for v, _ in postprocess.SYSIMAGE_MOVES}
    lines = postprocess.var_lines(upper, _accounts(upper, lower), covered)
    if lines:
        postprocess.write_tmpfiles(own, lines)
    shutil.rmtree(upper / "var")


def _packages(layer: _Layer) -> list[tuple[str, str, str]]:
    rel = ADMINDIR.lstrip("/") + "/status"
    status = layer.upper / rel if (layer.upper / rel).exists() else layer.lower / rel
    return installed_packages(status)


def _subject(plan: LayerPlan) -> str:
    changes = [f"+{d.name}" for d in plan.install] + [f"-{n}" for n in plan.remove]
    text = " ".join(changes)
    return f"apt-ostree layer: {text if len(text) < 200 else text[:197] + '...'}"
