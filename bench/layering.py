"""Layering benchmark (issue 4): `install` against apt-get, image size, re-apply on upgrade.

Each release (bench.common.EXAMPLES: trixie's examples/minimal.yaml, bookworm's
examples/minimal-bookworm.yaml) is measured on its own, one after the other, its baseline in
its own run. Images: the release's example plus a one-line stamp file (`add-files`, so a
second version differs by one small file), and a large image: the same plus big documentation
packages (LARGE_PACKAGES, many small files; metapackages, so that each release gets its own
openjdk and python3 documentation), about 3x the minimal tree in bytes and files. Both are
composed into one archive repository, served on loopback HTTP, and deployed by `init` into
folder sysroots. Neither treefile has `repos`: the images carry the host's Debian sources for
the example's suite (mmdebstrap writes them), and the client resolves against the
deployment's /etc/apt.

1. `install htop` on the minimal image with its .debs already in the machine's cache
   (a first install fills it; each round is `uninstall`, then the timed `install`), against
   `apt-get install -y htop` in a plain Debian root made from the same commit (`ostree
   checkout` with copies, /usr/etc moved to /etc, /var from the image's tmpfiles.d lines, the
   apt lists and the same .debs copied in), run in bubblewrap without network.
   Goal: apt-ostree <= 1.5x apt-get.
2. The same `install htop` on the large image. Goal: large/minimal <= 1.2x.
3. `upgrade` to a second version of the minimal base (stamp changed) re-applies htop.
   Goal: no .deb downloaded (no "packages to download" in the output, the cache's files
   unchanged: names, sizes, mtimes, inodes).

Where: the sysroots and the baseline's root are on a file system of their own, a freshly made
ext4 on a loop device (DISK_SIZE, sparse; one per release), as a machine's root partition
made from `compose image` is; deploying is a hardlink farm of every file and directory of the
tree, and on a large, long-used shared file system a directory can cost ten times more to
make (measured here: 2400 mkdirs 0.09-1.25 s on the host's ext4, 0.06 s on a fresh one; each
run prints its own probe). The daemon rounds and the baseline are repeated on the host's own
file system for comparison.

Rounds: 3 per release by default (5 when one release was measured: two releases take about
twice as long, the composes and the first pulls included).

Run as root:
.venv/bin/python -m bench.layering [--rounds N] [--release R ...] [--cachedir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from apt_ostree.ostree import remove_sysroot as remove_tree
from bench.common import (
    APT_OSTREE,
    ROOT,
    Release,
    add_release_option,
    chosen_releases,
    commit_packages,
    machine_line,
    write_section,
)
from bench.deploy import compose, deployments, init, mib, ostree
from tests.daemon.bus import PrivateBus, start_bus, start_daemon, stop, wait_idle
from tests.support.httpd import serve_directory

EPOCH = 1700000000
PACKAGE = "htop"
BINARY = "/usr/bin/htop"
LARGE_PACKAGES = (  # default-jdk-doc: openjdk-17-doc in bookworm, openjdk-21-doc in trixie
    "default-jdk-doc",
    "python3-doc",
    "fonts-noto-extra",
    "fonts-noto-ui-extra",
    "fonts-noto-cjk",
)
STAMP = "/usr/share/bench-layering/stamp"
IMAGES = ("minimal", "large")
DISK_SIZE = "16G"
PLACES = ("disk", "host")  # a fresh ext4 of its own; the host's file system
STEP_RE = re.compile(r"^\s+(?P<title>.+): done in (?P<seconds>[\d.]+) s$")
DOWNLOAD_RE = re.compile(r"^\s+downloading: (?P<done>[\d.]+ [kMG]?B) / (?P<total>[\d.]+ [kMG]?B)")
TO_DOWNLOAD_RE = re.compile(r"^\s+(?P<n>\d+) packages to download \((?P<size>[^)]+)\)")
UNITS = {"B": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


# ---- helpers ----


def size_of(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


@dataclass(frozen=True)
class Run:
    """One timed command: wall time, its output, and the step times apt-ostree printed."""

    seconds: float
    output: str
    steps: dict[str, float] = field(default_factory=dict)

    def step(self, *prefixes: str) -> float:
        return sum(s for title, s in self.steps.items() if title.startswith(prefixes))

    def index_bytes(self) -> float:
        """apt's own count of what the index refresh fetched (each completed run)."""
        total, inside = 0.0, False
        for line in self.output.splitlines():
            if line.startswith("==> Updating package indices"):
                inside = True
            elif "Updating package indices: done" in line:
                inside = False
            elif inside and (m := DOWNLOAD_RE.match(line)) and m["done"] == m["total"]:
                total += size_of(m["done"])
        return total

    def deb_bytes(self) -> float:
        """What the output says was downloaded in .debs (apt-ostree prints nothing when all
        were cached)."""
        return sum(
            size_of(m["size"])
            for line in self.output.splitlines()
            if (m := TO_DOWNLOAD_RE.match(line))
        )


