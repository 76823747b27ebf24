"""What the verbs return: typed results, and their one wire form.

Every result converts to a plain dictionary (`to_wire`) and back (`from_wire`). That
dictionary is what `status --json` prints, what the daemon's worker sends the daemon (JSON),
and what the bus carries (`a{sv}`, with the D-Bus type of every key in `WIRE_TYPES`; a key
whose value is None is left out, as D-Bus has no null). So a result rendered by the CLI is the
same whether the verb ran in its own process or in apt-ostreed.

Deployments use rpm-ostree's key names (`status --json`); package changes those of `db diff
--json` (`name`, `architecture`, `old-version`, `new-version`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Wire = dict[str, Any]
Package = tuple[str, str, str]  # name, version, architecture

# The D-Bus type of every key of every wire dictionary. A key means the same in each.
WIRE_TYPES: Mapping[str, str] = {
    # deployments (status --json)
    "id": "s",
    "osname": "s",
    "checksum": "s",
    "base-checksum": "s",
    "version": "s",
    "timestamp": "x",
    "origin": "s",
    "override-commit": "s",
    "booted": "b",
    "staged": "b",
    "pinned": "b",
    "unlocked": "s",
    "live-commit": "s",
    "live-replaced": "b",
    "packages": "as",
    "requested-packages": "as",
    "requested-local-packages": "as",
    "base-removals": "as",
    "requested-base-removals": "as",
    "requested-base-replacements": "as",
    "base-local-replacements": "as",
    "requested-base-local-replacements": "as",
    "kernel-arguments": "as",
    "regenerate-initramfs": "b",
    "initramfs-args": "as",
    "package-count": "u",
    "container-image-reference": "s",
    "container-image-reference-digest": "s",
    "boot-trial": "s",
    "boot-failure": "s",
    # updates that failed their trial boot (status's boot-failures)
    "reason": "s",
    "time": "x",
    # package changes (db diff --json)
    "from": "s",
    "to": "s",
    "added": "aa{sv}",
    "removed": "aa{sv}",
    "upgraded": "aa{sv}",
    "downgraded": "aa{sv}",
    "name": "s",
    "architecture": "s",
    "old-version": "s",
    "new-version": "s",
    "changelogs": "a{ss}",
    # outcomes of mutating verbs
    "changed": "b",
    "lines": "as",
    "diff": "a{sv}",
    "then": "a{sv}",
    "deployed": "b",
}


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(value or ())


# ---- package changes ----


@dataclass(frozen=True)
class PackageChange:
    name: str
    old_version: str | None  # None: added
    new_version: str | None  # None: removed
    architecture: str


@dataclass(frozen=True)
class PackageDiff:
    """Package changes between two commits, each list sorted by name then architecture."""

    added: tuple[PackageChange, ...] = ()
    removed: tuple[PackageChange, ...] = ()
    upgraded: tuple[PackageChange, ...] = ()
    downgraded: tuple[PackageChange, ...] = ()

    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.upgraded or self.downgraded)


def _change_to_wire(c: PackageChange) -> Wire:
    return {
        "name": c.name,
        "architecture": c.architecture,
        "old-version": c.old_version,
        "new-version": c.new_version,
    }


def _change_from_wire(d: Mapping[str, Any]) -> PackageChange:
    return PackageChange(d["name"], d.get("old-version"), d.get("new-version"), d["architecture"])


def diff_to_wire(diff: PackageDiff) -> Wire:
    return {
        "added": [_change_to_wire(c) for c in diff.added],
        "removed": [_change_to_wire(c) for c in diff.removed],
        "upgraded": [_change_to_wire(c) for c in diff.upgraded],
        "downgraded": [_change_to_wire(c) for c in diff.downgraded],
    }


def diff_from_wire(d: Mapping[str, Any]) -> PackageDiff:
    def changes(key: str) -> tuple[PackageChange, ...]:
        return tuple(_change_from_wire(c) for c in d.get(key, ()))

    return PackageDiff(changes("added"), changes("removed"), changes("upgraded"),
                       changes("downgraded"))  # fmt: skip


@dataclass(frozen=True)
class CommitDiff:
    """`db diff`: the package changes between two commits."""

    from_checksum: str
    to_checksum: str
    diff: PackageDiff
    # package name -> its new changelog entries (`db diff --changelogs`), upgrades only
    changelogs: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> Wire:
        return {
            "from": self.from_checksum,
            "to": self.to_checksum,
            **diff_to_wire(self.diff),
            "changelogs": dict(self.changelogs),
        }

    @staticmethod
    def from_wire(d: Mapping[str, Any]) -> CommitDiff:
        return CommitDiff(d["from"], d["to"], diff_from_wire(d), d.get("changelogs", {}))


@dataclass(frozen=True)
class PackageList:
    """`db list`: a commit and its packages (name, version, architecture)."""

    checksum: str
    packages: tuple[Package, ...]


@dataclass(frozen=True)
class SearchMatch:
    name: str
    version: str
    summary: str


@dataclass(frozen=True)
class CachedUpdate:
    """What an automatic check found: the update's commit, version and package changes."""

    checksum: str
    version: str | None
    diff: PackageDiff

    def to_wire(self) -> Wire:
        return {"checksum": self.checksum, "version": self.version, **diff_to_wire(self.diff)}

    @staticmethod
    def from_wire(d: Mapping[str, Any]) -> CachedUpdate | None:
        if not d:
            return None
        return CachedUpdate(d["checksum"], d.get("version"), diff_from_wire(d))


