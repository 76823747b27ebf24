"""Small real .deb packages built from a declarative spec, for tests.

`build_deb(spec, outdir)` runs `dpkg-deb --build --root-owner-group`; the same spec gives a
byte-identical .deb (SOURCE_DATE_EPOCH is fixed), so repositories built from specs are
reproducible too.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = "1700000000"


@dataclass(frozen=True)
class File:
    content: str | bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Symlink:
    target: str


Content = str | bytes | File | Symlink


@dataclass(frozen=True)
class DebSpec:
    name: str
    version: str = "1.0"
    architecture: str = "all"
    depends: str = ""
    pre_depends: str = ""
    conflicts: str = ""
    provides: str = ""
    replaces: str = ""
    breaks: str = ""
    recommends: str = ""
    section: str = "misc"
    priority: str = "optional"
    essential: bool = False
    description: str = "test package"
    files: Mapping[str, Content] = field(default_factory=dict)
    conffiles: tuple[str, ...] | None = None  # default: every regular file under /etc
    preinst: str = ""
    postinst: str = ""
    prerm: str = ""
    postrm: str = ""
    triggers: str = ""
    extra_control: Mapping[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


def _control(spec: DebSpec) -> str:
    fields = {
        "Package": spec.name,
        "Version": spec.version,
        "Architecture": spec.architecture,
        "Maintainer": "apt-ostree tests <tests@localhost>",
        "Section": spec.section,
        "Priority": spec.priority,
        "Essential": "yes" if spec.essential else "",
        "Pre-Depends": spec.pre_depends,
        "Depends": spec.depends,
        "Recommends": spec.recommends,
        "Conflicts": spec.conflicts,
        "Breaks": spec.breaks,
        "Provides": spec.provides,
        "Replaces": spec.replaces,
        **spec.extra_control,
        "Description": spec.description,
    }
    return "".join(f"{k}: {v}\n" for k, v in fields.items() if v)


def _script(body: str) -> str:
    return body if body.startswith("#!") else f"#!/bin/sh\nset -e\n{body}\n"


def _write_payload(root: Path, spec: DebSpec) -> list[str]:
    etc_files = []
    for path, content in sorted(spec.files.items()):
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Symlink):
            dest.symlink_to(content.target)
            continue
        file = content if isinstance(content, File) else File(content)
        data = file.content.encode() if isinstance(file.content, str) else file.content
        dest.write_bytes(data)
        dest.chmod(file.mode)
        if path.startswith("/etc/"):
            etc_files.append(path)
    return etc_files


def _write_control(debian: Path, spec: DebSpec, etc_files: list[str]) -> None:
    debian.mkdir(mode=0o755)
    (debian / "control").write_text(_control(spec))
    conffiles = etc_files if spec.conffiles is None else list(spec.conffiles)
    if conffiles:
        (debian / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))
    for name in ("preinst", "postinst", "prerm", "postrm"):
        body = getattr(spec, name)
        if body:
            (debian / name).write_text(_script(body))
            (debian / name).chmod(0o755)
    if spec.triggers:
        (debian / "triggers").write_text(spec.triggers)


def build_deb(spec: DebSpec, outdir: Path) -> Path:
    """Build `spec` into outdir/NAME_VERSION_ARCH.deb and return its path."""
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / spec.filename
    with tempfile.TemporaryDirectory(prefix="deb-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir(mode=0o755)
        etc_files = _write_payload(root, spec)
        _write_control(root / "DEBIAN", spec, etc_files)
        for d in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
            d.chmod(0o755)
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(root), str(out)],
            check=True,
            capture_output=True,
            env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH},
        )
    return out
