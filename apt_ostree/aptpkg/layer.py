"""Layer resolution: `resolve_layer` marks `LayerMarks` (packages, local .debs, overrides) on
a held base, and says what cannot be done, naming the base packages involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apt_pkg

from apt_ostree.aptpkg.local import LOCAL_ORIGIN, LocalDeb
from apt_ostree.aptpkg.resolve import Request, Resolver, Variant, dep_groups, group_text
from apt_ostree.aptpkg.root import AptRoot, ResolvedPackage, installs, marked_packages
from apt_ostree.errors import PackageError


@dataclass(frozen=True)
class LayerMarks:
    """What to change on a base tree, in apt's terms (names, versions, local .debs)."""

    packages: tuple[str, ...] = ()  # to install: none may be in the base
    local: tuple[LocalDeb, ...] = ()
    remove: tuple[str, ...] = ()  # base packages
    replace: tuple[str, ...] = ()  # NAME=VERSION of base packages, from the repositories
    replace_local: tuple[LocalDeb, ...] = ()
    recommends: bool = False
    allow_inactive: bool = False  # requested names the base has are kept, not refused


@dataclass(frozen=True)
class LayerResolution:
    install: tuple[ResolvedPackage, ...]  # from the repositories (to download), sorted
    local: tuple[LocalDeb, ...]  # local .debs to install
    remove: tuple[str, ...]
    inactive: tuple[str, ...]  # requested names the base already has


def resolve_layer(apt: AptRoot, marks: LayerMarks) -> LayerResolution:
    """Mark `marks` on `apt`'s base status; PackageError names every problem and base package."""
    cache, depcache = apt.open_cache(recommends=marks.recommends)
    inactive = _LayerResolver(cache, depcache, marks).run()
    local = {(d.name, d.version): d for d in (*marks.local, *marks.replace_local)}
    marked = marked_packages(cache, depcache)
    return LayerResolution(
        install=tuple(p for p in marked if (p.name, p.version) not in local),
        local=tuple(local[k] for p in marked if (k := (p.name, p.version)) in local),
        remove=tuple(sorted(set(marks.remove))),
        inactive=tuple(inactive),
    )