def run_timed(label: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Run argv to completion (after a sync, so earlier writes are not its to flush), time it,
    keep its output; fail loudly with the output when it fails."""
    os.sync()
    start = time.monotonic()
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, env=env)
    seconds = time.monotonic() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{label}: {argv[0]} exited {proc.returncode}\n{output[-3000:]}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    steps: dict[str, float] = {}
    for line in output.splitlines():
        if m := STEP_RE.match(line):
            steps[m["title"]] = steps.get(m["title"], 0.0) + float(m["seconds"])
    return Run(seconds, output, steps)


def client(verb: str, sysroot: Path, *args: str) -> list[str]:
    return [*APT_OSTREE, verb, "--sysroot", str(sysroot), *args]


def tree_size(repo: Path, ref: str) -> tuple[int, int]:
    """(files, bytes) of the regular files in a commit."""
    files = total = 0
    for line in ostree(repo, "ls", "-R", ref).splitlines():
        fields = line.split()
        if fields and fields[0].startswith("-"):
            files += 1
            total += int(fields[3])
    return files, total


def str_list(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def cache_dir(sysroot: Path) -> Path:
    return sysroot / "ostree/deploy/bench/var/cache/apt-ostree"


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under folder: size, mtime and inode."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


# ---- images ----


def write_treefiles(work: Path, stamp: str, rel: Release) -> dict[str, Path]:
    """The release's example plus a stamp file, and the same plus LARGE_PACKAGES (no `repos`:
    the host's sources for its suite are used and written into the images, no mirror named
    here)."""
    (work / "stamp").write_text(stamp + "\n")
    common = {"include": str(rel.treefile), "add-files": [["stamp", STAMP]]}
    paths = {}
    for name, extra in (("minimal", []), ("large", list(LARGE_PACKAGES))):
        data = {**common, "ref": f"bench/{name}", "packages": extra}
        paths[name] = work / f"{name}.json"
        paths[name].write_text(json.dumps(data, indent=2))
    return paths


# ---- the baseline: apt-get in a plain Debian root ----


def debian_root(sysroot: Path, commit: str, dest: Path) -> None:
    """The commit as a normal Debian root for apt: copied files, /etc, /var, apt lists
    (those apt-ostree fetched for the same sources) and the cached .debs."""
    repo = sysroot / "ostree/repo"
    subprocess.run(["ostree", f"--repo={repo}", "checkout", "-C", commit, str(dest)], check=True)
    (dest / "usr/etc").rename(dest / "etc")
    # the image's tmpfiles.d lines make /var as at boot (var/lib/dpkg -> the sysimage db), by
    # the image's own systemd-tmpfiles: the host's may not know a newer release's line types
    # (bookworm's 252 stops at trixie's `$` modifier, systemd 256)
    subprocess.run(in_root(dest, "systemd-tmpfiles", "--create", "--prefix=/var"), check=True)
    cache = cache_dir(sysroot)
    lists = dest / "var/lib/apt/lists"
    for f in cache.glob("apt/*/var/lib/apt/lists/*"):
        if f.is_file() and f.name != "lock":
            shutil.copy2(f, lists / f.name)
    for deb in (cache / "archives").glob("*.deb"):
        shutil.copy2(deb, dest / "var/cache/apt/archives" / deb.name)


def in_root(root: Path, *argv: str) -> list[str]:
    """argv run by the root's own tools, in bubblewrap with root as /, without network."""
    return [
        "bwrap",
        "--bind", str(root), "/",
        "--proc", "/proc",
        "--dev", "/dev",
        "--tmpfs", "/tmp",
        "--tmpfs", "/run",
        "--unshare-net",
        "--die-with-parent",
        "--setenv", "DEBIAN_FRONTEND", "noninteractive",
        "--setenv", "LC_ALL", "C.UTF-8",
        "--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin",
        *argv,
    ]  # fmt: skip


