"""Shared helpers for the benchmarks: timing commands, the Debian releases they compare (each
with its example treefile), and the results file the README links."""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree import keys, ostree, treefile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
APT_OSTREE = [str(Path(sys.executable).parent / "apt-ostree")]
# each release the benchmarks measure, by default all of them in this order, with its example
EXAMPLES = {
    "trixie": ROOT / "examples/minimal.yaml",
    "bookworm": ROOT / "examples/minimal-bookworm.yaml",
}


@dataclass(frozen=True)
class Release:
    """One release's example treefile, and the suite and ref it composes (from the treefile)."""

    name: str
    treefile: Path
    suite: str
    ref: str

    @property
    def example(self) -> str:
        """The treefile as the results name it: `examples/minimal.yaml`."""
        return f"`{self.treefile.relative_to(ROOT)}`"


def release(name: str) -> Release:
    path = EXAMPLES[name]
    loaded = treefile.load(path)
    if loaded.suite is None:
        raise SystemExit(f"{path}: no 'suite' (the benchmarks bootstrap their baseline from it)")
    return Release(name, path, loaded.suite, loaded.ref)


def add_release_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--release",
        action="append",
        choices=tuple(EXAMPLES),
        dest="releases",
        help="a release to measure, with its example treefile; repeat for several"
        f" (default: {' and '.join(EXAMPLES)})",
    )


def chosen_releases(args: argparse.Namespace) -> list[Release]:
    """The releases --release named (each once, in the order given), or all of them."""
    names: list[str] = args.releases or list(EXAMPLES)
    return [release(name) for name in dict.fromkeys(names)]


@dataclass(frozen=True)
class Timing:
    label: str
    seconds: float
    max_rss_kb: int = 0


def timed(
    label: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, quiet: bool = True
) -> Timing:
    """Run argv to completion and time it; fail loudly with its output when it fails."""
    full_env = {**os.environ, **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.monotonic()
    proc = subprocess.run(list(argv), env=full_env, capture_output=quiet, text=True, check=False)
    seconds = time.monotonic() - start
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        output = (proc.stdout or "") + (proc.stderr or "") if quiet else ""
        raise SystemExit(f"{label}: {argv[0]} exited {proc.returncode}\n{output[-3000:]}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return Timing(label, seconds, max(rss, before))


def commit_packages(repo: Path, checksum: str) -> list[tuple[str, str, str]]:
    """(name, version, architecture) of each package in a composed commit (its metadata)."""
    meta = ostree.Repo.open(repo).read_commit(checksum).metadata
    return [(str(n), str(v), str(a)) for n, v, a in meta[keys.PACKAGES]]


def write_section(name: str, markdown: str) -> None:
    """Replace (or add) the section `name` of bench/results.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + block + "\n\n"
    RESULTS.write_text(text)


def machine_line() -> str:
    return f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
