"""Trial boots benchmark (issue 15): what a trial costs a good update, and how long a bad one
keeps the machine away from its previous deployment.

The image: the minimal example with apt-ostree inside (tests/vm/conftest.py's treefiles, its
two versions, composed into a cache of the benchmark's own), as a `--bootloader grub-efi`
image with tests/vm/test_trial.py's /etc (a required health check that fails on the second
version unless /etc/apt-ostree-test-allow exists; the test agent's READY is ordered after
apt-ostree-boot-check, so READY means the boot was judged).
One guest, under qemu TCG with the i6300esb watchdog; each round, from the first version:

1. baseline: `BootTrialTimeout=0`, `deploy revision=SECOND`: a staged update without a trial;
   reboot to READY;
2. trial: `BootTrialTimeout=600`, `deploy revision=FIRST`: the same kind of staged update, on
   trial; reboot to READY once it is blessed;
3. failed trial: `deploy revision=SECOND` without the allow file: reboot, the trial fails its
   check and reboots itself, the first version runs again: from the reboot command to READY,
   and from the trial's own reset to READY.

Goal: a blessed trial's boot <= 1.1x the baseline's. Times are from the reboot command (the
shutdown, with libostree's finalization, included in both) to READY.

Run as root: .venv/bin/python -m bench.trial [--rounds N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from apt_ostree import ostree
from apt_ostree.compose import image
from apt_ostree.progress import Progress
from bench.common import machine_line, write_section
from tests.support import vm
from tests.support.aptrepo import shared_gpg_key
from tests.support.debian import CACHE, cache_lock, compose_from_archive
from tests.support.httpd import serve_directory
from tests.vm.conftest import (
    APT_OSTREE_REF,
    NEXT_REF,
    apt_ostree_treefile,
    build_apt_ostree_deb,
    next_treefile,
    publish_apt_ostree,
    serve_next,
)
from tests.vm.test_trial import ETC_FILES, reboot_through_a_failed_trial

BOOT_TIMEOUT = 900


BENCH_DEBS = CACHE / "bench-trial" / "debs"
BENCH_REPO = CACHE / "bench-trial" / "repo"


def compose() -> tuple[str, str]:
    """The two versions of the tests' image with apt-ostree inside, composed into a cache of
    the benchmark's own (the tests' is signed with their session's key: sharing it would
    compose anew under a running test)."""
    with cache_lock(BENCH_DEBS / "lock"):
        shutil.rmtree(BENCH_DEBS / "build", ignore_errors=True)
        deb = build_apt_ostree_deb(BENCH_DEBS / "build")
        debs = publish_apt_ostree(deb, shared_gpg_key(), BENCH_DEBS)
        treefile = apt_ostree_treefile(BENCH_DEBS, debs)
        compose_from_archive(treefile, BENCH_REPO)
        compose_from_archive(next_treefile(BENCH_DEBS, treefile), BENCH_REPO)
        repo = ostree.Repo.open(BENCH_REPO)
        first, second = repo.resolve_ref(APT_OSTREE_REF), repo.resolve_ref(NEXT_REF)
    assert first and second
    return first, second


def _conf(guest: vm.VM, timeout: int) -> None:
    guest.check(f"printf '[Daemon]\\nBootTrialTimeout={timeout}\\n' > /etc/apt-ostreed.conf")


def _booted(guest: vm.VM) -> str:
    out = guest.check("ostree admin status | sed -n 's/^\\* [^ ]* \\([0-9a-f]*\\)\\..*/\\1/p'")
    return out.strip()


def rounds(disk: Path, work: Path, first: str, second: str, n: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"baseline": [], "trial": [], "failed": [], "fallback": []}
    with vm.boot(disk, work, timeout=BOOT_TIMEOUT, watchdog=True) as guest:
        guest.check("chmod 755 /etc/apt-ostree/health.d/required.d/50-app")
        for i in range(n):
            guest.check("touch /etc/apt-ostree-test-allow")
            _conf(guest, 0)
            guest.check(f"apt-ostree deploy revision={second}", timeout=900)
            times["baseline"].append(guest.reboot(timeout=BOOT_TIMEOUT))
            assert _booted(guest) == second
            _conf(guest, 600)
            guest.check(f"apt-ostree deploy revision={first}", timeout=900)
            times["trial"].append(guest.reboot(timeout=BOOT_TIMEOUT))
            assert _booted(guest) == first
            guest.check("rm /etc/apt-ostree-test-allow")
            guest.check(f"apt-ostree deploy revision={second}", timeout=900)
            total, fallback = reboot_through_a_failed_trial(guest, BOOT_TIMEOUT)
            assert _booted(guest) == first
            times["failed"].append(total)
            times["fallback"].append(fallback)
            print(f"  round {i + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    return times


def report(times: dict[str, list[float]], n: int) -> str:
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["baseline"]
    lines = [
        "## Trial boots (issue 15)",
        "",
        f"The minimal example with apt-ostree inside, `--bootloader grub-efi`, under qemu TCG"
        f" (q35, 1 vCPU, OVMF, i6300esb); {machine_line()}; median of {n} round(s), each"
        " round in this order. Times: from the reboot command (shutdown and libostree's"
        " finalization included) to the guest agent's READY, which is ordered after"
        " apt-ostree-boot-check (the boot judged).",
        "",
        "| boot | seconds | ratio | goal |",
        "| --- | --- | --- | --- |",
        f"| a staged update, no trial (`BootTrialTimeout=0`): baseline | {base:.1f} | 1.00 | |",
        f"| the same kind of update on trial, blessed | {med['trial']:.1f} |"
        f" {med['trial'] / base:.2f} | <= 1.1 |",
        f"| an update whose trial fails its check, until the previous deployment runs again"
        f" | {med['failed']:.1f} | {med['failed'] / base:.2f} | |",
        f"| of which: from the failed trial's own reboot to the previous deployment's READY"
        f" | {med['fallback']:.1f} | {med['fallback'] / base:.2f} | |",
        "",
        "All runs: "
        + "; ".join(f"{k} " + ", ".join(f"{s:.1f}" for s in v) for k, v in times.items())
        + ".",  # fmt: skip
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    first, second = compose()
    scratch = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-trial-", dir="/var/tmp"))
    try:
        repo = scratch / "repo"
        subprocess.run(["cp", "-al", str(BENCH_REPO), str(repo)], check=True)
        with serve_directory(repo) as updates:
            url = f"http://{vm.HOST_FROM_GUEST}:{updates.port}/"
            disk = scratch / "disk.raw"
            start = time.monotonic()
            opts = image.ImageOptions(
                repo=repo, ref=APT_OSTREE_REF, output=disk, etc_files=ETC_FILES,
                remote=image.UpdateRemote("origin", url), bootloader=image.Bootloader.GRUB_EFI,
            )  # fmt: skip
            image.build_image(opts, Progress())
            print(f"  compose image --bootloader grub-efi: {time.monotonic() - start:.1f} s")
            serve_next(repo)
            times = rounds(disk, scratch / "vm", first, second, args.rounds)
        text = report(times, args.rounds)
        print(text)
        write_section("trial", text)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