class _LayerResolver:
    """Marks a layer on a held base in a DepCache, and explains what cannot be done.

    Every base package is on hold (see AptRoot): apt's auto-install then never upgrades,
    downgrades or removes one, so a layered package that needs that stays unmarked or broken,
    and is explained here naming the base packages involved. Override remove and replace are
    marked "from the user", which is what lifts a hold in apt.
    """

    def __init__(self, cache: Any, depcache: Any, marks: LayerMarks) -> None:
        self.cache = cache
        self.depcache = depcache
        self.marks = marks
        self.finder = Resolver(cache, depcache, Request(Variant.CUSTOM, ()))
        self.problems: list[str] = []
        self.candidates: dict[int, Any] = {}
        self.changed: set[str] = set()  # base packages the request changes (removed, replaced)

    def run(self) -> list[str]:
        """Mark the request; the requested names the base already has (inactive)."""
        removes = self._base_packages(self.marks.remove)
        replaces = self._replacements()
        wanted, inactive = self._wanted()
        if self.problems:
            raise PackageError("; ".join(self.problems))
        if inactive and not self.marks.allow_inactive:
            raise PackageError(
                f"already in the base: {', '.join(inactive)} (use --allow-inactive to request "
                f"{'it' if len(inactive) == 1 else 'them'} anyway)"
            )
        self.changed = {p.name for p in removes} | {p.name for p, _ in replaces}
        broken_before = {p.id for p in self.cache.packages if self.depcache.is_inst_broken(p)}
        self._mark(removes, [*replaces, *wanted])
        self._check([p for p, _ in (*replaces, *wanted)], removes, broken_before)
        return inactive

    def _mark(self, removes: Sequence[Any], installs: Sequence[tuple[Any, Any]]) -> None:
        group = apt_pkg.ActionGroup(self.depcache)
        try:
            for pkg in removes:
                self.depcache.mark_delete(pkg, False)
            for pkg, ver in installs:
                if ver is not None:
                    self.depcache.set_candidate_ver(pkg, ver)
                self.candidates[pkg.id] = self.depcache.get_candidate_ver(pkg)
            for pkg, _ in installs:
                self.depcache.mark_install(pkg, True, True)
        finally:
            group.release()  # type: ignore[attr-defined]  # missing from the stubs

    # ---- reading the request ----

    def _base_package(self, name: str) -> Any | None:
        pkg = self.finder.find(name)
        if pkg is None or pkg.current_ver is None:
            self.problems.append(f"{name} is not a base package")
            return None
        return pkg

    def _base_packages(self, names: Sequence[str]) -> list[Any]:
        return [p for n in dict.fromkeys(names) if (p := self._base_package(n)) is not None]

    def _replacements(self) -> list[tuple[Any, Any]]:
        out = []
        for spec in self.marks.replace:
            name, _, version = spec.partition("=")
            if not version:
                self.problems.append(f"override replace {spec}: expected NAME=VERSION")
            elif (pkg := self._base_package(name)) is not None:
                ver = next(
                    (v for v in pkg.version_list if v.ver_str == version and v.downloadable), None
                )
                if ver is None:
                    self.problems.append(self._unavailable(pkg, version))
                else:
                    out.append((pkg, ver))
        for deb in self.marks.replace_local:
            if (pkg := self._base_package(deb.name)) is not None:
                out.append((pkg, self._local_version(pkg, deb)))
        return out

    def _unavailable(self, pkg: Any, version: str) -> str:
        versions = [v.ver_str for v in pkg.version_list if v.downloadable]
        have = f" (available: {', '.join(versions)})" if versions else ""
        return f"{pkg.name} {version} is not available from the repositories{have}"

    def _local_version(self, pkg: Any | None, deb: LocalDeb) -> Any:
        for ver in [] if pkg is None else pkg.version_list:
            if ver.ver_str == deb.version and any(
                f.origin == LOCAL_ORIGIN for f, _ in ver.file_list
            ):
                return ver
        raise PackageError(f"{deb.path}: {deb.name} {deb.version} is missing from the index")

    def _wanted(self) -> tuple[list[tuple[Any, Any]], list[str]]:
        wanted: list[tuple[Any, Any]] = []
        inactive = []
        for spec in dict.fromkeys(self.marks.packages):
            name, _, version = spec.partition("=")
            if self._in_base(name):
                inactive.append(spec)
                continue
            pkg, problem = self.finder.pick(name, version)
            if problem:
                self.problems.append(problem)
            elif pkg.current_ver is not None:  # a virtual name whose one provider is in the base
                inactive.append(spec)
            else:
                wanted.append((pkg, None))
        for deb in self.marks.local:
            pkg = self.finder.find(deb.name)
            if pkg is not None and pkg.current_ver is not None:
                inactive.append(deb.name)
            else:
                wanted.append((pkg, self._local_version(pkg, deb)))
        return wanted, inactive

    def _in_base(self, name: str) -> bool:
        """`name` is a base package, or a virtual one that a base package provides."""
        pkg = self.finder.find(name)
        if pkg is None:
            return False
        if pkg.current_ver is not None:
            return True
        return not pkg.has_versions and any(
            p[2].parent_pkg.current_ver is not None for p in pkg.provides_list
        )

    # ---- checking the result ----

    def _check(self, requested: Sequence[Any], removes: Sequence[Any], before: set[int]) -> None:
        problems: list[str] = []
        for pkg in requested:
            cand = self.candidates[pkg.id]
            unchanged = pkg.current_ver is not None and pkg.current_ver.id == cand.id
            if not installs(self.depcache, pkg) and not unchanged:
                problems += self._why(pkg, cand) or [
                    f"{self._label(pkg, cand)} cannot be installed"
                ]
        for pkg in self.cache.packages:
            if pkg.id not in before and self.depcache.is_inst_broken(pkg):
                problems += self._why(pkg, self._after(pkg) or self.depcache.get_candidate_ver(pkg))
        problems += [
            f"{p.name} cannot be removed" for p in removes if not self.depcache.marked_delete(p)
        ]
        problems += self._implicit_changes()
        if problems:
            hint = ""
            if any("the base has" in p or "with base package" in p for p in problems):
                hint = " (base packages change only by override remove or override replace)"
            raise PackageError("; ".join(dict.fromkeys(problems)) + hint)

    def _implicit_changes(self) -> list[str]:
        out = []
        for pkg in self.cache.packages:
            if pkg.current_ver is None or pkg.name in self.changed:
                continue
            if self.depcache.marked_delete(pkg):
                out.append(f"base package {pkg.name} would be removed")
            elif installs(self.depcache, pkg):
                new = self.depcache.get_candidate_ver(pkg).ver_str
                out.append(f"base package {pkg.name} would change to {new}")
        return out

    def _after(self, pkg: Any) -> Any | None:
        """The version of `pkg` installed once the marks are applied."""
        if self.depcache.marked_delete(pkg):
            return None
        if installs(self.depcache, pkg):
            return self.depcache.get_candidate_ver(pkg)
        return pkg.current_ver

    def _installed_after(self, ver: Any) -> bool:
        after = self._after(ver.parent_pkg)
        return after is not None and after.id == ver.id

    def _label(self, pkg: Any, ver: Any) -> str:
        base = pkg.current_ver is not None and pkg.name not in self.changed
        return f"{'base package ' if base else ''}{pkg.name} {ver.ver_str}"

    def _why(self, pkg: Any, ver: Any, seen: set[int] | None = None) -> list[str]:
        """Each relation of `ver` that the marked state violates, in words; an unmet
        dependency that apt could not install is explained in turn."""
        seen = seen if seen is not None else set()
        seen.add(pkg.id)
        who = self._label(pkg, ver)
        out = []
        for group in dep_groups(ver):
            if not any(self._installed_after(t) for d in group for t in d.all_targets()):
                out.append(f"{who} depends on {group_text(group)}{self._base_note(group)}")
                out += self._why_not(group, seen)
        for kind, verb in (("Conflicts", "conflicts with"), ("Breaks", "breaks")):
            for group in ver.depends_list.get(kind, []):
                for d in group:
                    for t in d.all_targets():
                        if t.parent_pkg.id != pkg.id and self._installed_after(t):
                            out.append(f"{who} {verb} {self._label(t.parent_pkg, t)}")
        return out + self._conflicted_by(pkg, ver, who)

    def _why_not(self, group: Sequence[Any], seen: set[int]) -> list[str]:
        """Why the new packages that would meet `group` could not be installed."""
        out = []
        for d in group:
            target = d.target_pkg
            # the policy's: a failed mark_install leaves the depcache without a candidate
            ver = self.depcache.policy.get_candidate_ver(target) if target.has_versions else None
            if target.current_ver is None and ver is not None and target.id not in seen:
                out += self._why(target, ver, seen)
        return out

    def _conflicted_by(self, pkg: Any, ver: Any, who: str) -> list[str]:
        """Installed packages whose Conflicts or Breaks hit `ver`."""
        out = []
        for d in pkg.rev_depends_list:
            kind = d.dep_type_untranslated
            if kind not in ("Conflicts", "Breaks") or d.parent_pkg.id == pkg.id:
                continue
            if self._installed_after(d.parent_ver) and ver.id in {t.id for t in d.all_targets()}:
                verb = "conflicts with" if kind == "Conflicts" else "breaks"
                out.append(f"{self._label(d.parent_pkg, d.parent_ver)} {verb} {who}")
        return out

    def _base_note(self, group: Sequence[Any]) -> str:
        notes = []
        for d in group:
            target = d.target_pkg
            if target.current_ver is None:
                continue
            if target.name in self.marks.remove:
                notes.append(f"{target.name} is removed by override remove")
            elif target.name not in self.changed:
                notes.append(f"the base has {target.name} {target.current_ver.ver_str}")
        return f", but {' and '.join(notes)}" if notes else ""