def apt_get_argv(root: Path) -> list[str]:
    return in_root(root, "apt-get", "install", "-y", PACKAGE)


def new_packages(apt_output: str) -> set[str]:
    """The names apt-get lists under "The following NEW packages will be installed"."""
    names: set[str] = set()
    lines = iter(apt_output.splitlines())
    for line in lines:
        if line.startswith("The following NEW packages"):
            for item in lines:
                if not item.startswith("  "):
                    break
                names.update(item.split())
    return names


def baseline_round(place: Path, sysroot: Path, commit: str, label: str) -> Run:
    root = place / "baseline-root"
    shutil.rmtree(root, ignore_errors=True)
    debian_root(sysroot, commit, root)
    result = run_timed(label, apt_get_argv(root))
    if "Need to get 0 B/" not in result.output:
        raise SystemExit(f"{label} downloaded something:\n{result.output[-2000:]}")
    cached = {d.name.split("_", 1)[0] for d in (cache_dir(sysroot) / "archives").glob("*.deb")}
    if new_packages(result.output) != cached:
        raise SystemExit(f"{label} installed {new_packages(result.output)}, apt-ostree {cached}")
    shutil.rmtree(root)
    return result


# ---- the rounds ----


@dataclass
class Results:
    release: Release
    extra: list[str] = field(default_factory=list)  # packages of the large image only
    trees: dict[str, tuple[int, int]] = field(default_factory=dict)
    first: dict[str, Run] = field(default_factory=dict)
    installs: dict[str, list[Run]] = field(default_factory=dict)  # through apt-ostreed
    idle: dict[str, list[float]] = field(default_factory=dict)  # install until the daemon idles
    inproc: dict[str, list[Run]] = field(default_factory=dict)  # `--sysroot DIR`, in-process
    baselines: dict[str, list[Run]] = field(default_factory=dict)
    host_installs: dict[str, list[Run]] = field(default_factory=dict)  # the host's file system
    host_baselines: dict[str, list[Run]] = field(default_factory=dict)
    mkdirs: dict[str, list[float]] = field(default_factory=dict)  # MKDIRS directories, by place
    upgrade: Run | None = None
    cache_unchanged: bool = False
    upgrade_checks: list[str] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)  # 1-minute load average, each round


@contextmanager
def dedicated_fs(mountpoint: Path) -> Iterator[Path]:
    """A fresh ext4 of DISK_SIZE (sparse image, inode tables written at once so that no
    background initialisation runs during the rounds) mounted on a loop device at mountpoint;
    unmounted (the loop device detaches with it) and deleted afterwards."""
    image = mountpoint.with_suffix(".img")
    subprocess.run(["truncate", "-s", DISK_SIZE, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    str(image)], check=True)  # fmt: skip
    mountpoint.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        image.unlink()


