"""Compose benchmark (issue 2): `compose tree` of each release's example vs doing it by hand.

For each release (bench.common.EXAMPLES: trixie's examples/minimal.yaml, bookworm's
examples/minimal-bookworm.yaml), in the same round: the baseline, the same package set
bootstrapped by plain mmdebstrap for the treefile's suite (its own index update and downloads,
like a cold compose), the same initramfs built with dracut inside the tree, then `ostree commit`
into an archive repository; then the cold compose and a recompose with no change.
Goals, per release: cold compose <= 1.15x the baseline; recompose with no change <= 5% of the
cold compose.

Run as root: .venv/bin/python -m bench.compose [--rounds N] [--release R ...]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from apt_ostree.aptpkg.sources import read_host_sources, render_sources
from bench.common import (
    APT_OSTREE,
    Release,
    Timing,
    add_release_option,
    chosen_releases,
    machine_line,
    timed,
    write_section,
)

EPOCH = {"SOURCE_DATE_EPOCH": "1700000000"}


def resolved_set(treefile: Path, cache: Path) -> list[str]:
    out = subprocess.run(
        [
            *APT_OSTREE,
            "compose",
            "tree",
            str(treefile),
            "--repo",
            str(cache / "dry-repo"),
            "--cachedir",
            str(cache),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    items = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            name, version, arch = parts
            items.append(f"{name}:{arch}={version}" if arch != "all" else f"{name}={version}")
    return items


@dataclass
class Measured:
    """One release's package set and its times, a value per round."""

    release: Release
    packages: list[str]
    base: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)


def baseline(work: Path, packages: list[str], suite: str) -> float:
    sources = work / "host.sources"
    sources.write_text(render_sources(read_host_sources(suite)))
    rootfs, repo = work / "baseline-rootfs", work / "baseline-repo"
    t1 = timed(
        "baseline mmdebstrap",
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=custom",
            f"--include={','.join(packages)}",
            '--aptopt=Acquire::Check-Valid-Until "false"',
            suite,
            str(rootfs),
            str(sources),
        ],
        env={**EPOCH, "INITRD": "No"},
    )
    kver = sorted(p.name for p in (rootfs / "usr/lib/modules").iterdir())[-1]
    t2 = timed(
        "baseline dracut",
        [
            "bwrap",
            "--bind",
            str(rootfs),
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--unshare-net",
            "--die-with-parent",
            "dracut",
            "--no-hostonly",
            "--reproducible",
            "--add",
            "ostree",
            "-f",
            f"/usr/lib/modules/{kver}/initramfs.img",
            kver,
        ],
        env=EPOCH,
    )
    # ostree cannot commit device nodes: what the baseline would also have to drop
    subprocess.run(["find", str(rootfs / "dev"), "-mindepth", "1", "-delete"], check=True)
    subprocess.run(["ostree", "init", f"--repo={repo}", "--mode=archive"], check=True)
    t3 = timed(
        "baseline ostree commit",
        ["ostree", "commit", f"--repo={repo}", "-b", "baseline", str(rootfs)],
    )
    return t1.seconds + t2.seconds + t3.seconds


def ours(work: Path, treefile: Path, label: str) -> Timing:
    return timed(
        label,
        [
            *APT_OSTREE,
            "compose",
            "tree",
            str(treefile),
            "--repo",
            str(work / "repo"),
            "--cachedir",
            str(work / "cache"),
        ],
        env=EPOCH,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    add_release_option(parser)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-", dir="/var/tmp"))
    try:
        measured = []
        for rel in chosen_releases(args):
            packages = resolved_set(rel.treefile, scratch / f"resolve-cache-{rel.name}")
            print(f"{rel.name}: {len(packages)} packages in {rel.treefile.name}")
            measured.append(Measured(rel, packages))
        for n in range(args.rounds):
            for m in measured:
                round_of(scratch / f"round{n}-{m.release.name}", m)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(measured, args.rounds)


def round_of(work: Path, m: Measured) -> None:
    """The baseline, then the cold compose and the recompose, of one release."""
    print(f"{m.release.name} ({m.release.suite}):", flush=True)
    work.mkdir()
    m.base.append(baseline(work, m.packages, m.release.suite))
    m.cold.append(ours(work, m.release.treefile, "compose tree (cold)").seconds)
    m.warm.append(ours(work, m.release.treefile, "compose tree (no change)").seconds)
    shutil.rmtree(work)


def report(measured: list[Measured], rounds: int) -> None:
    """One table, the releases side by side: a seconds and a ratio column each."""
    med = [
        (statistics.median(m.base), statistics.median(m.cold), statistics.median(m.warm))
        for m in measured
    ]
    names = [m.release.name for m in measured]
    lines = [
        "## Compose (issue 2)",
        "",
        "; ".join(
            f"{m.release.name}: {m.release.example}, {len(m.packages)} packages" for m in measured
        )
        + f"; {machine_line()}; median of {rounds} round(s), each measuring every release"
        " (its baseline, then its composes).",
        "",
        "| measure | " + " | ".join(f"{n}: seconds | {n}: ratio" for n in names) + " | goal |",
        "| --- | " + " | ".join("--- | ---" for _ in names) + " | --- |",
        "| baseline: mmdebstrap + dracut + ostree commit | "
        + " | ".join(f"{base:.1f} | 1.00" for base, _, _ in med)
        + " | |",
        "| `compose tree`, cold | "
        + " | ".join(f"{cold:.1f} | {cold / base:.2f} of baseline" for base, cold, _ in med)
        + " | <= 1.15 |",
        "| `compose tree`, no change | "
        + " | ".join(f"{warm:.1f} | {warm / cold:.3f} of cold" for _, cold, warm in med)
        + " | <= 0.05 |",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("compose", text)


if __name__ == "__main__":
    main()
