"""Bootstrapping a root filesystem with mmdebstrap from an exact, already downloaded set.

The resolver has fixed every package's version and the .debs are in the cache, so
mmdebstrap runs with `--variant=custom` and the full closure as `name=version`, on apt
lists and archives linked in from our apt state (`--skip=update`): it touches no network
and cannot pick a different version than the one resolved and hashed.

The treefile's `documentation` and `install-langs` become dpkg path filters (dpkg(1),
--path-exclude), passed as mmdebstrap's `--dpkgopt`: mmdebstrap writes them to
/etc/dpkg/dpkg.cfg.d/99mmdebstrap before the first package is unpacked, applies that file's
filters to the packages it extracts itself (through mmtarfilter) before dpkg runs, and leaves
the file in the tree (mmdebstrap(1), --dpkgopt). So the image keeps it, and the packages a
client layers later are filtered the same way. A file of our own in dpkg.cfg.d would reach
dpkg only: mmdebstrap's extraction reads no other.

With `--variant=custom` mmdebstrap installs every package in one `dpkg --install`, between
its extract hooks and its essential hooks (mmdebstrap(1), "HOOKS"), so what must be there
before any maintainer script goes in a setup hook (the previous commit's account databases,
`compose/passwd.py`) and debconf's answers in an extract hook: every package is unpacked by
then, debconf's and perl's files with them, and none is configured.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree.aptpkg.dpkg import render_extended_states
from apt_ostree.aptpkg.root import ResolvedPackage
from apt_ostree.progress import Progress
from apt_ostree.run import run_streaming


@dataclass(frozen=True)
class BootstrapInput:
    suite: str
    sources_file: Path  # deb822 sources; they stay in the image's /etc/apt
    lists_dir: Path  # apt lists matching sources_file
    packages: tuple[ResolvedPackage, ...]
    debs: tuple[Path, ...]  # the downloaded .debs of `packages`
    source_date_epoch: int | None = None
    dpkg_options: tuple[str, ...] = ()  # lines of /etc/dpkg/dpkg.cfg.d/99mmdebstrap
    etc_seed: Path | None = None  # a folder of files for /etc before any package is installed
    debconf_answers: Path | None = None  # a debconf-set-selections file, before any is configured


# Debian Policy 12.5: every package's copyright file stays, whatever else goes.
_NO_DOCUMENTATION = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
)
_FILTERS_HEADER = "# apt-ostree compose: the treefile's documentation and install-langs"


def dpkg_path_filters(documentation: bool, install_langs: Sequence[str] | None) -> tuple[str, ...]:
    """dpkg's path-exclude/path-include lines for the treefile's keys (none: no filters).

    dpkg applies the last rule that matches a path, so the documentation rules come after the
    languages' (no translated man page comes back with `documentation: false`). A language
    keeps its own translations and its variants' (`de`: de, de_AT, de@hebrew) and, named with
    a territory, the language's (`pt_BR`: pt_BR and pt), as rpm's %_install_langs does.
    """
    lines: list[str] = []
    if install_langs is not None:
        lines += ["path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias"]
        lines += ["path-exclude=/usr/share/man/*", "path-include=/usr/share/man/man*"]
        for folder in ("locale", "man"):
            for name in _language_globs(install_langs):
                lines.append(f"path-include=/usr/share/{folder}/{name}/*")
    if not documentation:
        lines += _NO_DOCUMENTATION
    return (_FILTERS_HEADER, *lines) if lines else ()


def _language_globs(names: Sequence[str]) -> list[str]:
    globs: list[str] = []
    for name in names:
        language = name.split("_")[0].split("@")[0]
        for pattern in (name, f"{name}[_@.]*", language):
            if pattern not in globs:
                globs.append(pattern)
    return globs


def link_or_copy(src: Path, dest: Path) -> None:
    """Hardlink `src` to `dest` (same filesystem), else copy it."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _seed(target: Path, inp: BootstrapInput) -> None:
    lists = target / "var/lib/apt/lists"
    archives = target / "var/cache/apt/archives"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    for f in inp.lists_dir.iterdir():
        if f.is_file() and f.name != "lock":
            link_or_copy(f, lists / f.name)
    for deb in inp.debs:
        link_or_copy(deb, archives / deb.name)


def mmdebstrap_argv(target: Path, inp: BootstrapInput) -> list[str]:
    include = ",".join(
        f"{p.name}:{p.architecture}={p.version}"
        if p.architecture != "all"
        else f"{p.name}={p.version}"
        for p in inp.packages
    )
    return [
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        "--variant=custom",
        "--skip=update,check/empty",
        # dpkg's own lines ("Setting up ...") drive the progress count
        "--verbose",
        f"--include={include}",
        *(f"--dpkgopt={line}" for line in inp.dpkg_options),
        *hooks(inp),
        inp.suite,
        str(target),
        str(inp.sources_file),
    ]


def hooks(inp: BootstrapInput) -> list[str]:
    """mmdebstrap's hooks for the seed and the answers (sh -c, the tree as $1)."""
    found = []
    if inp.etc_seed is not None:
        found.append(f'--setup-hook=cp -a -- {shlex.quote(str(inp.etc_seed))}/. "$1/etc/"')
    if inp.debconf_answers is not None:
        answers = shlex.quote(str(inp.debconf_answers))
        found.append(f'--extract-hook=chroot "$1" debconf-set-selections < {answers}')
    return found


def bootstrap_env(inp: BootstrapInput) -> Mapping[str, str]:
    env = {
        # The kernel's postinst must not build an initramfs into /boot: compose builds
        # one with dracut into /usr/lib/modules (compose/initramfs.py), where libostree
        # looks for it.
        "INITRD": "No",
    }
    if inp.source_date_epoch is not None:
        env["SOURCE_DATE_EPOCH"] = str(inp.source_date_epoch)
    return env


def bootstrap(target: Path, inp: BootstrapInput, progress: Progress) -> None:
    """Install exactly `inp.packages` into the empty folder `target`."""
    target.mkdir(parents=True, exist_ok=True)
    _seed(target, inp)
    count = len(inp.packages)
    state = {"configured": 0}

    def on_line(line: str) -> None:
        if line.startswith(("I: ", "W: ", "E: ")):
            progress.message(f"    {line[3:]}")
        elif line.startswith("Setting up "):
            state["configured"] += 1
            progress.percent("configuring", min(state["configured"], count), count)

    run_streaming(mmdebstrap_argv(target, inp), on_line, env=bootstrap_env(inp), what="mmdebstrap")
    # every package was named to mmdebstrap, so apt marked none as automatic: the resolution
    # knows which ones came as dependencies
    states = target / "var/lib/apt/extended_states"
    states.parent.mkdir(parents=True, exist_ok=True)
    states.write_text(render_extended_states(inp.packages))
