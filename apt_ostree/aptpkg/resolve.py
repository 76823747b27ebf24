"""Compose resolution: a `Request` (a variant's base set and packages) marked in an empty root.

The variant's base set is computed like mmdebstrap's (Essential, then Priority, of the
request's suite); the packages are marked in one apt action group, and anything apt could
not mark is explained with its unmet dependency. `Resolver`'s lookups (`find`, `pick`) are
the layer resolver's too (`layer.py`), so names mean the same in both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import apt_pkg

from apt_ostree.aptpkg.root import AptRoot, ResolvedPackage, marked_packages
from apt_ostree.errors import PackageError

# apt_pkg.PRI_* (the stubs lack them): lower is more important
_PRI_REQUIRED, _PRI_IMPORTANT, _PRI_STANDARD = 1, 2, 3


class Variant(StrEnum):
    """The base package set, named as mmdebstrap's variants."""

    CUSTOM = "custom"  # only `packages`
    ESSENTIAL = "essential"  # Essential: yes
    APT = "apt"  # essential + apt
    REQUIRED = "required"  # essential + Priority: required + apt
    MINBASE = "minbase"  # the same as required, debootstrap's name
    IMPORTANT = "important"  # required + Priority: important
    STANDARD = "standard"  # important + Priority: standard


@dataclass(frozen=True)
class Request:
    """What to install into an empty root."""

    variant: Variant
    packages: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    recommends: bool = False
    suite: str | None = None  # whose Essential/Priority fields define the variant's base set
    locked: Mapping[str, str] | None = None  # name -> exact version (a lockfile)


def resolve(apt: AptRoot, request: Request) -> list[ResolvedPackage]:
    """The exact closure of `request`, sorted by name; PackageError names every problem."""
    cache, depcache = apt.open_cache(recommends=request.recommends, exclude=request.exclude)
    # one action group: apt's mark-and-sweep runs once at the end, not per mark_install
    group = apt_pkg.ActionGroup(depcache)
    try:
        Resolver(cache, depcache, request).run()
    finally:
        group.release()  # type: ignore[attr-defined]  # missing from the stubs
    return marked_packages(cache, depcache)