@contextmanager
def daemons(work: Path) -> Iterator[dict[tuple[str, str], PrivateBus]]:
    """apt-ostreed for each folder sysroot (each image in each place), each on a private
    system bus of its own (root's calls need no polkit)."""
    buses: dict[tuple[str, str], PrivateBus] = {}
    procs = []
    try:
        for place in PLACES:
            for name in IMAGES:
                bus = buses[place, name] = start_bus()
                procs.append(bus.proc)
                config = work / f"{place}-{name}-apt-ostreed.conf"
                config.write_text("[Daemon]\nIdleExitTimeout=0\n")
                log = work / f"{place}-{name}-daemon.log"
                procs.append(start_daemon(bus, work / place / name, config, log).proc)
        yield buses
    finally:
        for proc in reversed(procs):
            stop(proc)


def daemon_round(label: str, bus: PrivateBus) -> tuple[Run, float]:
    """uninstall, then the timed install through apt-ostreed: the client's run to its
    result, and the time until the daemon is idle again (its worker's cleanup done)."""
    run_timed(f"uninstall {PACKAGE} ({label}, daemon)", [*APT_OSTREE, "uninstall", PACKAGE],
              env=bus.env())  # fmt: skip
    wait_idle(bus, timeout=600)
    start = time.monotonic()
    run = run_timed(f"install {PACKAGE} ({label}, daemon)", [*APT_OSTREE, "install", PACKAGE],
                    env=bus.env())  # fmt: skip
    wait_idle(bus, timeout=600)
    return run, time.monotonic() - start


MKDIRS = 2400  # about the directories of the large tree


def time_mkdirs(folder: Path) -> float:
    """Seconds to make MKDIRS directories, 50 folders of 48 (as a tree's are nested), after a
    sync; removed again."""
    top = folder / "mkdir-probe"
    os.sync()
    start = time.monotonic()
    top.mkdir()
    for i in range(MKDIRS - 1):
        (top / str(i % 50) / (str(i) if i >= 50 else "")).mkdir()
    seconds = time.monotonic() - start
    shutil.rmtree(top)
    return seconds


def install_rounds(work: Path, commits: dict[str, str], rounds: int, res: Results) -> None:
    disk, host = work / "disk", work / "host"
    for name in IMAGES:
        res.first[name] = run_timed(
            f"install {PACKAGE} ({name}, first)", client("install", disk / name, PACKAGE)
        )
        res.installs[name], res.baselines[name], res.inproc[name], res.idle[name] = [], [], [], []
        res.host_installs[name], res.host_baselines[name] = [], []
        # the same sysroot (caches filled) on the host's file system
        subprocess.run(["cp", "-a", str(disk / name), str(host / name)], check=True)
    with daemons(work) as buses:
        for n in range(rounds):
            res.loads.append(os.getloadavg()[0])
            for place in PLACES:
                res.mkdirs.setdefault(place, []).append(time_mkdirs(work / place))
            for name in IMAGES if n % 2 == 0 else reversed(IMAGES):
                inproc_round(disk / name, name, res)
                res.baselines[name].append(baseline_round(
                    disk, disk / name, commits[name], f"apt-get install {PACKAGE} ({name})"
                ))  # fmt: skip
                run, idle = daemon_round(name, buses["disk", name])
                res.installs[name].append(run)
                res.idle[name].append(idle)
                res.host_baselines[name].append(baseline_round(
                    host, host / name, commits[name], f"apt-get install {PACKAGE} ({name}, host)"
                ))  # fmt: skip
                res.host_installs[name].append(
                    daemon_round(f"{name}, host", buses["host", name])[0]
                )
    check_no_downloads(res)


def inproc_round(sysroot: Path, name: str, res: Results) -> None:
    """uninstall, then the timed install with `--sysroot` (in-process, the cleanup inside)."""
    run_timed(f"uninstall {PACKAGE} ({name})", client("uninstall", sysroot, PACKAGE))
    res.inproc[name].append(
        run_timed(f"install {PACKAGE} ({name}, --sysroot)", client("install", sysroot, PACKAGE))
    )


