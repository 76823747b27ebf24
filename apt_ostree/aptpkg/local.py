"""Local .debs (`LocalDeb`) and the flat `file:` repository that hands them to apt.

apt resolves a local .deb and its dependencies like any package once it is in a repository:
`write_repository` writes one from the packages' control fields (no external tool), and
`root.AptRoot.set_local` adds it to the scratch root's sources.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import apt_pkg

from apt_ostree.aptpkg.host import init, one_line
from apt_ostree.errors import PackageError

LOCAL_ORIGIN = "apt-ostree-local"  # the Origin of the repository holding local .debs


@dataclass(frozen=True)
class LocalDeb:
    """A .deb given as a file, with its control stanza (as `dpkg-deb --field` prints it)."""

    path: Path
    name: str
    version: str
    architecture: str
    control: str = field(repr=False)
    sha256: str = field(repr=False)
    size: int = field(repr=False)

    @classmethod
    def read(cls, path: Path, control: str) -> LocalDeb:
        init()
        control = control.strip("\n")
        try:
            section = apt_pkg.TagSection(control + "\n")
        except (SystemError, ValueError) as e:
            raise PackageError(f"{path}: unreadable control fields: {one_line(str(e))}") from e
        missing = [f for f in ("Package", "Version", "Architecture") if not section.get(f)]
        if missing:
            raise PackageError(f"{path}: not a binary package (no {', '.join(missing)} field)")
        return cls(
            path=path,
            name=section["Package"],
            version=section["Version"],
            architecture=section["Architecture"],
            control=control,
            sha256=file_digest(path),
            size=path.stat().st_size,
        )

    @property
    def file_name(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"

    @property
    def stanza(self) -> str:
        """Its Packages stanza in the local repository."""
        return (
            f"{self.control}\nFilename: ./{self.file_name}\nSize: {self.size}\n"
            f"SHA256: {self.sha256}\n"
        )


def write_repository(folder: Path, debs: Sequence[LocalDeb]) -> None:
    """Make `folder` a flat repository of exactly `debs` (files linked in where possible)."""
    folder.mkdir(exist_ok=True)
    stanzas = {}
    for deb in debs:
        if deb.file_name in stanzas:
            raise PackageError(f"two local packages are {deb.name} {deb.version}: {deb.path}")
        _link_or_copy(deb.path, folder / deb.file_name, deb.sha256)
        stanzas[deb.file_name] = deb.stanza
    for old in folder.glob("*.deb"):
        if old.name not in stanzas:
            old.unlink()
    _write_flat_index(folder, "\n".join(stanzas[n] for n in sorted(stanzas)))


def file_digest(path: Path) -> str:
    """The sha256 of a file, read in chunks (a .deb can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _link_or_copy(src: Path, dest: Path, sha256: str) -> None:
    if dest.exists() and file_digest(dest) == sha256:
        return
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _write_flat_index(folder: Path, packages: str) -> None:
    """Packages and Release of a flat repository (unsigned: its source is trusted=yes)."""
    index = folder / "Packages"
    if index.exists() and index.read_text() == packages:
        return
    index.write_text(packages)
    data = packages.encode()
    release = folder / "Release"
    previous = release.stat().st_mtime if release.exists() else 0.0
    release.write_text(
        f"Origin: {LOCAL_ORIGIN}\nLabel: {LOCAL_ORIGIN}\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\n"
        f"SHA256:\n {hashlib.sha256(data).hexdigest()} {len(data)} Packages\n"
    )
    # apt's file: method takes a file whose mtime (in seconds) did not change as unchanged
    stamp = max(time.time(), previous + 1)
    os.utime(release, (stamp, stamp))
