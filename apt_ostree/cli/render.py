"""What the CLI prints for a result, and the exit code: one renderer, whether the verb ran
in this process (`--sysroot`) or in apt-ostreed, so the output is the same by construction.

Package diffs use rpm-ostree's block format (`db diff`, `upgrade --preview`), each section only
when it has entries, entries sorted by name then architecture:

    Upgraded:
      hello-aot 1.0 -> 1.1
    Downgraded:
      libfoo 2.0 -> 1.9
    Removed:
      foo-1.0
    Added:
      bar-2.0

Names are written `name:arch` (dpkg's spelling) wherever one name appears with several
architectures among the changes, so each line stays unambiguous. An empty diff renders as the
single line `No package changes.`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from apt_ostree.errors import UsageError
from apt_ostree.system.requests import Request, Upgrade, Verb
from apt_ostree.system.results import (
    CachedUpdate,
    CommitDiff,
    DeploymentInfo,
    Outcome,
    Package,
    PackageChange,
    PackageDiff,
    PackageList,
    Result,
    SearchMatch,
    StatusResult,
    timestamp_text,
)

NO_CHANGES = "No package changes."
EXIT_UNCHANGED = 77


def _names(diff: PackageDiff) -> dict[PackageChange, str]:
    changes = diff.upgraded + diff.downgraded + diff.removed + diff.added
    counts = Counter(c.name for c in changes)
    return {c: f"{c.name}:{c.architecture}" if counts[c.name] > 1 else c.name for c in changes}


def render_diff(diff: PackageDiff, changelogs: Mapping[str, str] | None = None) -> list[str]:
    """Human lines in rpm-ostree's block format (see the module docstring); an upgraded
    package's new changelog entries, when given, follow it, indented."""
    if diff.is_empty():
        return [NO_CHANGES]
    names = _names(diff)
    logs = changelogs or {}
    lines: list[str] = []
    for title, changes in (("Upgraded", diff.upgraded), ("Downgraded", diff.downgraded)):
        if changes:
            lines.append(f"{title}:")
            for c in changes:
                lines.append(f"  {names[c]} {c.old_version} -> {c.new_version}")
                if c.name in logs:
                    lines += [f"    {text}".rstrip() for text in logs[c.name].splitlines()]
                    lines.append("")
    if diff.removed:
        lines.append("Removed:")
        lines += [f"  {names[c]}-{c.old_version}" for c in diff.removed]
    if diff.added:
        lines.append("Added:")
        lines += [f"  {names[c]}-{c.new_version}" for c in diff.added]
    return lines


def render_package_list(packages: Iterable[Package]) -> list[str]:
    """`name version arch` per package, sorted by name, architecture, version."""
    rows = sorted(packages, key=lambda p: (p[0], p[2], p[1]))
    return [f"{name} {version} {arch}" for name, version, arch in rows]


# ---- status ----


def deployment_states(deployments: Sequence[DeploymentInfo]) -> list[str]:
    """booted, staged, pending (ahead of the booted one), rollback; in a folder sysroot the
    first deployment is the default and the others are rollbacks."""
    any_booted = any(d.booted for d in deployments)
    states, seen = [], False
    for i, d in enumerate(deployments):
        seen = seen or d.booted
        if d.staged or d.booted:
            states.append("staged" if d.staged else "booted")
        elif any_booted:
            states.append("rollback" if seen else "pending")
        else:
            states.append("default" if i == 0 else "rollback")
    return states


_TRIAL_TEXT = {
    "pending": "next boot, on trial until the health checks pass",
    "booting": "on trial: not yet blessed",
}