def check_no_downloads(res: Results) -> None:
    for name in IMAGES:
        runs = res.installs[name] + res.inproc[name] + res.host_installs[name]
        cached = [r for r in runs if r.deb_bytes()]
        if cached:
            raise SystemExit(f"{name}: a timed install downloaded .debs:\n{cached[0].output}")


def upgrade_round(work: Path, treefile: Path, res: Results) -> None:
    """A second version of the minimal base, then `upgrade` with htop layered."""
    sysroot = work / "disk/minimal"
    before = snapshot(cache_dir(sysroot) / "archives")
    (work / "stamp").write_text("2\n")
    compose(work, treefile, "compose minimal, stamp 2", EPOCH + 86400)
    new = ostree(work / "repo", "rev-parse", "bench/minimal").strip()
    res.upgrade = run_timed("upgrade (re-applies htop)", client("upgrade", sysroot))
    res.cache_unchanged = snapshot(cache_dir(sysroot) / "archives") == before
    head = deployments(sysroot)[0]
    if head.get("base-checksum") != new:
        res.upgrade_checks.append(f"deployed base {head.get('base-checksum')}, expected {new}")
    if PACKAGE not in str_list(head.get("requested-packages")):
        res.upgrade_checks.append(f"{PACKAGE} no longer requested")
    if not any(p.startswith(PACKAGE) for p in str_list(head.get("packages"))):
        res.upgrade_checks.append(f"{PACKAGE} not in the deployed commit's packages")
    listed = subprocess.run(
        ["ostree", f"--repo={sysroot / 'ostree/repo'}", "ls", str(head["checksum"]), BINARY],
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        res.upgrade_checks.append(f"no {BINARY} in the deployed commit")


def bench(work: Path, rounds: int, rel: Release) -> Results:
    res = Results(rel)
    treefiles = write_treefiles(work, "1", rel)
    for name in IMAGES:
        compose(work, treefiles[name], f"compose {name}", EPOCH)
    repo = work / "repo"
    commits = {name: ostree(repo, "rev-parse", f"bench/{name}").strip() for name in IMAGES}
    res.trees = {name: tree_size(repo, commits[name]) for name in IMAGES}
    names = {name: {p[0] for p in commit_packages(repo, commits[name])} for name in IMAGES}
    res.extra = sorted(names["large"] - names["minimal"])
    (work / "host").mkdir()
    with serve_directory(repo) as server, dedicated_fs(work / "disk"):
        try:
            for name in IMAGES:
                init(work / "disk" / name, server.url, f"bench/{name}", f"init {name}")
            install_rounds(work, commits, rounds, res)
            upgrade_round(work, treefiles["minimal"], res)
        finally:  # the dedicated file system goes as a whole
            for name in IMAGES:
                remove_tree(work / "host" / name)
    return res


# ---- report ----


def host_fs_size() -> str:
    st = os.statvfs(ROOT)
    total = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    return f"{total / 1024**3:.0f} GiB, {100 * used / (used + avail):.0f}% used"  # as df


def med(runs: Sequence[Run], *prefixes: str) -> float:
    return statistics.median(r.step(*prefixes) if prefixes else r.seconds for r in runs)


# step titles (prefixes) printed by apt-ostree; "Checking REMOTE:REF for updates" and
# "Pulling ..." are the upgrade's pull ("Checking out base" is not)
PULL = ("Checking bench:", "Pulling")
BREAKDOWN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pull", PULL),
    ("index refresh", ("Updating package indices",)),
    ("resolve", ("Resolving packages",)),
    ("checkout base", ("Checking out base",)),
    ("dpkg", ("Unpacking",)),
    ("scripts", ("Running maintainer scripts",)),
    ("commit", ("Writing the layered commit",)),
    ("deploy", ("Deploying",)),
)


