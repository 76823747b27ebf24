"""Trial boots on real boots (issue 15's scenarios 1-3): the minimal example with apt-ostree
inside, as a `--bootloader grub-efi` image (Debian's shim and GRUB, the config libostree's
grub2 backend writes with apt-ostree's generator), under OVMF with qemu's i6300esb watchdog.

One guest session, seven boots:
1. the image; a required health check that fails while the update's marker file is there;
   `upgrade` stages the update as a trial;
2. the trial: the check fails, apt-ostree-boot-check records it and reboots by itself;
3. the previous deployment again, with nobody's help; `status` names the failure, the
   automatic update (policy `stage`) does not stage it again, `upgrade` refuses it; the check
   is fixed and an explicit `deploy` of the update tries it again;
4. the trial passes and is blessed; 5. after a plain reboot it is still booted;
6. a kernel argument that makes a unit block the boot is staged: the trial hangs, and its
   deadline reboots it; 7. the blessed deployment again, `status` says why.

The test agent's unit is ordered after apt-ostree-boot-check.service (tests/support/vm.py), so
`@@READY@@` means the boot was judged; a boot that reboots by itself never says it."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from apt_ostree import ostree
from apt_ostree.compose import image
from apt_ostree.progress import Progress
from tests.support import vm
from tests.support.httpd import serve_directory
from tests.vm.conftest import ComposedRepo, serve_next

pytestmark = [pytest.mark.vm, pytest.mark.network, pytest.mark.slow]

BOOT_TIMEOUT = 600
HEALTH_CHECK = """#!/bin/sh
# fails on the update (it has the marker) until the administrator allows it
if [ -e /usr/share/apt-ostree-test/marker ] && [ ! -e /etc/apt-ostree-test-allow ]; then
    echo "the app does not start"
    exit 1