def _rows(d: DeploymentInfo, *, verbose: bool) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if d.timestamp is not None:
        rows.append(("Version", f"{d.version or '-'} ({timestamp_text(d.timestamp)})"))
        if d.base_checksum != d.checksum:
            rows.append(("BaseCommit", d.base_checksum))
    rows.append(("Commit", d.checksum))
    if d.container_image_reference is not None:
        rows.append(("Digest", d.container_image_digest or "(not recorded)"))
    if d.override_commit:
        rows.append(("Pinned to", d.override_commit))
    for title, values in (
        ("LayeredPackages", d.requested_packages),
        ("LocalPackages", d.requested_local_packages),
        ("RemovedBasePackages", d.requested_base_removals),
    ):
        if values:
            rows.append((title, " ".join(values)))
    if d.regenerate_initramfs:
        rows.append(("Initramfs", "regenerated " + " ".join(d.initramfs_args)))
    replaced = d.requested_base_replacements + d.requested_base_local_replacements
    if replaced:
        rows.append(("ReplacedBasePackages", " ".join(replaced)))
    if d.pinned:
        rows.append(("Pinned", "yes"))
    if d.unlocked != "none":
        rows.append(("Unlocked", d.unlocked))
    if d.boot_trial is not None:
        rows.append(("BootTrial", _TRIAL_TEXT.get(d.boot_trial, d.boot_trial)))
    if d.boot_failure is not None:
        rows.append(("BootFailed", d.boot_failure))
    if d.live_commit is not None:
        rows.append(
            ("LiveCommit", d.live_commit + (" (files replaced)" if d.live_replaced else ""))
        )
    if verbose:
        rows += [("OSName", d.osname), ("Id", d.id), ("KernelArgs", " ".join(d.kernel_arguments))]
        if d.package_count is not None:
            rows.append(("Packages", str(d.package_count)))
    return rows


def _update_rows(u: CachedUpdate) -> list[tuple[str, str]]:
    d = u.diff
    counts = [(len(d.upgraded), "upgraded"), (len(d.downgraded), "downgraded"),
              (len(d.removed), "removed"), (len(d.added), "added")]  # fmt: skip
    changes = ", ".join(f"{n} {what}" for n, what in counts if n) or "no package changes"
    return [("Version", u.version or "-"), ("Commit", u.checksum), ("Diff", changes)]


def render_header(result: StatusResult) -> list[str]:
    """rpm-ostree's rows above the deployments: the daemon's state, the automatic update
    policy, and the update the last automatic check found."""
    policy = "disabled" if result.policy == "none" else result.policy
    lines = [f"State: {result.state}", f"AutomaticUpdates: {policy}"]
    if result.cached_update is not None:
        lines.append("AvailableUpdate:")
        lines += [f"{k:>21}: {v}" for k, v in _update_rows(result.cached_update)]
    if result.boot_failures:
        lines.append("BlockedUpdates:")
        lines += [
            f"{'':>21}  {f.base_checksum[:12]} ({f.version or '-'}, {timestamp_text(f.time)}):"
            f" {f.reason}"
            for f in result.boot_failures
        ]
    return lines


def render_status(deployments: Sequence[DeploymentInfo], *, verbose: bool) -> list[str]:
    lines = ["Deployments:"]
    for d, state in zip(deployments, deployment_states(deployments), strict=True):
        mark = "●" if d.booted else " "
        lines.append(f"{mark} {d.origin or '(unknown origin)'} [{state}]")
        lines += [f"{k:>21}: {v}" for k, v in _rows(d, verbose=verbose)]
    return lines


