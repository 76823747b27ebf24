"""Compose benchmark (issue 2): `compose tree` of examples/minimal.yaml vs doing it by hand.

Baseline, measured in the same run: the same package set bootstrapped by plain mmdebstrap
(its own index update and downloads, like a cold compose), the same initramfs built with
dracut inside the tree, then `ostree commit` into an archive repository.
Goals: cold compose <= 1.15x the baseline; recompose with no change <= 5% of the cold compose.

Run as root: .venv/bin/python -m bench.compose [--rounds N] [--treefile F]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from apt_ostree.aptpkg.sources import read_host_sources, render_sources
from bench.common import APT_OSTREE, ROOT, Timing, machine_line, timed, write_section

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
    parser.add_argument("--treefile", type=Path, default=ROOT / "examples/minimal.yaml")
    args = parser.parse_args()
    base_t, cold_t, warm_t = [], [], []
    scratch = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-", dir="/var/tmp"))
    try:
        packages = resolved_set(args.treefile, scratch / "resolve-cache")
        print(f"{len(packages)} packages in {args.treefile.name}")
        for n in range(args.rounds):
            work = scratch / f"round{n}"
            work.mkdir()
            base_t.append(baseline(work, packages, "bookworm"))
            cold_t.append(ours(work, args.treefile, "compose tree (cold)").seconds)
            warm_t.append(ours(work, args.treefile, "compose tree (no change)").seconds)
            shutil.rmtree(work)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(
        len(packages),
        statistics.median(base_t),
        statistics.median(cold_t),
        statistics.median(warm_t),
        args.rounds,
    )


def report(count: int, base: float, cold: float, warm: float, rounds: int) -> None:
    cold_ratio, warm_ratio = cold / base, warm / cold
    lines = [
        "## Compose (issue 2)",
        "",
        f"`examples/minimal.yaml`, {count} packages; {machine_line()};"
        f" median of {rounds} round(s).",
        "",
        "| measure | seconds | ratio | goal |",
        "| --- | --- | --- | --- |",
        f"| baseline: mmdebstrap + dracut + ostree commit | {base:.1f} | 1.00 | |",
        f"| `compose tree`, cold | {cold:.1f} | {cold_ratio:.2f} of baseline | <= 1.15 |",
        f"| `compose tree`, no change | {warm:.1f} | {warm_ratio:.3f} of cold | <= 0.05 |",
    ]
    text = "\n".join(lines)
    print(text)
    write_section("compose", text)


if __name__ == "__main__":
    main()
