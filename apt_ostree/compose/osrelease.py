"""`mutate-os-release`: the commit's version in the tree's os-release, as rpm-ostree does.

The base version the treefile names (Debian's `13`) is replaced by the commit's version in
VERSION and PRETTY_NAME (`VERSION="13.2024.0 (trixie)"`), and `OSTREE_VERSION='13.2024.0'`
is added. VERSION_ID stays: programs compare it with the release they know (os-release(5)
calls it "suitable for processing by scripts"). Debian's /etc/os-release is a symlink to
/usr/lib/os-release (base-files); when it is a file of its own, it is changed the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

from apt_ostree.errors import PostprocessError
from apt_ostree.progress import Progress

KEY = "mutate-os-release"
OS_RELEASE = "usr/lib/os-release"
ETC_OS_RELEASE = "etc/os-release"
# os-release(5) values are shell-quoted: a version with none of these needs no escaping
_PLAIN_VERSION = re.compile(r"^[A-Za-z0-9._+~:-]+$")


def mutate_os_release(rootfs: Path, base: str, version: str | None, progress: Progress) -> None:
    """Put `version` where `base` is in the tree's os-release; nothing without a version."""
    if not version:
        progress.message(f"    {KEY}: ignored, the commit has no version")
        return
    if not _PLAIN_VERSION.match(version):
        raise PostprocessError(f"{KEY}: the version '{version}' is not plain enough to quote")
    main = rootfs / OS_RELEASE
    if main.is_symlink() or not main.is_file():
        raise PostprocessError(f"{KEY}: the tree has no file /{OS_RELEASE}")
    paths = [main]
    etc = rootfs / ETC_OS_RELEASE
    if etc.is_file() and not etc.is_symlink():
        paths.append(etc)
    for path in paths:
        text = mutated(path.read_text(), base, version, f"/{path.relative_to(rootfs)}")
        path.write_text(text)
    progress.message(f"    {KEY}: {base} -> {version} in VERSION and PRETTY_NAME")


def mutated(text: str, base: str, version: str, where: str) -> str:
    """os-release text with `base` replaced in VERSION and PRETTY_NAME, and OSTREE_VERSION."""
    lines = []
    found = False
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in ("VERSION", "PRETTY_NAME"):
            if name == "VERSION":
                if base not in value:
                    raise PostprocessError(f"{KEY}: '{base}' is not in {where}'s {line}")
                found = True
            line = f"{name}={value.replace(base, version)}"
        if name != "OSTREE_VERSION":  # one of its own, never two
            lines.append(line)
    if not found:
        raise PostprocessError(f"{KEY}: {where} has no VERSION to put '{version}' in")
    lines.append(f"OSTREE_VERSION='{version}'")
    return "".join(f"{line}\n" for line in lines)
