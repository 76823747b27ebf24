"""Boot benchmark (issue 6): the composed minimal image vs a plain image of the same packages.

Ours: `examples/minimal.yaml` composed, then `compose image` (OVMF + systemd-boot reading
libostree's entries from the XBOOTLDR /boot through rEFInd's ext4 driver, the sysroot on the
ext4 root). Baseline, built in the same run: the exact package versions of the commit
(`aptostree.packages`) bootstrapped by plain mmdebstrap, the same dracut initramfs, written
into the same partition layout with the same loader and one hand-written BLS entry, no OSTree.
Both get the VM harness's agent and network files in /etc, and the same services (networkd,
multi-user target). A boot is timed from qemu's start to the agent's READY, which the guest
prints once multi-user.target is reached. Goal: ours <= 1.15x the baseline.

Run as root: .venv/bin/python -m bench.boot [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from apt_ostree import keys, ostree
from apt_ostree.aptpkg.sources import read_host_sources, render_sources
from apt_ostree.compose import image
from apt_ostree.progress import Progress, human_size
from bench.common import APT_OSTREE, ROOT, machine_line, timed, write_section
from tests.support import vm

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}
REF = "debian/bookworm/amd64/minimal"
CACHE = Path("/var/cache/apt-ostree-tests")


def compose(repo: Path) -> str:
    timed(
        "compose tree (examples/minimal.yaml)",
        [*APT_OSTREE, "compose", "tree", str(ROOT / "examples/minimal.yaml"), "--repo",
         str(repo), "--cachedir", str(CACHE / "compose")],
    )  # fmt: skip
    checksum = ostree.Repo.open(repo).resolve_ref(REF)
    assert checksum is not None
    return checksum


def our_image(repo: Path, output: Path) -> float:
    start = time.monotonic()
    opts = image.ImageOptions(repo=repo, ref=REF, output=output, etc_files=vm.GUEST_ETC_FILES)
    image.build_image(opts, Progress())
    seconds = time.monotonic() - start
    print(f"  compose image: {seconds:.1f} s", flush=True)
    return seconds


def _include(packages: list[tuple[str, str, str]]) -> str:
    return ",".join(
        f"{name}={version}" if arch == "all" else f"{name}:{arch}={version}"
        for name, version, arch in packages
    )


def _bootstrap(work: Path, packages: list[tuple[str, str, str]]) -> Path:
    sources = work / "host.sources"
    sources.write_text(render_sources(read_host_sources("bookworm")))
    rootfs = work / "plain-rootfs"
    timed(
        "baseline mmdebstrap",
        ["mmdebstrap", "--mode=root", "--variant=custom", f"--include={_include(packages)}",
         '--aptopt=Acquire::Check-Valid-Until "false"', "bookworm", str(rootfs), str(sources)],
        env={**EPOCH, "INITRD": "No"},
    )  # fmt: skip
    return rootfs


def _initramfs(rootfs: Path, kver: str) -> None:
    timed(
        "baseline dracut",
        ["bwrap", "--bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs",
         "/tmp", "--unshare-net", "--die-with-parent", "dracut", "--no-hostonly",
         "--reproducible", "-f", f"/boot/initramfs-{kver}.img", kver],
        env=EPOCH,
    )  # fmt: skip


def _configure(rootfs: Path, boot: Path, kver: str) -> None:
    """What compose and `compose image` do for ours: services, fstab, /boot, the BLS entry."""
    etc = rootfs / "etc"
    (etc / "fstab").write_text("LABEL=root / ext4 defaults 0 1\n" + image.fstab_text(""))
    wants = etc / "systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "systemd-networkd.service").unlink(missing_ok=True)
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    (etc / "systemd/system/default.target").unlink(missing_ok=True)
    (etc / "systemd/system/default.target").symlink_to("/lib/systemd/system/multi-user.target")
    for name, content in vm.GUEST_ETC_FILES.items():
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_bytes(content)
    (etc / "machine-id").write_text("")
    (rootfs / "efi").mkdir(exist_ok=True)
    shutil.move(rootfs / "boot", boot)
    (rootfs / "boot").mkdir()
    entries = boot / "loader/entries"
    entries.mkdir(parents=True)
    (entries / "debian.conf").write_text(
        f"title Debian GNU/Linux 12 (plain)\nversion {kver}\nlinux /vmlinuz-{kver}\n"
        f"initrd /initramfs-{kver}.img\noptions {' '.join(image.default_kargs(()))}\n"
    )


def plain_image(work: Path, repo: Path, checksum: str, output: Path) -> float:
    meta = ostree.Repo.open(repo).read_commit(checksum).metadata
    packages: list[tuple[str, str, str]] = [
        (str(n), str(v), str(a)) for n, v, a in meta[keys.PACKAGES]
    ]
    start = time.monotonic()
    rootfs = _bootstrap(work, packages)
    kver = sorted(p.name for p in (rootfs / "usr/lib/modules").iterdir())[-1]
    _initramfs(rootfs, kver)
    boot = work / "plain-boot"
    _configure(rootfs, boot, kver)
    opts = image.ImageOptions(repo=repo, ref=REF, output=output)
    driver = image.ext4_driver(opts.cachedir, Progress())
    image.write_disk(output, opts.size, image.layout(opts), rootfs, boot, driver, Progress())
    seconds = time.monotonic() - start
    subprocess.run(["rm", "-rf", str(rootfs), str(boot)], check=True)
    print(f"  baseline image: {seconds:.1f} s", flush=True)
    return seconds


def boot_once(disk: Path, work: Path, label: str) -> tuple[float, str]:
    with vm.boot(disk, work) as guest:
        seconds = guest.boot_seconds[0]
        analyze = guest.run("systemd-analyze time | head -1").output.strip()
    shutil.rmtree(work, ignore_errors=True)
    print(f"  boot {label}: {seconds:.1f} s ({analyze})", flush=True)
    return seconds, analyze


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=CACHE / "vm" / "repo")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-boot-", dir="/var/tmp"))
    try:
        checksum = compose(args.repo)
        ours, plain = scratch / "ours.raw", scratch / "plain.raw"
        build_ours = our_image(args.repo, ours)
        build_plain = plain_image(scratch, args.repo, checksum, plain)
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        analyze: dict[str, str] = {}
        for n in range(args.rounds):
            for label, disk in (("plain", plain), ("ours", ours)):
                seconds, analyze[label] = boot_once(disk, scratch / f"vm-{label}-{n}", label)
                times[label].append(seconds)
        report(
            args.rounds,
            {k: statistics.median(v) for k, v in times.items()},
            {"ours": build_ours, "plain": build_plain},
            {"ours": allocated(ours), "plain": allocated(plain)},
            analyze,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(
    rounds: int,
    boot: dict[str, float],
    build: dict[str, float],
    size: dict[str, int],
    analyze: dict[str, str],
) -> None:
    ratio = boot["ours"] / boot["plain"]
    lines = [
        "## Boot (issue 6)",
        "",
        f"`examples/minimal.yaml` under qemu TCG (q35, 2 vCPUs, 1 GiB, OVMF + systemd-boot);"
        f" {machine_line()}; median of {rounds} boot(s) each, alternating.",
        "Boot: qemu start to the guest agent's READY (ordered after multi-user.target).",
        "",
        "| image | boot to multi-user, s | ratio | goal | image build, s | size (allocated) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| baseline: plain mmdebstrap, same packages and loader | {boot['plain']:.1f} | 1.00 |"
        f" | {build['plain']:.1f} | {human_size(size['plain'])} |",
        f"| `compose image` (OSTree) | {boot['ours']:.1f} | {ratio:.2f} | <= 1.15 |"
        f" {build['ours']:.1f} | {human_size(size['ours'])} |",
        "",
        f"In-guest `systemd-analyze time` (last round): plain: {analyze.get('plain', '-')};"
        f" ours: {analyze.get('ours', '-')}.",
        "The baseline's build time includes its mmdebstrap and dracut; ours starts from the"
        " composed commit (`compose tree` is benchmarked in the compose section).",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("boot", text)


if __name__ == "__main__":
    main()
