"""Deployments benchmark (issue 3): upgrade bytes, rollback time, `db diff` without checkout.

1. Upgrade where one small package changed in a minimal image: examples/minimal-bookworm.yaml plus
   `bench-hello` from a local signed apt repository, 1.0 then 1.1 (one ~20 kB file changed),
   composed into an archive repository served on loopback HTTP (tests.support.httpd counts the
   body bytes it sends). Baseline, in the same run: the full pull of the image by `init`.
   Goal: bytes of the upgrade <= 2x the compressed size of the changed files (their `.filez`
   objects in the archive repository), without and with a static delta.
2. `rollback` on two synthetic trees of ~200 MB and ~1 GB (fake kernel, random files),
   each deployed twice in its own folder sysroot. Goal: median 1G/200M <= 1.2.
3. `db diff` between the two composed commits against `ostree checkout` of the same commit;
   no checkout: the sysroot is unchanged (every path, size and mtime) and strace sees no
   file written.

Run as root: .venv/bin/python -m bench.deploy [--rounds N] [--rollback-rounds N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree.aptpkg.sources import read_host_sources
from apt_ostree.ostree import remove_sysroot as remove_tree
from bench.common import APT_OSTREE, ROOT, machine_line, timed, write_section
from tests.support.aptrepo import AptRepo
from tests.support.debs import DebSpec
from tests.support.httpd import Server, ServerStats, serve_directory

SUITE = "bookworm"
EPOCH = 1700000000
PAYLOAD = "/usr/share/bench-hello/payload.bin"
PAYLOAD_SIZE = 20 * 1024
MB = 1024 * 1024
FILE_SIZE = 256 * 1024  # the synthetic trees' files
KVER = "6.1.0-x"
SIZES = (200, 1024)  # MB of the synthetic trees
SYSROOTS = ("upgrade/plain", "upgrade/delta", *(f"sysroot-{size}m" for size in SIZES))


# ---- helpers ----


def ostree(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["ostree", f"--repo={repo}", *args], capture_output=True, text=True, check=True
    ).stdout


def cli(*args: str | Path) -> str:
    return subprocess.run(
        [*APT_OSTREE, *map(str, args)], capture_output=True, text=True, check=True
    ).stdout


def deployments(sysroot: Path) -> list[dict[str, object]]:
    data = json.loads(cli("status", "--sysroot", sysroot, "--json"))
    return list(data["deployments"])


def mib(n: float) -> str:
    return f"{n / MB:.2f} MiB" if n >= MB else f"{n / 1024:.1f} kiB"


def init(sysroot: Path, url: str, ref: str, label: str) -> None:
    timed(
        label,
        [
            *APT_OSTREE,
            "init",
            "--sysroot",
            str(sysroot),
            "--os",
            "bench",
            "--remote",
            f"bench={url}",
            "--no-gpg-verify",
            ref,
        ],
    )


# ---- 1. upgrade bytes ----


def hello(version: str, seed: int) -> DebSpec:
    payload = random.Random(seed).randbytes(PAYLOAD_SIZE)
    return DebSpec(name="bench-hello", version=version, files={PAYLOAD: payload})


def write_treefile(work: Path, apt: AptRepo) -> Path:
    """examples/minimal-bookworm.yaml (SUITE) plus bench-hello; `repos` replaces the host's
    sources, so the host's Debian sources are rendered in at run time (no mirror is written
    in this file)."""
    for name in ("minimal.yaml", "minimal-bookworm.yaml"):
        shutil.copy(ROOT / "examples" / name, work / name)
    repos: list[dict[str, object]] = [
        {
            "uris": list(e.uris),
            "suites": list(e.suites),
            "components": list(e.components),
            "signed-by": e.signed_by,
        }
        for e in read_host_sources(SUITE)
    ]
    repos.append(
        {
            "uris": apt.file_uri,
            "suites": apt.suite,
            "components": apt.component,
            "signed-by": str(apt.keyring),
        }
    )
    data = {"include": "minimal-bookworm.yaml", "repos": repos, "packages": ["bench-hello"]}
    path = work / "bench.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def compose(work: Path, treefile: Path, label: str, epoch: int) -> None:
    argv = [*APT_OSTREE, "compose", "tree", str(treefile), "--repo", str(work / "repo")]
    timed(label, [*argv, "--cachedir", str(work / "cache")], env={"SOURCE_DATE_EPOCH": str(epoch)})


def changed_objects(repo: Path, old: str, new: str) -> tuple[int, int]:
    """(files, bytes): the files `ostree diff` reports added or modified, and the size of
    their content objects (`.filez`, compressed) in the archive repository."""
    paths = [
        line.split(None, 1)[1]
        for line in ostree(repo, "diff", old, new).splitlines()
        if line[:1] in ("A", "M")
    ]
    total, files = 0, 0
    for line in ostree(repo, "ls", "-C", "-d", new, *paths).splitlines() if paths else []:
        fields = line.split()
        if fields[0].startswith("d"):
            continue
        checksum = fields[4]
        total += (repo / "objects" / checksum[:2] / f"{checksum[2:]}.filez").stat().st_size
        files += 1
    return files, total


KINDS = ("filez", "dirtree", "dirmeta", "commit", "deltas", "other")


def kind(path: str) -> str:
    """What a request fetched: a kind of object, static delta files, or anything else."""
    if path.startswith("/deltas/"):
        return "deltas"
    suffix = path.rsplit(".", 1)[-1] if path.startswith("/objects/") else ""
    return suffix if suffix in KINDS else "other"


@dataclass(frozen=True)
class Transfer:
    bytes: int
    requests: int
    by_kind: tuple[tuple[str, int], ...]  # body bytes per kind, in KINDS order

    @staticmethod
    def of(stats: ServerStats) -> Transfer:
        sums = dict.fromkeys(KINDS, 0)
        for hit in stats.hits:
            sums[kind(hit.path)] += hit.bytes
        return Transfer(stats.bytes_sent, stats.requests, tuple(sums.items()))

    def of_kind(self, name: str) -> int:
        return dict(self.by_kind)[name]

    def breakdown(self) -> str:
        return ", ".join(f"{k} {mib(n)}" for k, n in self.by_kind if n)


def counted(server: Server, label: str, argv: Sequence[str]) -> Transfer:
    server.reset_stats()
    timed(label, argv)
    return Transfer.of(server.stats)


@dataclass(frozen=True)
class UpgradeResult:
    full: Transfer
    plain: Transfer
    delta: Transfer
    changed_files: int
    changed_bytes: int
    deb_bytes: int
    old: str
    new: str


@dataclass(frozen=True)
class HelloImage:
    """The image with bench-hello 1.0, composed into work/repo: compose_hello_1_1 follows."""

    apt: AptRepo
    treefile: Path
    repo: Path
    ref: str
    old: str


def compose_hello_1_0(work: Path) -> HelloImage:
    apt = AptRepo(work / "apt", suite="bench", codename="bench")
    apt.add(hello("1.0", 1))
    apt.publish()
    treefile = write_treefile(work, apt)
    repo = work / "repo"
    compose(work, treefile, "compose bench-hello 1.0", EPOCH)
    ref = ostree(repo, "refs").split()[0]
    return HelloImage(apt, treefile, repo, ref, ostree(repo, "rev-parse", ref).strip())


def compose_hello_1_1(work: Path, image: HelloImage) -> tuple[str, Path]:
    """bench-hello 1.1 (one file changed) composed a day later: the new commit, the .deb."""
    image.apt.remove("bench-hello")
    (deb,) = image.apt.add(hello("1.1", 2))
    image.apt.publish()
    compose(work, image.treefile, "compose bench-hello 1.1", EPOCH + 86400)
    return ostree(image.repo, "rev-parse", image.ref).strip(), deb


def upgrade_bench(work: Path) -> UpgradeResult:
    image = compose_hello_1_0(work)
    repo, ref, old = image.repo, image.ref, image.old
    with serve_directory(repo) as server:
        full = []
        for name in ("plain", "delta"):
            server.reset_stats()
            init(work / name, server.url, ref, f"init (full pull) {name}")
            full.append(Transfer.of(server.stats))
        new, deb = compose_hello_1_1(work, image)
        upgrade = [*APT_OSTREE, "upgrade", "--sysroot"]
        plain = counted(server, "upgrade, no static delta", [*upgrade, str(work / "plain")])
        timed(
            "compose static-delta",
            [*APT_OSTREE, "compose", "static-delta", "--repo", str(repo), ref],
        )
        delta = counted(server, "upgrade, static delta", [*upgrade, str(work / "delta")])
    for name in ("plain", "delta"):
        head = deployments(work / name)[0]["checksum"]
        if head != new:
            raise SystemExit(f"upgrade {name}: deployed {head}, expected {new}")
    if not delta.of_kind("deltas"):
        raise SystemExit("upgrade with a static delta fetched nothing under deltas/")
    files, size = changed_objects(repo, old, new)
    full_pull = min(full, key=lambda t: t.bytes)
    return UpgradeResult(full_pull, plain, delta, files, size, deb.stat().st_size, old, new)


# ---- 3. db diff ----


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


WRITE_RE = re.compile(
    r'^\d+\s+(?:(?:open|openat|creat)\(.*"(?P<open>[^"]+)".*(?:O_WRONLY|O_RDWR|O_CREAT)'
    r"|(?:mkdir|mkdirat|link|linkat|symlink|symlinkat|rename|renameat2?|unlink|unlinkat)"
    r'\(.*?"(?P<other>[^"]+)")'
)


def written_paths(argv: Sequence[str], log: Path) -> list[str]:
    """Paths that argv opens for writing, creates, links, renames or removes (strace); calls
    that failed (libostree's mkdirat of the repo's existing tmp/, EEXIST) wrote nothing."""
    subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(log), *argv],
        capture_output=True,
        check=True,
    )
    found = []
    for line in log.read_text().splitlines():
        m = WRITE_RE.match(line)
        path = m and (m["open"] or m["other"])
        failed = re.search(r"= -1 E[A-Z]+", line)
        if path and not failed and not path.startswith("/dev/"):
            found.append(path)
    return found


@dataclass(frozen=True)
class DiffResult:
    diff_seconds: float
    checkout_seconds: float
    sysroot_unchanged: bool
    written: tuple[str, ...]
    output: str


def db_diff_bench(work: Path, sysroot: Path, old: str, new: str, rounds: int) -> DiffResult:
    argv = [*APT_OSTREE, "db", "diff", "--sysroot", str(sysroot), old, new]
    before = snapshot(sysroot)
    diffs = [timed("db diff", argv).seconds for _ in range(rounds)]
    written = written_paths(argv, work / "strace.log")
    unchanged = snapshot(sysroot) == before
    output = cli("db", "diff", "--sysroot", sysroot, old, new)
    checkouts = []
    for n in range(rounds):
        dest = work / f"checkout{n}"
        repo = sysroot / "ostree/repo"
        os.sync()
        checkouts.append(
            timed(
                "ostree checkout", ["ostree", f"--repo={repo}", "checkout", new, str(dest)]
            ).seconds
        )
        shutil.rmtree(dest)
    return DiffResult(
        statistics.median(diffs),
        statistics.median(checkouts),
        unchanged,
        tuple(written),
        output,
    )


# ---- 2. rollback ----


def fake_os(tree: Path) -> None:
    modules = tree / "usr/lib/modules" / KVER
    modules.mkdir(parents=True)
    (modules / "vmlinuz").write_bytes(os.urandom(4 * MB))
    (modules / "initramfs.img").write_bytes(os.urandom(8 * MB))
    (tree / "usr/lib/os-release").write_text('ID=bench\nNAME="bench"\nVERSION_ID=1\n')
    (tree / "usr/etc").mkdir(parents=True)
    (tree / "usr/etc/hostname").write_text("bench\n")
    for d in ("var", "tmp", "sysroot", "proc", "sys", "dev", "run", "boot"):
        (tree / d).mkdir()


def add_payload(tree: Path, start_mb: int, end_mb: int) -> None:
    per_mb = MB // FILE_SIZE
    for n in range(start_mb * per_mb, end_mb * per_mb):
        folder = tree / "usr/share/bench-payload" / f"{n // 256:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{n:05d}.bin").write_bytes(os.urandom(FILE_SIZE))


def synthetic_repo(work: Path, sizes: Sequence[int]) -> Path:
    """A bare-user repository with ref bench/<N>m for each size: one growing tree."""
    repo, tree = work / "synth-repo", work / "synth-tree"
    subprocess.run(["ostree", "init", f"--repo={repo}", "--mode=bare-user"], check=True)
    fake_os(tree)
    done = 0
    for size in sizes:
        add_payload(tree, done, size)
        done = size
        timed(
            f"ostree commit {size} MB",
            [
                "ostree",
                f"--repo={repo}",
                "commit",
                f"--branch=bench/{size}m",
                f"--subject={size} MB",
                str(tree),
            ],
        )
    shutil.rmtree(tree)
    ostree(repo, "summary", "-u")
    return repo


def rollback_bench(work: Path, sizes: Sequence[int], rounds: int) -> dict[int, list[float]]:
    repo = synthetic_repo(work, sizes)
    for size in sizes:
        sysroot = work / f"sysroot-{size}m"
        init(sysroot, repo.as_uri(), f"bench/{size}m", f"init {size} MB tree")
        timed(
            f"kargs --append ({size} MB)",
            [*APT_OSTREE, "kargs", "--sysroot", str(sysroot), "--append", "bench=1"],
        )
        if len(deployments(sysroot)) != 2:
            raise SystemExit(f"{sysroot}: expected two deployments")
    times: dict[int, list[float]] = {size: [] for size in sizes}
    for n in range(rounds):
        for size in sizes if n % 2 == 0 else reversed(sizes):
            sysroot = work / f"sysroot-{size}m"
            first = deployments(sysroot)[0]["id"]
            os.sync()  # the trees' writes are not the rollback's to flush
            times[size].append(
                timed(
                    f"rollback ({size} MB)", [*APT_OSTREE, "rollback", "--sysroot", str(sysroot)]
                ).seconds
            )
            if deployments(sysroot)[1]["id"] != first:
                raise SystemExit(f"rollback ({size} MB) did not swap the deployments")
    for size in sizes:
        remove_tree(work / f"sysroot-{size}m")
    return times


# ---- report ----


def pull_row(label: str, t: Transfer, full: int, changed: int, deb: int, goal: str) -> str:
    return (
        f"| {label} | {mib(t.bytes)} | {t.requests} | {t.bytes / full:.4f} |"
        f" {t.bytes / changed:.2f}x | {t.bytes / deb:.1f}x | {goal} |"
    )


def report(up: UpgradeResult, rb: dict[int, list[float]], diff: DiffResult, rounds: int) -> None:
    rb_rounds = len(next(iter(rb.values())))
    small, large = (statistics.median(rb[s]) for s in sorted(rb))
    full = up.full.bytes
    goal = f"<= 2x ({mib(2 * up.changed_bytes)})"
    lines = [
        "## Deployments (issue 3)",
        "",
        f"{machine_line()}; medians of {rounds} round(s) ({rb_rounds} for rollback).",
        "",
        "### Upgrade bytes: one small package changed in examples/minimal-bookworm.yaml",
        "",
        f"bench-hello 1.0 -> 1.1 (one {PAYLOAD_SIZE // 1024} kiB file of random bytes changed;"
        f" .deb {mib(up.deb_bytes)}). `ostree diff` between the commits: {up.changed_files}"
        f" files added or modified, {mib(up.changed_bytes)} of compressed content objects.",
        "Bytes are HTTP body bytes served on loopback (tests.support.httpd).",
        "",
        "| pull | bytes | requests | of full pull | of changed files | of the .deb | goal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        pull_row("baseline: full pull (`init`)", up.full, full, up.changed_bytes, up.deb_bytes, ""),
        pull_row(
            "`upgrade`, no static delta", up.plain, full, up.changed_bytes, up.deb_bytes, goal
        ),
        pull_row("`upgrade`, static delta", up.delta, full, up.changed_bytes, up.deb_bytes, goal),
        "",
        f"By kind: no static delta: {up.plain.breakdown()}; static delta: {up.delta.breakdown()}.",
        "",
        "### Rollback time against tree size",
        "",
        "Synthetic trees (fake kernel, random 256 kiB files), each deployed twice (`init`, then"
        " `kargs --append`) in its own folder sysroot; `sync` before each timed `rollback`.",
        "",
        "| tree | rollback seconds | ratio | goal |",
        "| --- | --- | --- | --- |",
    ]
    (s_mb, l_mb) = sorted(rb)
    lines += [
        f"| {s_mb} MB | {small:.2f} | 1.00 | |",
        f"| {l_mb} MB | {large:.2f} | {large / small:.2f} | <= 1.2 |",
        "",
        "### `db diff` between the two composed commits",
        "",
        "| measure | seconds | ratio |",
        "| --- | --- | --- |",
        f"| baseline: `ostree checkout` of the new commit | {diff.checkout_seconds:.2f} | 1.00 |",
        f"| `db diff` OLD NEW | {diff.diff_seconds:.2f} |"
        f" {diff.diff_seconds / diff.checkout_seconds:.2f} |",
        "",
        f"No checkout: sysroot {'unchanged' if diff.sysroot_unchanged else 'CHANGED'}"
        " (every path, size and mtime, repo tmp/ and deploy dirs included); files written"
        f" under strace: {len(diff.written)}"
        + (f" ({', '.join(diff.written[:5])})" if diff.written else "")
        + ".",
    ]
    text = "\n".join(lines)
    print(text)
    print(diff.output)
    write_section("deploy", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rollback-rounds", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-deploy-", dir="/var/tmp"))
    print(f"scratch: {scratch}")
    try:
        (scratch / "upgrade").mkdir()
        up = upgrade_bench(scratch / "upgrade")
        diff = db_diff_bench(scratch, scratch / "upgrade/plain", up.old, up.new, args.rounds)
        for name in ("plain", "delta"):
            remove_tree(scratch / "upgrade" / name)
        rb = rollback_bench(scratch, SIZES, args.rollback_rounds)
    finally:
        if not args.keep:
            for sysroot in SYSROOTS:
                remove_tree(scratch / sysroot)
            shutil.rmtree(scratch, ignore_errors=True)
    report(up, rb, diff, args.rounds)


if __name__ == "__main__":
    main()
