"""Trial boots: a new deployment boots once on probation, and becomes the default only when
the boot is judged good; otherwise the machine comes back to the previous deployment by
itself (docs/boot.md).

The pieces, on a machine whose sysroot uses libostree's grub2 backend with apt-ostree's
generator (images made with `compose image --bootloader grub-efi`):

- arming (`arm`, after a deployment is staged): GRUB's env block gets
  `aptostree_trial=pending` and the trial's kernel arguments; /var/lib/apt-ostree/boot-trial.json
  records which deployment is on trial and which one was booted. libostree finalizes the
  staged deployment at shutdown as its new default (entry 0); the previous one is entry 1.
- GRUB (apt_ostree/boot/grubcfg.py) boots entry 0 once, saving `booting` before it does;
  seeing `booting` at the next start means the trial never came back, so it boots entry 1.
- `boot_check`, run by apt-ostree-boot-check.service at every boot once multi-user.target
  and boot-complete.target are reached: in the trial deployment it runs the health checks
  (apt_ostree/boot/health.py) and blesses the trial (clears the env block: entry 0 stays the
  default) or records the failure, puts the previous deployment first and reboots; in any
  other deployment it records a trial that did not come back (a hang, a panic, a watchdog
  reset, a reboot by the trial's deadline) and puts the booted deployment first.
- A trial boot that does not finish in time is rebooted by apt-ostree-trial-deadline.service
  (the kernel argument `aptostree.trial=SECONDS`); kernel panics reboot (`panic=`), dracut's
  emergency shell reboots (`rd.emergency=reboot`), a hung kernel is reset by a hardware
  watchdog that systemd arms (`systemd.watchdog_sec=`).

Failed updates are remembered by their base commit: `upgrade` and automatic updates do not
stage one again (`blocked`); an explicit `deploy` of it clears the entry (`unblock`).
"""

from __future__ import annotations

import configparser
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from apt_ostree import ostree
from apt_ostree.boot import grubcfg, grubenv
from apt_ostree.boot.health import HealthReport
from apt_ostree.errors import StateError

# in the stateroot's /var: the armed trial alone (apt-ostree-boot-check.service runs only
# while it exists), and the failures kept for status and the blocklist
TRIAL_FILE = "lib/apt-ostree/boot-trial.json"
FAILURES_FILE = "lib/apt-ostree/boot-failures.json"
DEADLINE_NOTE = "lib/apt-ostree/trial-deadline"  # written by the deadline before it reboots
GRUBENV = "boot" + grubcfg.GRUBENV  # in the sysroot
DEFAULT_TIMEOUT = 600  # seconds for a trial boot to bless itself
KEPT_FAILURES = 20
NO_BLESSING = (
    "its trial boot did not come back to bless itself (a hang, a panic, a watchdog reset or"
    " the trial's deadline)"
)


def trial_kargs(timeout: int) -> str:
    """The kernel arguments GRUB adds to a trial boot."""
    # dracut waits for the root device forever by default: rd.timeout bounds that wait (a
    # kernel or initramfs without the root filesystem's driver), rd.emergency=reboot turns
    # its emergency shell into a reboot; panic= reboots a panicked kernel; systemd arms the
    # hardware watchdog (RuntimeWatchdogSec) for a hung kernel or PID 1
    return (
        f"aptostree.trial={timeout} panic=10 rd.timeout=120 rd.emergency=reboot rd.shell=0"
        " systemd.watchdog_sec=60"
    )


@dataclass(frozen=True)
class Trial:
    deployment: str  # ostree.Deployment.id of the deployment on trial
    checksum: str
    base_checksum: str
    version: str | None
    previous: str  # the id of the deployment booted when it was armed
    armed: int  # seconds since the epoch


@dataclass(frozen=True)
class Failure:
    deployment: str  # ostree.Deployment.id of the deployment whose trial failed
    checksum: str
    base_checksum: str  # the update that failed: what the blocklist holds
    version: str | None
    reason: str
    time: int
    # False when the machine came back to a deployment of the same base (a kernel argument
    # or layering change failed): that base boots, so it is not blocked
    blocked: bool = True


@dataclass(frozen=True)
class TrialState:
    trial: Trial | None = None
    failures: tuple[Failure, ...] = ()

    def blocked(self, base_checksum: str) -> Failure | None:
        return next(
            (f for f in reversed(self.blocklist()) if f.base_checksum == base_checksum), None
        )

    def blocklist(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.blocked)

    def failure_of(self, deployment_id: str) -> Failure | None:
        return next((f for f in reversed(self.failures) if f.deployment == deployment_id), None)