# ---- deployments ----


@dataclass(frozen=True)
class DeploymentInfo:
    """One deployment as `status` shows it (the keys of `status --json`). Fields that come
    from the commit are None when the commit is not in the repository, and those that come
    from the origin are empty when the origin cannot be read (`origin` is then None)."""

    id: str
    osname: str
    checksum: str
    base_checksum: str
    version: str | None
    timestamp: int | None
    origin: str | None
    override_commit: str | None
    booted: bool
    staged: bool
    pinned: bool
    unlocked: str
    live_commit: str | None = None
    live_replaced: bool = False
    requested_packages: tuple[str, ...] = ()
    requested_local_packages: tuple[str, ...] = ()
    requested_base_removals: tuple[str, ...] = ()
    requested_base_replacements: tuple[str, ...] = ()  # NAME=VERSION from the repositories
    requested_base_local_replacements: tuple[str, ...] = ()
    kernel_arguments: tuple[str, ...] = ()
    regenerate_initramfs: bool = False
    initramfs_args: tuple[str, ...] = ()
    package_count: int | None = None
    container_image_reference: str | None = None
    container_image_digest: str | None = None
    boot_trial: str | None = None  # "pending" (staged), "booting" (booted, not yet blessed)
    boot_failure: str | None = None  # why its trial boot failed

    def to_wire(self) -> Wire:
        return {
            "id": self.id,
            "osname": self.osname,
            "checksum": self.checksum,
            "base-checksum": self.base_checksum,
            "version": self.version,
            "timestamp": self.timestamp,
            "origin": self.origin,
            "override-commit": self.override_commit,
            "booted": self.booted,
            "staged": self.staged,
            "pinned": self.pinned,
            "unlocked": self.unlocked,
            "live-commit": self.live_commit,
            "live-replaced": self.live_replaced,
            # rpm-ostree's pairs: what is layered, and what was asked for (the same here:
            # every change rebuilds from the origin's requests)
            "packages": list(self.requested_packages),
            "requested-packages": list(self.requested_packages),
            "requested-local-packages": list(self.requested_local_packages),
            "base-removals": list(self.requested_base_removals),
            "requested-base-removals": list(self.requested_base_removals),
            "requested-base-replacements": list(self.requested_base_replacements),
            "base-local-replacements": list(self.requested_base_local_replacements),
            "requested-base-local-replacements": list(self.requested_base_local_replacements),
            "kernel-arguments": list(self.kernel_arguments),
            "regenerate-initramfs": self.regenerate_initramfs,
            "initramfs-args": list(self.initramfs_args),
            "package-count": self.package_count,
            "container-image-reference": self.container_image_reference,
            "container-image-reference-digest": self.container_image_digest,
            "boot-trial": self.boot_trial,
            "boot-failure": self.boot_failure,
        }

    @staticmethod
    def from_wire(d: Mapping[str, Any]) -> DeploymentInfo:
        return DeploymentInfo(
            id=d["id"],
            osname=d["osname"],
            checksum=d["checksum"],
            base_checksum=d["base-checksum"],
            version=d.get("version"),
            timestamp=d.get("timestamp"),
            origin=d.get("origin"),
            override_commit=d.get("override-commit"),
            booted=d["booted"],
            staged=d["staged"],
            pinned=d["pinned"],
            unlocked=d["unlocked"],
            live_commit=d.get("live-commit"),
            live_replaced=bool(d.get("live-replaced")),
            requested_packages=_tuple(d.get("requested-packages")),
            requested_local_packages=_tuple(d.get("requested-local-packages")),
            requested_base_removals=_tuple(d.get("requested-base-removals")),
            requested_base_replacements=_tuple(d.get("requested-base-replacements")),
            requested_base_local_replacements=_tuple(d.get("requested-base-local-replacements")),
            kernel_arguments=_tuple(d.get("kernel-arguments")),
            regenerate_initramfs=bool(d.get("regenerate-initramfs")),
            container_image_reference=d.get("container-image-reference"),
            container_image_digest=d.get("container-image-reference-digest"),
            initramfs_args=_tuple(d.get("initramfs-args")),
            package_count=d.get("package-count"),
            boot_trial=d.get("boot-trial"),
            boot_failure=d.get("boot-failure"),
        )


