"""Health checks that decide whether a boot is good (docs/boot.md).

A check is an executable file in one of the health.d folders of a root; a name in
/etc/apt-ostree/health.d masks the same name in /usr/lib/apt-ostree/health.d (the machine's
administrator overrides or disables a packaged check, as systemd's drop-in folders work):

    /etc/apt-ostree/health.d/required.d/NAME   all must exit 0, or the boot is bad
    /etc/apt-ostree/health.d/wanted.d/NAME     failures are reported, the boot still counts
    /usr/lib/apt-ostree/health.d/{required.d,wanted.d}/NAME   defaults shipped by packages

`/etc/apt-ostree/required-units` (and `/usr/lib/apt-ostree/required-units`) list units, one
per line (`#` comments), that must be active: the built-in required check. Checks run in
the order of their names, each with a time limit, with stdin closed; their last lines of
output are kept for `status`. The same runner serves the trial boot's blessing and
`upgrade --verify` (inside a container booted from the new deployment).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from apt_ostree.errors import CommandError
from apt_ostree.run import run

CHECK_DIRS = ("etc/apt-ostree/health.d", "usr/lib/apt-ostree/health.d")
UNIT_LISTS = ("etc/apt-ostree/required-units", "usr/lib/apt-ostree/required-units")
CHECK_TIMEOUT = 120.0  # seconds for one check
UNITS_CHECK = "required-units"


class Kind(StrEnum):
    REQUIRED = "required"
    WANTED = "wanted"


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: Kind
    ok: bool
    output: str  # the last lines of what it printed, or why it did not run

    def line(self) -> str:
        tail = self.output.strip().splitlines()[-1:] or ["(no output)"]
        return f"{self.kind.value} check {self.name} failed: {tail[0]}"


@dataclass(frozen=True)
class HealthReport:
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results if r.kind is Kind.REQUIRED)

    def failures(self, kind: Kind = Kind.REQUIRED) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.kind is kind and not r.ok)

    def reason(self) -> str:
        """One line naming the first failed required check (empty when the boot is good)."""
        failed = self.failures()
        return failed[0].line() if failed else ""


def find_checks(root: Path, kind: Kind) -> list[Path]:
    """The executable checks of `kind` under `root`, by name; /etc masks /usr/lib."""
    found: dict[str, Path] = {}
    for folder in CHECK_DIRS:
        d = root / folder / f"{kind.value}.d"
        for p in sorted(d.iterdir()) if d.is_dir() else ():
            found.setdefault(p.name, p)
    return [p for _, p in sorted(found.items()) if p.is_file() and os.access(p, os.X_OK)]


def required_units(root: Path) -> list[str]:
    units: list[str] = []
    for name in UNIT_LISTS:
        try:
            text = (root / name).read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            unit = line.split("#", 1)[0].strip()
            if unit and unit not in units:
                units.append(unit)
    return units


def _tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_check(argv: Sequence[str], name: str, kind: Kind, timeout: float) -> CheckResult:
    try:
        proc = run(
            argv, check=False, merge=True, timeout=timeout, what=f"{kind.value} check {name}"
        )
    except CommandError as e:  # not there, or no answer in time
        return CheckResult(name, kind, False, str(e))
    out = _tail(proc.stdout)
    if proc.returncode != 0:  # the status after the last line: `status` shows that line
        status = f"exit status {proc.returncode}"
        out = f"{out} ({status})" if out else status
    return CheckResult(name, kind, proc.returncode == 0, out)


def check_units(units: Sequence[str], timeout: float) -> CheckResult:
    """The built-in check: every unit of the required-units lists is active."""
    if not units:
        return CheckResult(UNITS_CHECK, Kind.REQUIRED, True, "")
    result = run_check(["systemctl", "is-active", *units], UNITS_CHECK, Kind.REQUIRED, timeout)
    if result.ok:
        return result
    states = result.output.splitlines()
    bad = [f"{u} is {s}" for u, s in zip(units, states, strict=False) if s.strip() != "active"]
    return CheckResult(UNITS_CHECK, Kind.REQUIRED, False, ", ".join(bad) or result.output)


def run_checks(root: Path = Path("/"), *, timeout: float = CHECK_TIMEOUT) -> HealthReport:
    """Run the checks a system at `root` has (`root` is / on the machine being checked)."""
    results = [check_units(required_units(root), timeout)]
    for kind in Kind:
        for path in find_checks(root, kind):
            results.append(run_check([str(path)], path.name, kind, timeout))
    return HealthReport(tuple(results))


def report_to_wire(report: HealthReport) -> list[dict[str, object]]:
    return [
        {"name": r.name, "kind": r.kind.value, "ok": r.ok, "output": r.output}
        for r in report.results
    ]


def report_from_wire(rows: Sequence[dict[str, object]]) -> HealthReport:
    return HealthReport(
        tuple(
            CheckResult(str(r["name"]), Kind(str(r["kind"])), bool(r["ok"]), str(r["output"]))
            for r in rows
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 -m apt_ostree.boot.health [--json] [--root DIR]`: run the checks, print the
    results (JSON: a list of {name, kind, ok, output}); exit 0 when the required ones pass."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python3 -m apt_ostree.boot.health")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--root", type=Path, default=Path("/"))
    args = parser.parse_args(argv)
    report = run_checks(args.root)
    if args.json:
        print(json.dumps(report_to_wire(report), indent=2))
    else:
        for r in report.results:
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.kind.value:8} {r.name}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
