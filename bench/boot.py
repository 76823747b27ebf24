"""Boot benchmark (issue 6): each release's composed minimal image vs a plain image of the same
packages.

For each release (bench.common.EXAMPLES: trixie's examples/minimal.yaml, bookworm's
examples/minimal-bookworm.yaml), ours: the example composed (its ref from the treefile), then
`compose image` (OVMF + systemd-boot reading libostree's entries from the XBOOTLDR /boot
through rEFInd's ext4 driver, the sysroot on the ext4 root). Baseline, built in the same run:
the exact package versions of the commit (`aptostree.packages`) bootstrapped by plain
mmdebstrap from the treefile's suite, the same dracut initramfs, written into the same
partition layout with the same loader and one hand-written BLS entry, no OSTree.
Both get the VM harness's agent and network files in /etc, and the same services (networkd,
multi-user target). A boot is timed from qemu's start to the agent's READY, which the guest
prints once multi-user.target is reached; each round boots every release's plain image, then
its image. Goal, per release: ours <= 1.15x the baseline.

Run as root: .venv/bin/python -m bench.boot [--rounds N] [--release R ...] [--repo REPO]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from apt_ostree import ostree
from apt_ostree.aptpkg.sources import read_host_sources, render_sources
from apt_ostree.compose import image
from apt_ostree.progress import Progress, human_size
from bench.common import (
    APT_OSTREE,
    Release,
    add_release_option,
    chosen_releases,
    commit_packages,
    machine_line,
    timed,
    write_section,
)
from tests.support import vm
from tests.support.debian import CACHE, cache_lock

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


@dataclass(frozen=True)
class Images:
    """One release's two disks and what making them took."""

    release: Release
    packages: int  # in the composed commit
    ours: Path
    plain: Path
    build: dict[str, float]  # "ours", "plain": seconds


def compose(repo: Path, rel: Release) -> str:
    # the test sessions' compose cache: they take its lock around each use, and so do we
    with cache_lock(CACHE / "compose" / "lock"):
        timed(
            f"compose tree ({rel.treefile.name})",
            [*APT_OSTREE, "compose", "tree", str(rel.treefile), "--repo", str(repo),
             "--cachedir", str(CACHE / "compose")],
        )  # fmt: skip
    checksum = ostree.Repo.open(repo).resolve_ref(rel.ref)
    assert checksum is not None
    return checksum


def our_image(repo: Path, ref: str, output: Path) -> float:
    start = time.monotonic()
    opts = image.ImageOptions(repo=repo, ref=ref, output=output, etc_files=vm.GUEST_ETC_FILES)
    image.build_image(opts, Progress())
    seconds = time.monotonic() - start
    print(f"  compose image: {seconds:.1f} s", flush=True)
    return seconds


def _include(packages: list[tuple[str, str, str]]) -> str:
    return ",".join(
        f"{name}={version}" if arch == "all" else f"{name}:{arch}={version}"
        for name, version, arch in packages
    )


def _bootstrap(work: Path, packages: list[tuple[str, str, str]], suite: str) -> Path:
    sources = work / "host.sources"
    sources.write_text(render_sources(read_host_sources(suite)))
    rootfs = work / "plain-rootfs"
    timed(
        "baseline mmdebstrap",
        ["mmdebstrap", "--mode=root", "--variant=custom", f"--include={_include(packages)}",
         '--aptopt=Acquire::Check-Valid-Until "false"', suite, str(rootfs), str(sources)],
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


def _configure(rootfs: Path, boot: Path, kver: str, suite: str) -> None:
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
        f"title Debian GNU/Linux {suite} (plain)\nversion {kver}\nlinux /vmlinuz-{kver}\n"
        f"initrd /initramfs-{kver}.img\noptions {' '.join(image.default_kargs(()))}\n"
    )


def plain_image(
    work: Path, repo: Path, rel: Release, packages: list[tuple[str, str, str]], output: Path
) -> float:
    start = time.monotonic()
    rootfs = _bootstrap(work, packages, rel.suite)
    kver = sorted(p.name for p in (rootfs / "usr/lib/modules").iterdir())[-1]
    _initramfs(rootfs, kver)
    boot = work / "plain-boot"
    _configure(rootfs, boot, kver, rel.suite)
    opts = image.ImageOptions(repo=repo, ref=rel.ref, output=output)
    driver = image.ext4_driver(opts.cachedir, Progress())
    image.write_disk(output, opts.size, image.layout(opts), rootfs, boot, driver, Progress())
    seconds = time.monotonic() - start
    subprocess.run(["rm", "-rf", str(rootfs), str(boot)], check=True)
    print(f"  baseline image: {seconds:.1f} s", flush=True)
    return seconds