def breakdown_row(label: str, runs: Sequence[Run]) -> str:
    parts = [med(runs, *prefixes) for _, prefixes in BREAKDOWN]
    total = med(runs)
    return (
        f"| {label} | {total:.2f} | "
        + " | ".join(f"{p:.2f}" for p in parts)
        + (f" | {total - sum(parts):.2f} |")
    )


@dataclass(frozen=True)
class Summary:
    """The medians of one release's rounds, in seconds."""

    base: float  # apt-get, minimal
    mini: float  # through apt-ostreed, to its result
    idle_m: float  # through apt-ostreed, until it is idle
    inproc_m: float  # --sysroot
    large: float
    idle_l: float
    inproc_l: float
    base_l: float
    h_base: float  # the same on the host's file system
    h_mini: float
    h_large: float


def summary(res: Results) -> Summary:
    idle_m, idle_l = (statistics.median(res.idle[n]) for n in IMAGES)
    return Summary(
        base=med(res.baselines["minimal"]),
        mini=med(res.installs["minimal"]),
        idle_m=idle_m,
        inproc_m=med(res.inproc["minimal"]),
        large=med(res.installs["large"]),
        idle_l=idle_l,
        inproc_l=med(res.inproc["large"]),
        base_l=med(res.baselines["large"]),
        h_base=med(res.host_baselines["minimal"]),
        h_mini=med(res.host_installs["minimal"]),
        h_large=med(res.host_installs["large"]),
    )


# a table row: its label, (seconds, ratio) from a release's medians, the goal
Row = tuple[str, Callable[[Summary], tuple[float, str]], str]
DISK_ROWS: tuple[Row, ...] = (
    ("baseline: `apt-get install` (minimal)", lambda s: (s.base, "1.00"), ""),
    (
        "`apt-ostree install` through apt-ostreed (minimal), to its result",
        lambda s: (s.mini, f"{s.mini / s.base:.2f}x apt-get"),
        "<= 1.5x",
    ),
    (
        "same, until the daemon is idle (its cleanup done)",
        lambda s: (s.idle_m, f"{s.idle_m / s.base:.2f}x apt-get"),
        "",
    ),
    (
        "`apt-ostree install --sysroot` (in-process, cleanup inside)",
        lambda s: (s.inproc_m, f"{s.inproc_m / s.base:.2f}x apt-get"),
        "",
    ),
    (
        "`apt-ostree install` through apt-ostreed (large), to its result",
        lambda s: (s.large, f"{s.large / s.mini:.2f}x minimal"),
        "<= 1.2x",
    ),
    (
        "same, until the daemon is idle",
        lambda s: (s.idle_l, f"{s.idle_l / s.idle_m:.2f}x minimal"),
        "",
    ),
    (
        "`apt-ostree install --sysroot` (large)",
        lambda s: (s.inproc_l, f"{s.inproc_l / s.inproc_m:.2f}x minimal"),
        "",
    ),
    (
        "baseline: `apt-get install` (large)",
        lambda s: (s.base_l, f"{s.base_l / s.base:.2f}x minimal"),
        "",
    ),
)
HOST_ROWS: tuple[Row, ...] = (
    ("baseline: `apt-get install` (minimal)", lambda s: (s.h_base, "1.00"), ""),
    (
        "`apt-ostree install` through apt-ostreed (minimal)",
        lambda s: (s.h_mini, f"{s.h_mini / s.h_base:.2f}x apt-get"),
        "<= 1.5x",
    ),
    (
        "`apt-ostree install` through apt-ostreed (large)",
        lambda s: (s.h_large, f"{s.h_large / s.h_mini:.2f}x minimal"),
        "<= 1.2x",
    ),
)


