"""Lockfiles: the exact package versions of a compose, as JSON.

{"packages": {"NAME": {"version": "...", "architecture": "...", "sha256": "..."}}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from apt_ostree.aptpkg.root import ResolvedPackage
from apt_ostree.errors import TreefileError


def write(path: Path, packages: Sequence[ResolvedPackage]) -> None:
    data = {
        "packages": {
            p.name: {"version": p.version, "architecture": p.architecture, "sha256": p.sha256}
            for p in sorted(packages)
        }
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read(path: Path) -> dict[str, str]:
    """name -> version; TreefileError naming the file when it is not a lockfile."""
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise TreefileError(f"cannot read lockfile {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise TreefileError(f"lockfile {path}: not valid JSON: {e}") from e
    packages = data.get("packages") if isinstance(data, dict) else None
    if not isinstance(packages, dict):
        raise TreefileError(f"lockfile {path}: expected a 'packages' mapping")
    out = {}
    for name, entry in packages.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), str):
            raise TreefileError(f"lockfile {path}: package '{name}' has no 'version' string")
        out[name] = entry["version"]
    return out