def enabled(sysroot: Path) -> bool:
    """Whether the sysroot boots through apt-ostree's GRUB config (grub2 backend, grubenv)."""
    config = configparser.ConfigParser(interpolation=None)
    try:
        config.read_string((sysroot / "ostree/repo/config").read_text())
    except (OSError, configparser.Error):
        return False
    bootloader = config.get("sysroot", "bootloader", fallback="auto")
    return bootloader == "grub2" and (sysroot / GRUBENV).is_file()


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StateError(f"{path}: {e}") from e


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def load(var: Path) -> TrialState:
    t, failures = _read(var / TRIAL_FILE), _read(var / FAILURES_FILE) or []
    try:
        return TrialState(Trial(**t) if t else None, tuple(Failure(**f) for f in failures))
    except TypeError as e:
        raise StateError(f"{var / FAILURES_FILE}: {e}") from e


def save(var: Path, state: TrialState) -> None:
    if state.trial is None:
        (var / TRIAL_FILE).unlink(missing_ok=True)
    else:
        _write(var / TRIAL_FILE, asdict(state.trial))
    _write(var / FAILURES_FILE, [asdict(f) for f in state.failures])


def set_env(sysroot: Path, *, pending: bool, timeout: int = DEFAULT_TIMEOUT) -> None:
    grubenv.update(
        sysroot / GRUBENV,
        **{
            grubcfg.TRIAL_VAR: grubcfg.PENDING if pending else "",
            grubcfg.TRIAL_ARGS_VAR: trial_kargs(timeout) if pending else "",
        },
    )


def env_state(sysroot: Path) -> str:
    return grubenv.read(sysroot / GRUBENV).get(grubcfg.TRIAL_VAR, "")


def arm(sysroot: Path, var: Path, trial: Trial, timeout: int) -> None:
    """Put the staged deployment `trial` on trial at the next boot."""
    save(var, replace(load(var), trial=trial))
    set_env(sysroot, pending=True, timeout=timeout)


def disarm(sysroot: Path, var: Path) -> None:
    """No trial (a rollback, or the staged deployment is gone)."""
    state = load(var)
    if state.trial is not None:
        save(var, replace(state, trial=None))
    if enabled(sysroot) and env_state(sysroot):
        set_env(sysroot, pending=False)


def unblock(var: Path, base_checksum: str) -> bool:
    """Forget the failures of `base_checksum` (an explicit deploy of it); whether any were."""
    state = load(var)
    kept = tuple(f for f in state.failures if f.base_checksum != base_checksum)
    if kept != state.failures:
        save(var, replace(state, failures=kept))
    return kept != state.failures


def record_failure(
    var: Path, state: TrialState, reason: str, *, back_on: str | None = None
) -> TrialState:
    """Record the failure of the trial; `back_on` is the base commit the machine runs again."""
    assert state.trial is not None
    t = state.trial
    failure = Failure(
        t.deployment, t.checksum, t.base_checksum, t.version, reason, int(time.time()),
        blocked=back_on != t.base_checksum,
    )  # fmt: skip
    new = TrialState(None, (*state.failures, failure)[-KEPT_FAILURES:])
    save(var, new)
    return new


# ---- the decision at boot ----


class Verdict(StrEnum):
    NONE = "none"  # no trial
    CHECK = "check"  # booted into the trial: run the health checks
    FELL_BACK = "fell-back"  # the trial did not come back: record, keep the booted one first
    GONE = "gone"  # the deployment on trial is not there any more (dropped before it booted)


def decide(trial: Trial | None, deployments: Sequence[ostree.Deployment]) -> Verdict:
    """What a boot finds, from the recorded trial and the deployment list (boot order)."""
    if trial is None:
        return Verdict.NONE
    ids = [d.id for d in deployments if not d.staged]
    booted = next((d.id for d in deployments if d.booted), None)
    if trial.deployment not in ids:
        return Verdict.GONE
    if booted == trial.deployment:
        return Verdict.CHECK
    return Verdict.FELL_BACK


@dataclass(frozen=True)
class BootCheck:
    """What boot_check did: lines for the journal, and whether to reboot now."""

    verdict: Verdict
    lines: tuple[str, ...]
    reboot: bool = False
    report: HealthReport | None = None


def first(deployments: Sequence[ostree.Deployment], deployment_id: str) -> list[ostree.Deployment]:
    """`deployments` (not staged) with `deployment_id` moved to the front."""
    own = [d for d in deployments if not d.staged]
    found = [d for d in own if d.id == deployment_id]
    return found + [d for d in own if d.id != deployment_id]
