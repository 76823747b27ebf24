"""Daemon benchmark (issue 5): `status` through apt-ostreed vs in-process, and idle memory.

Baseline, measured in the same run: `apt-ostree status --sysroot DIR` (in-process) on a folder
sysroot with two deployments. Measured: `apt-ostree status` as a client of `apt-ostreed
--sysroot DIR` on a private system bus (the tests' bus and polkitd). Goal: at most 1.5x.
Also reported: the idle daemon's resident memory (VmRSS after the runs).

Run as root: .venv/bin/python -m bench.daemon [--rounds N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from apt_ostree.ostree import remove_sysroot as remove_tree
from bench.common import APT_OSTREE, machine_line, timed, write_section
from bench.deploy import init, synthetic_repo
from tests.daemon.bus import start_bus, start_daemon, start_polkitd, stop


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="apt-ostree-bench-daemon-", dir="/var/tmp"))
    sysroot = work / "sysroot"
    bus = start_bus()
    procs = []
    try:
        repo = synthetic_repo(work, [20])
        init(sysroot, repo.as_uri(), "bench/20m", "init")
        timed("kargs", [*APT_OSTREE, "kargs", "--sysroot", str(sysroot), "--append", "b=1"])
        procs.append(start_polkitd(bus))
        config = work / "apt-ostreed.conf"
        config.write_text("[Daemon]\nIdleExitTimeout=0\n")
        daemon = start_daemon(bus, sysroot, config, work / "daemon.log")
        procs.append(daemon.proc)
        in_process, through = [], []
        local = [*APT_OSTREE, "status", "--sysroot", str(sysroot)]
        remote = [*APT_OSTREE, "status"]
        same = subprocess.run(local, capture_output=True, text=True, check=True).stdout
        via = subprocess.run(remote, capture_output=True, text=True, check=True, env=bus.env())
        if via.stdout != same:
            raise SystemExit("status through the daemon differs from the in-process status")
        for _ in range(args.rounds):
            in_process.append(timed("status --sysroot", local).seconds)
            through.append(timed("status (daemon)", remote, env=bus.env()).seconds)
        rss = rss_kb(daemon.proc.pid)
        base, bus_time = statistics.median(in_process), statistics.median(through)
        ratio = bus_time / base
        write_section(
            "daemon",
            f"""## Daemon (issue 5)

{machine_line()}; median of {args.rounds} rounds; a folder sysroot with two deployments.

| measure | value | ratio | goal |
| --- | --- | --- | --- |
| baseline: `status --sysroot DIR` (in-process) | {base:.2f} s | 1.00 | |
| `status` through apt-ostreed (private bus) | {bus_time:.2f} s | {ratio:.2f}x | <= 1.5x |
| idle apt-ostreed resident memory (VmRSS) | {rss / 1024:.1f} MiB | | reported |
""",
        )
        print(f"status through the daemon: {bus_time / base:.2f}x; idle RSS {rss / 1024:.1f} MiB")
    finally:
        for proc in reversed(procs):
            stop(proc)
        stop(bus.proc)
        shutil.rmtree(bus.dir, ignore_errors=True)
        remove_tree(sysroot)
        remove_tree(work)


if __name__ == "__main__":
    main()