def side_by_side(header: str, rows: Sequence[Row], results: Sequence[Results]) -> list[str]:
    """A table with a seconds and a ratio column for each release, the goal last."""
    sums = [summary(r) for r in results]
    names = [r.release.name for r in results]
    lines = [
        f"| {header} | " + " | ".join(f"{n}: seconds | {n}: ratio" for n in names) + " | goal |",
        "| --- | " + " | ".join("--- | ---" for _ in names) + " | --- |",
    ]
    for label, cell, goal in rows:
        cells = " | ".join(f"{v:.2f} | {ratio}" for v, ratio in map(cell, sums))
        lines.append(f"| {label} | {cells} | {goal} |")
    return lines


def images_line(res: Results) -> str:
    (m_files, m_bytes), (l_files, l_bytes) = res.trees["minimal"], res.trees["large"]
    return (
        f"{res.release.name}: `minimal` ({res.release.example} and a stamp file) {m_files}"
        f" files, {mib(m_bytes)}; `large` {l_files} files, {mib(l_bytes)}:"
        f" {l_bytes / m_bytes:.2f}x the bytes, {l_files / m_files:.2f}x the files"
        f" ({len(res.extra)} more packages: {', '.join(res.extra)})."
    )


def breakdown_rows(res: Results) -> list[str]:
    name = res.release.name
    return [
        breakdown_row(f"{name}: minimal, apt-ostreed", res.installs["minimal"]),
        breakdown_row(f"{name}: large, apt-ostreed", res.installs["large"]),
        breakdown_row(f"{name}: minimal, --sysroot", res.inproc["minimal"]),
        breakdown_row(f"{name}: large, --sysroot", res.inproc["large"]),
        breakdown_row(
            f"{name}: minimal, apt-ostreed, host file system", res.host_installs["minimal"]
        ),
        breakdown_row(f"{name}: large, apt-ostreed, host file system", res.host_installs["large"]),
        breakdown_row(f"{name}: upgrade (minimal, re-apply, --sysroot)", [upgrade_of(res)]),
    ]


def upgrade_of(res: Results) -> Run:
    assert res.upgrade is not None
    return res.upgrade


def upgrade_table(results: Sequence[Results]) -> list[str]:
    """The upgrade checks, a column for each release."""
    rows: list[tuple[str, Callable[[Results], str], str]] = [
        (".debs downloaded (apt-ostree's output)", lambda r: mib(upgrade_of(r).deb_bytes()), "0"),
        (
            "the cache's .debs unchanged (names, sizes, mtimes, inodes)",
            lambda r: "yes" if r.cache_unchanged else "NO",
            "yes",
        ),
        (
            "index refresh fetched (apt's counter, not .debs)",
            lambda r: mib(upgrade_of(r).index_bytes()),
            "",
        ),
        (
            f"{PACKAGE} still layered on the new base",
            lambda r: "yes" if not r.upgrade_checks else "NO: " + "; ".join(r.upgrade_checks),
            "yes",
        ),
    ]
    return [
        "| measure | " + " | ".join(r.release.name for r in results) + " | goal |",
        "| --- | " + " | ".join("---" for _ in results) + " | --- |",
        *(f"| {label} | {' | '.join(map(cell, results))} | {goal} |" for label, cell, goal in rows),
    ]


