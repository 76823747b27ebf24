"""`execute`: run one request on a `System` and return its typed result.

The one place where a request meets the function that carries it out; the CLI's `--sysroot`
mode, apt-ostreed's read-only calls and its transaction worker all come through here, so a
verb behaves the same whichever of them runs it.
"""

from __future__ import annotations

from pathlib import Path

from apt_ostree import keys
from apt_ostree.errors import UsageError
from apt_ostree.run import run
from apt_ostree.system import live, packages, trials, updates
from apt_ostree.system.requests import (
    ApplyLive,
    AutomaticUpdate,
    BootCheck,
    Cleanup,
    DbDiff,
    DbList,
    Deploy,
    FinalizeDeployment,
    Initramfs,
    Install,
    KernelArgs,
    OverrideRemove,
    OverrideReplace,
    OverrideReset,
    Rebase,
    RefreshMd,
    Request,
    Reset,
    Rollback,
    Search,
    Status,
    Uninstall,
    Upgrade,
    UsrOverlay,
)
from apt_ostree.system.results import CachedUpdate, Outcome, Result, StatusResult
from apt_ostree.system.sysroot import System


def execute(system: System, request: Request) -> Result:
    match request:
        case Status():
            return StatusResult(
                system.status(),
                cached_update=system.cached_update(),
                policy=system.policy(),
                boot_failures=system.boot_failures(),
            )
        case Upgrade():
            return rebooted(updates.upgrade(system, request), request.reboot)
        case Deploy():
            return rebooted(updates.deploy(system, request), request.reboot)
        case Rebase():
            return rebooted(updates.rebase(system, request), request.reboot)
        case Rollback():
            return rebooted(updates.rollback(system, request), request.reboot)
        case Cleanup():
            return updates.cleanup(system, request)
        case KernelArgs():
            return rebooted(updates.kargs(system, request), request.reboot)
        case BootCheck():
            return trials.boot_check(system, request)
        case FinalizeDeployment():
            return updates.finalize_deployment(system, request)
        case AutomaticUpdate():
            return automatic_update(system, request)
        case Install():
            return install(system, request)
        case Uninstall():
            return rebooted(packages.uninstall(system, request), request.reboot)
        case OverrideRemove():
            return rebooted(packages.override_remove(system, request), request.reboot)
        case OverrideReplace():
            return rebooted(packages.override_replace(system, request), request.reboot)
        case OverrideReset():
            return rebooted(packages.override_reset(system, request), request.reboot)
        case Reset():
            return rebooted(packages.reset(system, request), request.reboot)
        case Initramfs():
            return rebooted(packages.initramfs(system, request), request.reboot)
        case RefreshMd():
            return packages.refresh_md(system, request)
        case Search():
            return packages.search(system, request)
        case DbDiff():
            return packages.db_diff(system, request)
        case DbList():
            return packages.db_list(system, request)
        case ApplyLive():
            return live.apply_live(system, request)
        case UsrOverlay():
            return live.usroverlay(system, request)
    raise UsageError(f"{request.method} cannot be run here")


def install(system: System, request: Install) -> Outcome:
    """`install`, then with --apply-live the change applied to the running system."""
    outcome = packages.install(system, request)
    if request.apply_live:
        return Outcome(outcome.changed, outcome.lines, outcome.diff, outcome.checksum,
                       outcome.version, then=live.apply_live(system, ApplyLive()))  # fmt: skip
    return rebooted(outcome, request.reboot)


def automatic_update(system: System, request: AutomaticUpdate) -> Outcome:
    """AutomaticUpdatePolicy's run: what an update brings (as `upgrade --preview`); with
    `stage`, then the upgrade itself (staged on a booted system)."""
    check = updates.upgrade(system, Upgrade(preview=True))
    update = None
    if check.changed and check.checksum is not None and check.diff is not None:
        update = CachedUpdate(check.checksum, check.version, check.diff)
    system.write_cached_update(update)
    if not request.stage or not check.changed:
        return check
    if check.checksum is not None and (blocked := trials.blocked_line(system, check.checksum)):
        return Outcome(False, (*check.lines, blocked), check.diff, check.checksum, check.version)
    staged = updates.upgrade(system, Upgrade(verify=system.config().verify_updates))
    return Outcome(check.changed, check.lines, check.diff, check.checksum, check.version,
                   then=staged)  # fmt: skip


def rebooted(outcome: Outcome, reboot: bool) -> Outcome:
    """`-r`: reboot into the new deployment (only on a machine booted from OSTree, and only
    when one was made: not for --check, --preview, --download-only or a dry run)."""
    if reboot and outcome.changed and outcome.deployed and Path(keys.BOOTED_MARKER).exists():
        run(["systemctl", "reboot"])
    return outcome
