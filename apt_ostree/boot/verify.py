"""`upgrade --verify`: boot a new deployment's tree in a container and run its health checks
there, before the deployment is finalized.

The tree boots under `systemd-nspawn --boot` (userspace only: no kernel, no initramfs, no
bootloader) with the whole root behind an overlay whose upper layer is a tmpfs
(`--volatile=overlay`): libostree makes deployment roots immutable (`chattr +i`) and their
files are hard links into the repository, so nothing may be written into the tree. /var is a
tmpfs of its own, as the deployment's /var is empty in the commit.

One unit is injected without touching the tree: a read-only bind of our folder over
/run/systemd/system (the runtime unit path of systemd(1), read by systemd 252 and 257 alike)
holding the unit and its `.wants` links. The unit is pulled in by multi-user.target and
ordered after it, and also by emergency.target and rescue.target so that a boot that fails
before multi-user.target (a bad mount, a failed sysinit unit) reports instead of waiting at a
sulogin prompt until the time runs out. It writes into a bind-mounted folder:

    target        `systemctl is-active multi-user.target`
    failed        `systemctl list-units --state=failed`
    health.json   `python3 -m apt_ostree.boot.health --json` of the tree's own apt-ostree
    health.err    that runner's stderr, and `status` its exit code

and powers the container off (`SuccessAction=`/`FailureAction=poweroff-force`: how the
tree shuts down is not what is checked). The results become a HealthReport: the tree's own
checks, a required `boot` result (multi-user.target was reached and the runner answered) and
a wanted `failed-units` result (units that failed during the boot, reported only).

What a container cannot show: the kernel, the initramfs and its modules, the bootloader
entries, and fstab entries of block devices (systemd-fstab-generator ignores those in a
container).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from apt_ostree.boot.health import CheckResult, HealthReport, Kind, report_from_wire
from apt_ostree.errors import CommandError, StateError
from apt_ostree.progress import Progress
from apt_ostree.run import command_env

log = logging.getLogger(__name__)

NSPAWN = "systemd-nspawn"
UNIT = "apt-ostree-verify.service"
# the unit's targets: where a good boot ends, and where a failed one goes
WANTED_BY = ("multi-user.target", "emergency.target", "rescue.target")
IO_DIR = "/run/apt-ostree-verify"  # in the container: the script and what it writes
UNIT_DIR = "/run/systemd/system"  # in the container: systemd's runtime unit folder
BOOT_CHECK = "boot"
FAILED_UNITS_CHECK = "failed-units"
STOP_SECONDS = 10.0  # after the time is up: for nspawn to kill the container and clean up
POLL_SECONDS = 0.2

UNIT_TEXT = f"""\
# apt-ostree upgrade --verify: run the health checks once the boot is over, then power off
[Unit]
Description=apt-ostree health checks of a new deployment
DefaultDependencies=no
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh {IO_DIR}/check
StandardOutput=journal+console
"""

CHECK_SCRIPT = """\
cd "$(dirname "$0")" || exit 1
systemctl is-active multi-user.target > target
systemctl list-units --state=failed --plain --no-legend --full > failed
python3 -m apt_ostree.boot.health --json > health.json 2> health.err
echo $? > status
"""


def nspawn_argv(root: Path, units: Path, io: Path, *, machine: str, keep_unit: bool) -> list[str]:
    """systemd-nspawn's command line: boot `root` behind a tmpfs overlay, our unit folder and
    result folder bound in, no network, nothing written to the host's /var/log/journal,
    /etc/resolv.conf or /etc/localtime of the tree."""
    argv = [
        NSPAWN,
        "--quiet",
        "--boot",
        f"--directory={root}",
        f"--machine={machine}",
        "--register=no",  # no systemd-machined needed (nor wanted: nothing to log in to)
        "--volatile=overlay",
        "--tmpfs=/var",
        "--private-network",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--console=read-only",
        f"--bind-ro={units}:{UNIT_DIR}",
        f"--bind={io}:{IO_DIR}",
    ]
    if keep_unit:
        # no systemd as PID 1 on the host to make a scope unit for the container: stay in ours
        argv.append("--keep-unit")
    # arguments after the directory go to the container's systemd: show the boot's steps
    return [*argv, "systemd.show_status=1"]


def host_runs_systemd() -> bool:
    """sd_booted(3): the host's PID 1 is systemd (nspawn can ask it for a scope)."""
    return Path("/run/systemd/system").is_dir()


def check_tree(root: Path) -> None:
    """Refuse, with one line, a root that cannot be booted this way."""
    if shutil.which(NSPAWN, path=command_env()["PATH"]) is None:
        raise CommandError(f"{NSPAWN} is not installed (Debian package systemd-container)")
    if not root.is_dir():
        raise StateError(f"{root} is not a folder: nothing to verify")
    if not (root / "usr/lib/systemd/systemd").exists():
        raise StateError(f"{root} has no usr/lib/systemd/systemd: the tree cannot be booted")
    if not (root / "etc").is_dir():
        # a plain checkout keeps the image's /etc in usr/etc; a deployment has the merged one
        raise StateError(f"{root} has no etc: verify a deployment's root (with its merged /etc)")


def write_injection(scratch: Path) -> tuple[Path, Path]:
    """Our unit folder (bound over /run/systemd/system) and the result folder."""
    units, io = scratch / "units", scratch / "io"
    units.mkdir()
    io.mkdir()
    (units / UNIT).write_text(UNIT_TEXT)
    for target in WANTED_BY:
        (units / f"{target}.wants").mkdir()
        (units / f"{target}.wants" / UNIT).symlink_to(f"../{UNIT}")
    (io / "check").write_text(CHECK_SCRIPT)
    return units, io