def boot_once(disk: Path, work: Path, label: str) -> tuple[float, str, str]:
    """Seconds to READY, the guest's `systemd-analyze time`, and the guest's vCPUs and memory."""
    with vm.boot(disk, work) as guest:
        seconds = guest.boot_seconds[0]
        analyze = guest.run("systemd-analyze time | head -1").output.strip()
        machine = f"{guest.cpus} vCPU{'s' if guest.cpus > 1 else ''}, {guest.memory_mib} MiB"
    shutil.rmtree(work, ignore_errors=True)
    print(f"  boot {label}: {seconds:.1f} s ({analyze})", flush=True)
    return seconds, analyze, machine


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def build(scratch: Path, repo: Path, rel: Release) -> Images:
    """Compose the release's example, then make its two disks."""
    print(f"{rel.name} ({rel.suite}):", flush=True)
    checksum = compose(repo, rel)
    packages = commit_packages(repo, checksum)
    ours, plain = scratch / f"{rel.name}-ours.raw", scratch / f"{rel.name}-plain.raw"
    build_ours = our_image(repo, rel.ref, ours)
    work = scratch / f"{rel.name}-plain"
    work.mkdir()
    build_plain = plain_image(work, repo, rel, packages, plain)
    return Images(rel, len(packages), ours, plain, {"ours": build_ours, "plain": build_plain})


@dataclass
class Boots:
    """Boot seconds per round and the last `systemd-analyze time`, by release and image."""

    seconds: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    analyze: dict[tuple[str, str], str] = field(default_factory=dict)
    guest: str = ""  # the VM harness's vCPUs and memory

    def median(self, name: str, label: str) -> float:
        return statistics.median(self.seconds[name, label])


def boot_rounds(scratch: Path, releases: list[Images], rounds: int) -> Boots:
    boots = Boots()
    for n in range(rounds):
        for imgs in releases:
            name = imgs.release.name
            for label, disk in (("plain", imgs.plain), ("ours", imgs.ours)):
                work = scratch / f"vm-{name}-{label}-{n}"
                seconds, boots.analyze[name, label], boots.guest = boot_once(
                    disk, work, f"{name} {label}"
                )
                boots.seconds.setdefault((name, label), []).append(seconds)
    return boots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=CACHE / "vm" / "repo")
    add_release_option(parser)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-boot-", dir="/var/tmp"))
    try:
        releases = [build(scratch, args.repo, rel) for rel in chosen_releases(args)]
        report(args.rounds, releases, boot_rounds(scratch, releases, args.rounds))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def report(rounds: int, releases: list[Images], boots: Boots) -> None:
    """One table, two rows per release (its baseline, then ours)."""
    lines = [
        "## Boot (issue 6)",
        "",
        "; ".join(f"{i.release.name}: {i.release.example}, {i.packages} packages" for i in releases)
        + f"; under qemu TCG (q35, {boots.guest}, OVMF + systemd-boot);"
        f" {machine_line()}; median of {rounds} boot(s) each, alternating (each round boots"
        " every release's plain image, then ours).",
        "Boot: qemu start to the guest agent's READY (ordered after multi-user.target)."
        " Ratios are against the same release's plain image.",
        "",
        "| release | image | boot to multi-user, s | ratio | goal | image build, s"
        " | size (allocated) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for imgs in releases:
        name = imgs.release.name
        plain, ours = boots.median(name, "plain"), boots.median(name, "ours")
        lines += [
            f"| {name} | baseline: plain mmdebstrap, same packages and loader | {plain:.1f} |"
            f" 1.00 | | {imgs.build['plain']:.1f} | {human_size(allocated(imgs.plain))} |",
            f"| {name} | `compose image` (OSTree) | {ours:.1f} | {ours / plain:.2f} | <= 1.15 |"
            f" {imgs.build['ours']:.1f} | {human_size(allocated(imgs.ours))} |",
        ]
    lines += ["", "In-guest `systemd-analyze time` (last round):", ""]
    lines += [
        f"- {i.release.name}: plain: {boots.analyze.get((i.release.name, 'plain'), '-')};"
        f" ours: {boots.analyze.get((i.release.name, 'ours'), '-')}."
        for i in releases
    ]
    lines += [
        "",
        "The baseline's build time includes its mmdebstrap and dracut; ours starts from the"
        " composed commit (`compose tree` is benchmarked in the compose section).",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("boot", text)


if __name__ == "__main__":
    main()
