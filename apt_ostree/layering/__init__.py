"""Client-side package layering and overrides (issue 4): the shared data of its three parts.

- `resolve.py`: python3-apt resolution of a `LayerRequest` against the deployment's own apt
  sources and the base's dpkg status -> a `LayerPlan` (the .debs to install, the base
  packages to remove or replace), with downloads cached under /var/cache/apt-ostree.
- `assemble.py`: the base commit checked out with hardlinks, the plan applied by dpkg in
  bubblewrap on an overlay above it, and only the difference committed -> a new commit.
- `apt_ostree/system/packages.py`: the verbs (install, uninstall, override, reset), the origin,
  and re-applying the requests onto every new base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LayerRequest:
    """What the origin asks for on top of a base (DESIGN.md "The origin")."""

    packages: tuple[str, ...] = ()  # [packages] requested: names
    local_debs: tuple[Path, ...] = ()  # [packages] requested-local: .deb files (kept in a cache)
    remove: tuple[str, ...] = ()  # [overrides] remove: base package names
    replace: tuple[str, ...] = ()  # [overrides] replace: NAME=VERSION from the repos
    replace_local: tuple[Path, ...] = ()  # [overrides] replace-local: .deb files
    recommends: bool = False

    def is_empty(self) -> bool:
        return not (
            self.packages or self.local_debs or self.remove or self.replace or self.replace_local
        )


@dataclass(frozen=True)
class PlannedDeb:
    name: str
    version: str
    architecture: str
    path: Path  # the .deb file, verified (repository hash, or a local file checked by dpkg-deb)
    auto: bool = False  # only a dependency of what was asked for (apt's Auto-Installed)


@dataclass(frozen=True)
class LayerPlan:
    """The exact change to make to the base tree."""

    install: tuple[
        PlannedDeb, ...
    ] = ()  # new packages (requested + dependencies), and replacements
    remove: tuple[str, ...] = ()  # base packages to remove (override remove)
    inactive: tuple[str, ...] = ()  # requested names the base already has (kept as requests)

    def is_empty(self) -> bool:
        return not (self.install or self.remove)