@dataclass(frozen=True)
class Boot:
    """How the container's run ended."""

    returncode: int | None  # None: stopped because the time was up
    seconds: float  # from the start to the end of the container
    booted_after: float | None  # seconds until the checks started (None: they never did)
    console: str  # the last line the container printed


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop nspawn and its container. A second SIGTERM is nspawn's "terminate now" (it kills
    the container and cleans up). A SIGKILL of nspawn alone would leave the container
    running, orphaned: its init (nspawn's child) is killed first, which ends its PID
    namespace."""
    if proc.poll() is not None:
        return
    proc.terminate()
    time.sleep(0.5)
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=STOP_SECONDS)
        return
    except subprocess.TimeoutExpired:
        pass
    for child in _children(proc.pid):
        log.warning("killing the container's init (PID %d)", child)
        os.kill(child, signal.SIGKILL)
    proc.kill()
    proc.wait()


def _last_line(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _plain(lines[-1]) if lines else ""


def _plain(text: str) -> str:
    """Without the terminal's colour sequences that systemd's status lines carry."""
    return re.sub(r"\x1b\[[0-9;:]*[A-Za-z]|\x1b\][^\x07]*\x07", "", text).strip()


def boot(argv: list[str], io: Path, console: Path, *, timeout: float, progress: Progress) -> Boot:
    """Run nspawn with the container's console into `console`; stop it when `timeout` is up."""
    log.debug("running: %s", " ".join(argv))
    start = time.monotonic()
    booted_after = None
    with console.open("wb") as out:
        try:
            # not apt_ostree.run's wrappers: this one has a deadline, its output goes to a
            # file, and stopping it takes nspawn's two SIGTERMs (see `stop`)
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=command_env(),
            )  # fmt: skip
        except FileNotFoundError as e:
            raise CommandError(f"{NSPAWN} is not installed") from e
        try:
            while proc.poll() is None and time.monotonic() - start < timeout:
                if booted_after is None and (io / "target").exists():
                    booted_after = time.monotonic() - start
                    progress.message(
                        f"running the health checks ({booted_after:.1f} s after the start)"
                    )
                time.sleep(POLL_SECONDS)
            timed_out = proc.poll() is None
            last = _last_line(console)  # before the shutdown's lines
        finally:  # the time is up, or we are stopped (SIGTERM, Ctrl-C)
            stop(proc)
    seconds = time.monotonic() - start
    if booted_after is None and (io / "target").exists():
        booted_after = seconds
    returncode = None if timed_out else proc.returncode
    return Boot(returncode, seconds, booted_after, last if timed_out else _last_line(console))


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return ""


def _failed_units(io: Path) -> list[str]:
    return [line.split()[0] for line in _read(io / "failed").splitlines() if line.split()]


def _boot_failure(text: str) -> HealthReport:
    return HealthReport((CheckResult(BOOT_CHECK, Kind.REQUIRED, False, text),))


def read_report(io: Path, run: Boot, *, timeout: float) -> HealthReport:
    """The HealthReport of a finished (or stopped) container from what the unit wrote."""
    if run.returncode is None:  # what the unit wrote while the container was stopped is moot
        seen = f" (last console line: {run.console})" if run.console else ""
        return _boot_failure(f"the boot and checks did not finish within {timeout:.0f} s{seen}")
    target = _read(io / "target")
    if not target:
        if run.returncode != 0:
            raise CommandError(
                f"{NSPAWN} failed (exit {run.returncode}) before the checks ran: {run.console}"
            )
        return _boot_failure(f"the container stopped before the checks ran: {run.console}")
    failed = _failed_units(io)
    units = CheckResult(
        FAILED_UNITS_CHECK, Kind.WANTED, not failed, ", ".join(f"{u} failed" for u in failed)
    )
    if target != "active":
        return _boot_failure(
            f"the boot did not reach multi-user.target (it is {target}; failed units: "
            f"{', '.join(failed) or 'none'})"
        )
    try:
        rows = json.loads(_read(io / "health.json"))
    except json.JSONDecodeError:  # no apt-ostree (or python3) in the tree: it cannot bless a boot
        err = _read(io / "health.err").splitlines()[-1:] or [f"exit status {_read(io / 'status')}"]
        runner = CheckResult(
            BOOT_CHECK, Kind.REQUIRED, False, f"the health runner failed: {err[0]}"
        )
        return HealthReport((runner, units))
    booted = CheckResult(
        BOOT_CHECK, Kind.REQUIRED, True, f"booted in {run.booted_after or run.seconds:.1f} s"
    )
    return HealthReport((booted, *report_from_wire(rows).results, units))


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="apt-ostree-verify-") as folder:
        yield Path(folder)


def verify_tree(root: Path, *, timeout: float, progress: Progress) -> HealthReport:
    """Boot `root` (a deployment's root, never written to) in a container, run its health
    checks after multi-user.target, and return their report; a boot that does not get there
    within `timeout` seconds is a failed report. Raises when the tool itself cannot run."""
    check_tree(root)
    with progress.step(f"Verifying {root} in a container"), _scratch() as scratch:
        units, io = write_injection(scratch)
        machine = f"apt-ostree-verify-{secrets.token_hex(4)}"
        argv = nspawn_argv(root, units, io, machine=machine, keep_unit=not host_runs_systemd())
        progress.message(f"booting the tree with {NSPAWN} (userspace only)")
        run = boot(argv, io, scratch / "console.log", timeout=timeout, progress=progress)
        log.debug("container console:\n%s", _read(scratch / "console.log"))
        report = read_report(io, run, timeout=timeout)
        required = [r for r in report.results if r.kind is Kind.REQUIRED]
        progress.message(
            f"result: {report.reason()}"
            if not report.ok
            else f"result: all {len(required)} required checks passed ({run.seconds:.1f} s)"
        )
    return report