def report(results: Sequence[Results], rounds: int) -> str:
    def each(fmt: Callable[[Results], str]) -> str:
        return "; ".join(f"{r.release.name} {fmt(r)}" for r in results)

    def upgrade_time(r: Results) -> str:
        up = upgrade_of(r)
        return f"{up.seconds:.2f} s (pull {up.step(*PULL):.2f} s)"

    lines = [
        "## Layering (issue 4)",
        "",
        f"{machine_line()}; medians of {rounds} round(s) per release (3 by default since two"
        " releases are measured, 5 before), each release measured in turn, its baseline in its"
        " own run; 1-minute load average during the rounds (a shared machine): "
        + each(lambda r: f"{min(r.loads):.1f}-{max(r.loads):.1f}")
        + ".",
        "",
        f"Images (`large`: `minimal` plus {', '.join(LARGE_PACKAGES)}):",
        "",
        *(f"- {images_line(r)}" for r in results),
        "",
        f"Layered: `{PACKAGE}` and its dependencies ("
        + each(lambda r: ", ".join(sorted(new_packages(r.baselines["minimal"][0].output))))
        + "), .debs already in the machine's cache (each round: `uninstall`, `sync`, timed"
        " `install`).",
        "Baseline: `apt-get install -y htop` in a plain Debian root of the same release copied"
        " from the same commit (`ostree checkout -C`, /usr/etc as /etc, /var from the image's"
        " tmpfiles.d, apt lists and .debs copied in; bubblewrap, no network), a fresh copy each"
        " round.",
        "apt-ostreed answers when the new deployment is written; its worker then removes the"
        " deployments the change dropped and prunes the repository (what the image weighs, not"
        " what changed) before the daemon takes another transaction (a booted machine stages"
        " the deployment and cleans up at shutdown). `--sysroot` does that cleanup inline."
        " Each daemon round starts with the daemon idle.",
        f"Where: the sysroots and the baseline's root are on an ext4 file system of their own,"
        f" made fresh for each release's run ({DISK_SIZE}, a loop device), as a machine's root"
        " partition made by `compose image` is.",
        "",
        *side_by_side("measure", DISK_ROWS, results),
        "",
        "The same on the host's own file system (the benchmark's folder on a shared ext4 of"
        f" {host_fs_size()}, long in use; libostree deploys a hardlink farm, every directory of"
        " the tree made anew):",
        "",
        f"Making {MKDIRS} directories (medians, one probe per round), the dedicated file system"
        " against the host's: "
        + each(
            lambda r: f"{statistics.median(r.mkdirs['disk']):.3f} s against"
            f" {statistics.median(r.mkdirs['host']):.3f} s (range"
            f" {min(r.mkdirs['host']):.3f}-{max(r.mkdirs['host']):.3f} s)"
        )
        + ".",
        "",
        *side_by_side("measure (host file system)", HOST_ROWS, results),
        "",
        "Where the time of `install` goes (medians of the step times apt-ostree prints; other:"
        " process start, bus round trips, sysroot and origin loading, the lists and cache opened):",
        "",
        "| run | total | " + " | ".join(t for t, _ in BREAKDOWN) + " | other |",
        "| --- | --- | " + " | ".join("---" for _ in BREAKDOWN) + " | --- |",
        *(row for r in results for row in breakdown_rows(r)),
        "",
        "First install (cold cache): "
        + "; ".join(
            f"{r.release.name} {n} {run.seconds:.2f} s, .debs {mib(run.deb_bytes())},"
            f" indices {mib(run.index_bytes())}"
            for r in results
            for n, run in r.first.items()
        )
        + ".",
        "",
        "### Re-applying the layer on upgrade",
        "",
        "The minimal base recomposed with the stamp file changed, then `upgrade`: "
        + each(upgrade_time)
        + ".",
        "",
        *upgrade_table(results),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    add_release_option(parser)
    parser.add_argument("--cachedir", type=Path, help="compose cache to reuse (default: scratch)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-layering-", dir="/var/tmp"))
    print(f"scratch: {scratch}")
    if args.cachedir:
        args.cachedir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for rel in chosen_releases(args):
            print(f"{rel.name} ({rel.suite}):", flush=True)
            work = scratch / rel.name
            work.mkdir()
            if args.cachedir:  # one cache for every release: its apt state is per sources
                (work / "cache").symlink_to(args.cachedir.resolve())
            results.append(bench(work, args.rounds, rel))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    text = report(results, args.rounds)
    print(text)
    write_section("layering", text)


if __name__ == "__main__":
    main()
