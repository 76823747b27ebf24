"""Trial boots on a sysroot (apt_ostree/boot/trial.py has the mechanism): arming a staged
deployment, the boot-time check that blesses it or falls back, and the blocklist of updates
that failed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from apt_ostree import keys, ostree
from apt_ostree.boot import health, trial
from apt_ostree.errors import RefusedError
from apt_ostree.progress import Progress
from apt_ostree.run import run
from apt_ostree.system.requests import BootCheck
from apt_ostree.system.results import Outcome
from apt_ostree.system.sysroot import System

DEADLINE_UNIT = "apt-ostree-trial-deadline.service"
VERIFY_TIMEOUT = 300.0  # seconds for the container's boot and checks (upgrade --verify)


def refuse_blocked(system: System, base: str) -> None:
    """`upgrade` does not stage an update that failed its trial boot."""
    failure = trial.load(system.var()).blocked(base)
    if failure is not None:
        raise RefusedError(
            f"{base[:12]} (version {failure.version or '-'}) failed its trial boot: "
            f"{failure.reason}; deploy it explicitly (`apt-ostree deploy revision={base}`) to"
            " try it again"
        )


def blocked_line(system: System, base: str) -> str | None:
    failure = trial.load(system.var()).blocked(base)
    if failure is None:
        return None
    return f"Not staging {base[:12]}: it failed its trial boot ({failure.reason})"


def verify(checksum: str, progress: Progress) -> Callable[[Path], str]:
    """`upgrade --verify`'s check for `System.deploy`: the new tree, /etc merged, booted in a
    container with the required health checks; refused (nothing deployed) when they fail."""
    from apt_ostree.boot.verify import verify_tree

    def check(root: Path) -> str:
        report = verify_tree(root, timeout=VERIFY_TIMEOUT, progress=progress)
        if not report.ok:
            raise RefusedError(
                f"{checksum[:12]} failed its checks in a container: {report.reason()};"
                " nothing was deployed"
            )
        return "    the required health checks pass in a container"

    return check


def _reorder(system: System, deployment_id: str) -> None:
    deployments = system.sysroot.deployments()
    own = [d for d in deployments if not d.staged]
    if own and own[0].id != deployment_id:
        system.sysroot.write_order(trial.first(deployments, deployment_id))


def _deadline_note(var: Path) -> str:
    """What the trial's deadline wrote before it rebooted (its first line), if it did."""
    path = var / trial.DEADLINE_NOTE
    try:
        text = path.read_text().strip()
    except OSError:
        return ""
    path.unlink(missing_ok=True)
    return " ".join(text.splitlines()[:3])


def boot_check(system: System, request: BootCheck) -> Outcome:
    """apt-ostree-boot-check.service, at every boot: bless the trial deployment when the
    health checks pass, or record its failure and come back to the previous deployment."""
    path, var = system.sysroot.path, system.var()
    with system.sysroot.locked():
        state = trial.load(var)
        deployments = system.sysroot.deployments()
        verdict = trial.decide(state.trial, deployments)
        booted = next((d for d in deployments if d.booted), None)
        match verdict:
            case trial.Verdict.NONE:
                trial.disarm(path, var)
                return Outcome(False, ("No trial boot.",))
            case trial.Verdict.GONE:  # dropped before it booted: this boot had trial args
                trial.disarm(path, var)
                _stop_deadline()
                return Outcome(False, ("The deployment on trial is gone: no trial.",))
            case trial.Verdict.FELL_BACK:
                assert booted is not None and state.trial is not None
                return _fell_back(system, state, state.trial, booted)
        return _check_trial(system, state, booted, request)


def _fell_back(
    system: System, state: trial.TrialState, t: trial.Trial, booted: ostree.Deployment
) -> Outcome:
    """The trial never came back to judge itself and GRUB booted the previous entry: record
    why, as the deadline noted it if it did, and keep the booted deployment first."""
    path, var = system.sysroot.path, system.var()
    reason = _deadline_note(var) or trial.NO_BLESSING
    back_on = system.commit(booted.checksum).base_checksum
    trial.record_failure(var, state, reason, back_on=back_on)
    _reorder(system, booted.id)
    trial.disarm(path, var)
    line = f"The trial of {t.checksum[:12]} failed: {reason}"
    return Outcome(True, (line, f"{booted.checksum[:12]} stays the default."), deployed=True)


def _check_trial(
    system: System, state: trial.TrialState, booted: ostree.Deployment | None, request: BootCheck
) -> Outcome:
    assert state.trial is not None and booted is not None
    path, var, t = system.sysroot.path, system.var(), state.trial
    system.progress.message(f"Checking the trial boot of {t.checksum[:12]}")
    report = health.run_checks(Path("/"))
    for failed in report.failures(health.Kind.WANTED):
        system.progress.message(f"    {failed.line()}")
    if report.ok:
        trial.disarm(path, var)
        _stop_deadline()
        return Outcome(
            True, (f"The trial boot of {t.checksum[:12]} passed: it is the default now.",)
        )
    reason = report.reason()
    previous = next((d for d in system.sysroot.deployments() if d.id == t.previous), None)
    back_on = system.commit(previous.checksum).base_checksum if previous else None
    trial.record_failure(var, state, reason, back_on=back_on)
    if previous is not None:
        _reorder(system, previous.id)
    trial.disarm(path, var)
    _stop_deadline()
    lines = [f"The trial boot of {t.checksum[:12]} failed: {reason}"]
    if previous is None:
        lines.append(f"{t.previous} is gone: there is no deployment to come back to.")
    else:
        lines.append(f"{previous.checksum[:12]} is the default again; rebooting into it.")
        if request.reboot and Path(keys.BOOTED_MARKER).exists():
            run(["systemctl", "reboot"], check=False)
    return Outcome(True, tuple(lines), deployed=True)


def _stop_deadline() -> None:
    if Path(keys.BOOTED_MARKER).exists():
        run(["systemctl", "stop", "--no-block", DEADLINE_UNIT], check=False)