@dataclass(frozen=True)
class BootFailure:
    """An update whose trial boot failed: `upgrade` and automatic updates skip its base
    commit until it is deployed explicitly."""

    checksum: str
    base_checksum: str
    version: str | None
    reason: str
    time: int

    def to_wire(self) -> Wire:
        return {
            "checksum": self.checksum,
            "base-checksum": self.base_checksum,
            "version": self.version,
            "reason": self.reason,
            "time": self.time,
        }

    @staticmethod
    def from_wire(d: Mapping[str, Any]) -> BootFailure:
        return BootFailure(
            d["checksum"], d["base-checksum"], d.get("version"), d["reason"], d["time"]
        )


@dataclass(frozen=True)
class TransactionInfo:
    """The daemon's running transaction, as `status --json` shows it."""

    title: str
    client: str
    path: str


@dataclass(frozen=True)
class StatusResult:
    """`status`: the deployments, the update the last automatic check found, the automatic
    update policy, and the daemon's running transaction (None in-process: none runs)."""

    deployments: tuple[DeploymentInfo, ...]
    transaction: TransactionInfo | None = None
    cached_update: CachedUpdate | None = None
    policy: str = "none"
    boot_failures: tuple[BootFailure, ...] = ()

    @property
    def state(self) -> str:
        return "busy" if self.transaction is not None else "idle"

    def to_json(self) -> Wire:
        t, u = self.transaction, self.cached_update
        return {
            "deployments": [d.to_wire() for d in self.deployments],
            "transaction": [t.title, t.client, t.path] if t else None,
            "cached-update": u.to_wire() if u else None,
            "state": self.state,
            "automatic-updates": self.policy,
            "boot-failures": [f.to_wire() for f in self.boot_failures],
        }


# ---- mutating verbs ----


@dataclass(frozen=True)
class Outcome:
    """What a mutating verb did: whether anything changed, the lines that say what, the
    commit it is about and its version, the package changes, and what a verb that does two
    things (install --apply-live) did next (`then`: the exit code follows the last)."""

    changed: bool
    lines: tuple[str, ...]
    diff: PackageDiff | None = None
    checksum: str | None = None
    version: str | None = None
    then: Outcome | None = field(default=None)
    deployed: bool = False  # a new deployment (or boot order) was written: -r reboots into it

    def last(self) -> Outcome:
        return self.then.last() if self.then is not None else self

    def to_wire(self) -> Wire:
        return {
            "changed": self.changed,
            "lines": list(self.lines),
            "diff": diff_to_wire(self.diff) if self.diff is not None else None,
            "checksum": self.checksum,
            "version": self.version,
            "then": self.then.to_wire() if self.then is not None else None,
            "deployed": self.deployed,
        }

    @staticmethod
    def from_wire(d: Mapping[str, Any]) -> Outcome:
        diff, then = d.get("diff"), d.get("then")
        return Outcome(
            changed=bool(d["changed"]),
            lines=_tuple(d.get("lines")),
            diff=diff_from_wire(diff) if diff is not None else None,
            checksum=d.get("checksum"),
            version=d.get("version"),
            then=Outcome.from_wire(then) if then else None,
            deployed=bool(d.get("deployed")),
        )


def packages_from_wire(rows: Sequence[Sequence[str]]) -> tuple[Package, ...]:
    return tuple((str(n), str(v), str(a)) for n, v, a in rows)


Result = Outcome | StatusResult | CommitDiff | PackageList | tuple[SearchMatch, ...]


def timestamp_text(ts: int) -> str:
    """A commit's timestamp as users read it (UTC, ISO 8601)."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