_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\.\*|\[(\d+)\]|\[\*\]|\[(['\"])(.*?)\3\]")


def jsonpath(doc: Any, expr: str) -> list[Any]:
    """What a JSONPath expression selects of `doc`, for `status -J` (a subset: `$`, `.key`,
    `['key']`, `[N]`, `[*]`, `.*`), as rpm-ostree prints it: the list of matches."""
    if not expr.startswith("$"):
        raise UsageError(f"--jsonpath {expr}: expected an expression starting with $")
    nodes, rest = [doc], expr[1:]
    while rest:
        m = _STEP.match(rest)
        if m is None:
            raise UsageError(f"--jsonpath {expr}: cannot read {rest!r}")
        key = m.group(1) if m.group(1) is not None else m.group(4)
        index = m.group(2)
        found: list[Any] = []
        for node in nodes:
            if key is not None and isinstance(node, dict) and key in node:
                found.append(node[key])
            elif index is not None and isinstance(node, list) and int(index) < len(node):
                found.append(node[int(index)])
            elif key is None and index is None:  # a wildcard
                found += list(node.values()) if isinstance(node, dict) else list(node or [])
        nodes, rest = found, rest[m.end() :]
    return nodes


def status(result: StatusResult, args: argparse.Namespace) -> int:
    if args.booted:
        booted = tuple(d for d in result.deployments if d.booted)
        result = replace(result, deployments=booted or result.deployments[:1])
    if args.jsonpath:
        print(json.dumps(jsonpath(result.to_json(), args.jsonpath), indent=2))
    elif args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        lines = render_header(result) + render_status(result.deployments, verbose=args.verbose)
        print("\n".join(lines))
    return 0


# ---- db and search ----


DIFF_FORMATS = ("block", "diff", "json")


def render_diff_lines(diff: PackageDiff) -> list[str]:
    """`db diff --format=diff`: `+name-version` for what comes, `-name-version` for what goes
    (an upgrade is both), sorted by name."""
    names = _names(diff)
    gone = [(names[c], c.old_version) for c in (*diff.removed, *diff.upgraded, *diff.downgraded)]
    come = [(names[c], c.new_version) for c in (*diff.added, *diff.upgraded, *diff.downgraded)]
    rows = [(n, 0, f"-{n}-{v}") for n, v in gone] + [(n, 1, f"+{n}-{v}") for n, v in come]
    return [text for _, _, text in sorted(rows)]


def commit_diff(result: CommitDiff, args: argparse.Namespace) -> int:
    form = "json" if args.json else (args.format or "block")
    if form not in DIFF_FORMATS:
        raise UsageError(f"--format {form}: expected one of {', '.join(DIFF_FORMATS)}")
    if form == "json":
        doc = result.to_wire()
        if not result.changelogs:
            del doc["changelogs"]
        print(json.dumps(doc, indent=2))
        return 0
    print(f"ostree diff commit from: {result.from_checksum}")
    print(f"ostree diff commit to:   {result.to_checksum}")
    if form == "block":
        lines = render_diff(result.diff, result.changelogs)
    else:
        lines = render_diff_lines(result.diff)
    for line in lines:
        print(line)
    return 0


def package_list(result: PackageList, words: tuple[str, ...]) -> int:
    print(f"ostree commit: {result.checksum}")
    if words == ("db", "version"):
        dpkg = next((v for n, v, _ in result.packages if n == "dpkg"), "-")
        print(f"  dpkg database: dpkg {dpkg}, {len(result.packages)} packages")
        return 0
    for line in render_package_list(result.packages):
        print(f"  {line}")
    return 0


def search(matches: Sequence[SearchMatch]) -> int:
    if not matches:
        print("No matches.")
    for m in matches:
        print(f"{m.name} {m.version}: {m.summary}")
    return 0


# ---- mutating verbs ----


def outcome(result: Outcome, *, exit_77: bool) -> int:
    """The lines and package diff of each step; with `exit_77` and nothing changed by the
    last step, its lines go to stderr and the exit code is 77."""
    step: Outcome | None = result
    while step is not None:
        if step.then is None and exit_77 and not step.changed:
            print("\n".join(step.lines), file=sys.stderr)
            return EXIT_UNCHANGED
        for line in step.lines:
            print(line)
        if step.diff is not None:
            print("\n".join(render_diff(step.diff)))
        step = step.then
    return 0


def show(verb: Verb, request: Request, result: Result, args: argparse.Namespace) -> int:
    """Print `result` of `request`; the exit code."""
    if isinstance(result, StatusResult):
        return status(result, args)
    if isinstance(result, CommitDiff):
        return commit_diff(result, args)
    if isinstance(result, PackageList):
        return package_list(result, verb.words)
    if isinstance(result, Outcome):
        exit_77 = bool(getattr(args, "unchanged_exit_77", False))
        # rpm-ostree: --check and --preview exit 77 when there is no update
        if isinstance(request, Upgrade) and (request.check or request.preview):
            exit_77 = True
        return outcome(result, exit_77=exit_77)
    return search(result)