fi
"""
HANG_UNIT = """[Unit]
Description=a unit that blocks the boot (apt-ostree's trial test)
ConditionKernelCommandLine=apt_ostree_test_hang
Before=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""
ETC_FILES = {
    **vm.GUEST_ETC_FILES,
    "apt-ostree/health.d/required.d/50-app": HEALTH_CHECK.encode(),
    "systemd/system/apt-ostree-test-hang.service": HANG_UNIT.encode(),
}


def _put(guest: vm.VM, path: str, text: str, mode: str = "644") -> None:
    guest.check(
        f"mkdir -p $(dirname {path}) && printf '%b' '{text}' > {path} && chmod {mode} {path}"
    )


def _status(guest: vm.VM) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(guest.check("apt-ostree status --json"))
    return status


def _booted(guest: vm.VM) -> dict[str, Any]:
    return next(d for d in _status(guest)["deployments"] if d["booted"])


def _grubenv(guest: vm.VM) -> dict[str, str]:
    text = guest.check("cat /boot/grub/grubenv")
    pairs = [line.split("=", 1) for line in text.splitlines() if not line.startswith("#")]
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def reboot_through_a_failed_trial(
    guest: vm.VM, timeout: float = BOOT_TIMEOUT
) -> tuple[float, float]:
    """Reboot into a trial that reboots by itself (checks failed, or its deadline passed);
    wait for the boot after it. Seconds from the reboot command, and from the trial's own
    reset, to READY. Each reset ends qemu (`-no-reboot`), restarted on the same disk and
    variable store, as `VM.reboot` does."""
    guest.check("systemd-run --on-active=1 --timer-property=AccuracySec=10ms systemctl reboot")
    start = time.monotonic()
    for what in ("the reboot into the trial", "the trial's own reboot"):
        if not guest._wait_exit(timeout):
            raise vm.GuestError(f"no reset after {what}:\n{guest.console_tail()}")
        reset = time.monotonic()
        guest.stop()
        guest.start()
    guest.wait_ready(timeout)
    return time.monotonic() - start, time.monotonic() - reset


def _check_secure_boot(guest: vm.VM) -> None:
    """Enforced: the firmware's SecureBoot variable (its last byte) and the kernel's log."""
    state = guest.check("od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-*").split()
    assert state[-1] == "1", state
    assert "Secure boot enabled" in guest.check("journalctl -k -b -q | grep -i 'secure boot'")


def _verify_refuses_a_masked_unit(guest: vm.VM) -> None:
    """Scenario 5: `upgrade --verify` boots the update in a container before any reboot; with
    a required unit masked in /etc (merged into the update), it refuses, and nothing is
    staged. The running system is not affected (no daemon-reload)."""
    guest.check("echo dbus.service > /etc/apt-ostree/required-units")
    guest.check("ln -s /dev/null /etc/systemd/system/dbus.service")
    before = guest.check("ostree admin status")
    refused = guest.run("apt-ostree upgrade --verify", timeout=900)
    assert refused.returncode == 1, refused
    assert (
        "failed its checks in a container: required check required-units failed:"
        in (refused.output)
        and "dbus.service is" in refused.output
    ), refused.output
    assert guest.check("ostree admin status") == before
    assert _grubenv(guest) == {}
    guest.check("rm /etc/systemd/system/dbus.service /etc/apt-ostree/required-units")


def test_trial_boots_fall_back_and_bless(apt_ostree_repo: ComposedRepo, tmp_path: Path) -> None:
    composed = apt_ostree_repo
    repo = tmp_path / "repo"
    subprocess.run(["cp", "-al", str(composed.path), str(repo)], check=True)
    first, second = composed.checksum, composed.next_checksum
    version2 = ostree.Repo.open(repo).read_commit(second).version
    with serve_directory(repo) as updates:
        remote = image.UpdateRemote("origin", f"http://{vm.HOST_FROM_GUEST}:{updates.port}/")
        disk = tmp_path / "disk.raw"
        opts = image.ImageOptions(
            repo=repo, ref=composed.ref, output=disk, remote=remote, etc_files=ETC_FILES,
            bootloader=image.Bootloader.GRUB_EFI, secure_boot=True,
        )  # fmt: skip
        image.build_image(opts, Progress())
        serve_next(repo)
        with vm.boot(
            disk, tmp_path / "vm", timeout=BOOT_TIMEOUT, secure_boot=True, watchdog=True
        ) as guest:
            _session(guest, first, second, version2)


def _session(guest: vm.VM, first: str, second: str, version2: str | None) -> None:
    # boot 1: Secure Boot, no trial; verify refuses a broken update; the update is staged
    _check_secure_boot(guest)
    assert _booted(guest)["checksum"] == first
    assert "aptostree.trial" not in guest.check("cat /proc/cmdline")
    # no trial recorded: the boot check's unit does not even start
    unit = "apt-ostree-boot-check.service"
    assert guest.check(f"systemctl show -P ConditionResult {unit}") == "no\n"
    guest.check("chmod 755 /etc/apt-ostree/health.d/required.d/50-app")
    _put(guest, "/etc/apt-ostreed.conf",
         "[Daemon]\\nAutomaticUpdatePolicy=stage\\nBootTrialTimeout=300\\n")  # fmt: skip
    guest.check("apt-ostree reload")
    _verify_refuses_a_masked_unit(guest)
    staged = guest.check("apt-ostree upgrade", timeout=900)
    assert f"Staged {second}" in staged and "The next boot is a trial" in staged
    assert _status(guest)["deployments"][0]["boot-trial"] == "pending"
    assert _grubenv(guest)["aptostree_trial"] == "pending"

    reboot_through_a_failed_trial(guest)
    # boot 3: back on the first deployment by itself; status says why
    _check_secure_boot(guest)
    assert _booted(guest)["checksum"] == first
    assert "aptostree.trial" not in guest.check("cat /proc/cmdline")
    status = _status(guest)
    failed = next(d for d in status["deployments"] if d["checksum"] == second)
    reason = "required check 50-app failed: the app does not start (exit status 1)"
    assert failed["boot-failure"] == reason and failed["boot-trial"] is None
    assert [f["base-checksum"] for f in status["boot-failures"]] == [second]
    text = guest.check("apt-ostree status")
    assert f"BootFailed: {reason}" in text and "BlockedUpdates:" in text
    assert "aptostree_trial" not in _grubenv(guest)
    # the next automatic update does not stage it again, nor does upgrade
    auto = guest.check("apt-ostree upgrade --trigger-automatic-update-policy", timeout=900)
    assert f"Not staging {second[:12]}: it failed its trial boot" in auto, auto
    assert not any(d["staged"] for d in _status(guest)["deployments"])
    refused = guest.run("apt-ostree upgrade", timeout=900)
    assert refused.returncode == 1 and "failed its trial boot" in refused.output
    # fixed; an explicit deploy tries it again
    guest.check("touch /etc/apt-ostree-test-allow")
    deployed = guest.check(f"apt-ostree deploy revision={second}", timeout=900)
    assert "The next boot is a trial" in deployed, deployed
    assert _status(guest)["boot-failures"] == []

    guest.reboot(timeout=BOOT_TIMEOUT)
    # boot 4: the trial passed and is blessed
    booted = _booted(guest)
    assert booted["checksum"] == second and booted["version"] == version2
    cmdline = guest.check("cat /proc/cmdline").split()
    assert "aptostree.trial=300" in cmdline and "rd.emergency=reboot" in cmdline
    assert booted["boot-trial"] is None and "aptostree_trial" not in _grubenv(guest)
    assert _status(guest)["deployments"][0]["booted"]  # the default
    journal = guest.check("journalctl -b -o cat -u apt-ostree-boot-check")
    assert f"The trial boot of {second[:12]} passed" in journal, journal
    deadline = guest.run("systemctl is-active apt-ostree-trial-deadline.service")
    assert deadline.output.strip() == "inactive", deadline  # stopped once blessed
    assert guest.run("test -c /dev/watchdog0").returncode == 0  # qemu's i6300esb

    guest.reboot(timeout=BOOT_TIMEOUT)
    # boot 5: still the blessed deployment, not on trial; then a rollback, never a trial
    _check_secure_boot(guest)
    assert _booted(guest)["checksum"] == second
    assert "aptostree.trial" not in guest.check("cat /proc/cmdline")
    guest.check("apt-ostree rollback")
    assert [d["checksum"] for d in _status(guest)["deployments"]] == [first, second]
    assert all(d["boot-trial"] is None for d in _status(guest)["deployments"])
    assert _grubenv(guest) == {}

    guest.reboot(timeout=BOOT_TIMEOUT)
    # boot 6: the rollback's first deployment, under Secure Boot; then a kernel argument that
    # makes a unit block the boot, which only the staged deployment has
    _check_secure_boot(guest)
    assert _booted(guest)["checksum"] == first
    assert "aptostree.trial" not in guest.check("cat /proc/cmdline")
    guest.check("systemctl enable apt-ostree-test-hang.service")
    _put(guest, "/etc/apt-ostreed.conf", "[Daemon]\\nBootTrialTimeout=60\\n")
    kargs = guest.check("apt-ostree kargs --append=apt_ostree_test_hang", timeout=900)
    assert "Kernel arguments updated" in kargs, kargs
    assert _status(guest)["deployments"][0]["boot-trial"] == "pending"

    reboot_through_a_failed_trial(guest)
    # boot 8: the first deployment again, without the argument; status says why
    booted = _booted(guest)
    assert booted["checksum"] == first
    assert "apt_ostree_test_hang" not in booted["kernel-arguments"]
    assert "apt_ostree_test_hang" not in guest.check("cat /proc/cmdline")
    hung = _status(guest)["deployments"][1]
    assert "apt_ostree_test_hang" in hung["kernel-arguments"]
    assert re.match(r"the trial boot did not bless itself within 60 s", hung["boot-failure"])
    assert "apt-ostree-test-hang.service" in hung["boot-failure"], hung
    assert len(guest.boot_seconds) == 6  # and the two trials that rebooted themselves