class Resolver:
    """Marks a request in a DepCache the way apt-get would, and explains failures."""

    def __init__(self, cache: Any, depcache: Any, request: Request) -> None:
        self.cache = cache
        self.depcache = depcache
        self.request = request
        self.candidates: dict[int, Any] = {}

    def run(self) -> None:
        """Mark the request (in the caller's action group); PackageError says what failed."""
        self._apply_locks()
        wanted = self._wanted_packages()
        # a failed mark_install leaves the package without a candidate: keep them to explain
        self.candidates = {p.id: self.depcache.get_candidate_ver(p) for p in wanted}
        for pkg in wanted:
            self.depcache.mark_install(pkg, True, True)
        self._check_requested(wanted)
        self._check_broken()
        self._check_locked()

    def find(self, name: str) -> Any | None:
        """The cache's package named `name` (real or virtual), None when apt has no such name."""
        try:
            return self.cache[name]
        except KeyError:
            return None

    def _apply_locks(self) -> None:
        locked = self.request.locked or {}
        missing = []
        for name, version in sorted(locked.items()):
            pkg = self.find(name)
            ver = next((v for v in pkg.version_list if v.ver_str == version), None) if pkg else None
            if ver is None:
                missing.append(f"{name}={version}")
            else:
                self.depcache.set_candidate_ver(pkg, ver)
        if missing:
            raise PackageError(
                "locked versions not available from the repositories: " + ", ".join(missing)
            )

    def _base_set(self) -> list[Any]:
        variant = self.request.variant
        if variant == Variant.CUSTOM:
            return []
        max_priority = {
            Variant.ESSENTIAL: 0,
            Variant.APT: 0,
            Variant.REQUIRED: _PRI_REQUIRED,
            Variant.MINBASE: _PRI_REQUIRED,
            Variant.IMPORTANT: _PRI_IMPORTANT,
            Variant.STANDARD: _PRI_STANDARD,
        }[variant]
        base = []
        for pkg in self.cache.packages:
            ver = self.depcache.get_candidate_ver(pkg) if pkg.has_versions else None
            if ver is None or not self._from_suite(ver):
                continue
            if pkg.essential or 0 < ver.priority <= max_priority:
                base.append(pkg)
        if variant != Variant.ESSENTIAL and (apt := self.find("apt")) is not None:
            base.append(apt)
        return base

    def _from_suite(self, ver: Any) -> bool:
        suite = self.request.suite
        if suite is None:
            return True
        return any(f.archive == suite or f.codename == suite for f, _ in ver.file_list)

    def _wanted_packages(self) -> list[Any]:
        wanted = self._base_set()
        problems = []
        for spec in self.request.packages:
            name, _, version = spec.partition("=")
            pkg, problem = self.pick(name, version)
            if problem:
                problems.append(problem)
            else:
                wanted.append(pkg)
        if problems:
            raise PackageError("; ".join(problems))
        return wanted

    def pick(self, name: str, version: str) -> tuple[Any, str | None]:
        """The package a requested `name` (and `version`, if given: made its candidate)
        installs, a virtual name's one provider; else None and why, in words."""
        if name in self.request.exclude:
            return None, f"{name} is both requested and excluded"
        pkg = self.find(name)
        if pkg is None:
            return None, f"package not found: {name}"
        if not pkg.has_versions:
            providers = sorted({prov[2].parent_pkg.name for prov in pkg.provides_list})
            if len(providers) == 1:
                return self.cache[providers[0]], None
            if not providers:
                return None, f"package not found: {name} (no version is available)"
            return None, f"{name} is a virtual package: name one of {', '.join(providers)}"
        if version:
            ver = next((v for v in pkg.version_list if v.ver_str == version), None)
            if ver is None:
                return None, f"package not found: {name}={version}"
            self.depcache.set_candidate_ver(pkg, ver)
        return pkg, None

    def _check_requested(self, wanted: Sequence[Any]) -> None:
        """apt leaves a package it cannot install unmarked: say why, naming the dependency."""
        missing = [p for p in wanted if not self.depcache.marked_install(p)]
        if not missing:
            return
        excluded = [p for n in self.request.exclude if (p := self.find(n)) is not None]
        needers = self._needers(excluded, missing) if excluded else []
        if needers:
            raise PackageError(
                f"excluded packages are required: {', '.join(p.name for p in excluded)} "
                f"(needed by {', '.join(needers)})"
            )
        problems = [
            f"{p.name} {self.candidates[p.id].ver_str}: {self._unmet(self.candidates[p.id])}"
            for p in missing
        ]
        raise PackageError("cannot install: " + "; ".join(sorted(problems)[:10]))

    def _needers(self, targets: Sequence[Any], candidates: Sequence[Any]) -> list[str]:
        """Which of `candidates` (or of the marked packages) depend on one of `targets`."""
        names = {t.name for t in targets}
        out = set()
        pool = [*candidates, *(p for p in self.cache.packages if self.depcache.marked_install(p))]
        for pkg in pool:
            ver = self.candidates.get(pkg.id) or (
                self.depcache.get_candidate_ver(pkg) if pkg.has_versions else None
            )
            for group in [] if ver is None else dep_groups(ver):
                if all(d.target_pkg.name in names for d in group):
                    out.add(pkg.name)
        return sorted(out - names)

    def _check_broken(self) -> None:
        if not self.depcache.broken_count:
            return
        problems = []
        for pkg in self.cache.packages:
            if not self.depcache.is_inst_broken(pkg):
                continue
            ver = self.depcache.get_candidate_ver(pkg)
            problems.append(f"{pkg.name} {ver.ver_str}: {self._unmet(ver)}")
        raise PackageError("unresolvable dependencies: " + "; ".join(sorted(problems)[:10]))

    def _unmet(self, ver: Any) -> str:
        unmet = []
        for kind in ("PreDepends", "Depends", "Conflicts", "Breaks"):
            for group in ver.depends_list.get(kind, []):
                if not any(self._satisfied(d, kind) for d in group):
                    unmet.append(f"{kind}: {group_text(group)}")
        return ", ".join(unmet) or "broken"

    def _satisfied(self, dep: Any, kind: str) -> bool:
        installed = any(self.depcache.marked_install(v.parent_pkg) for v in dep.all_targets())
        return not installed if kind in ("Conflicts", "Breaks") else installed

    def _check_locked(self) -> None:
        locked = self.request.locked
        if locked is None:
            return
        extra = sorted(
            p.name
            for p in self.cache.packages
            if self.depcache.marked_install(p) and p.name not in locked
        )
        if extra:
            raise PackageError("packages not in the lockfile are needed: " + ", ".join(extra))


def dep_groups(ver: Any) -> list[Any]:
    """`ver`'s dependencies (PreDepends, then Depends), each an or-group of alternatives."""
    return [g for kind in ("PreDepends", "Depends") for g in ver.depends_list.get(kind, [])]


def group_text(group: Sequence[Any]) -> str:
    """An or-group as apt writes it: `a (>= 1) | b`."""
    return " | ".join(
        d.target_pkg.name + (f" ({d.comp_type} {d.target_ver})" if d.target_ver else "")
        for d in group
    )
