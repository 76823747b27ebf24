"""Shared helpers for the benchmarks: timing commands, and the results file the README links."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
APT_OSTREE = [str(Path(sys.executable).parent / "apt-ostree")]


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
