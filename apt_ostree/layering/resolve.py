"""A layering request resolved on a base tree: `LayerRequest` -> `LayerPlan` (issue 4).

python3-apt resolves against the tree's own apt sources (a deployment's merged /etc, else the
image's /usr/etc) and the base's dpkg status, in a scratch apt root under the cache
(`CACHEDIR/apt/<hash of the sources>`), so trees with the same sources share their lists.

- Keys: the sources' `Signed-By` files are paths inside the tree; they are copied into
  `CACHEDIR/apt/keys` under their content's hash, with the tree's trusted.gpg(.d) copied into
  the scratch root, so the host's keyrings are never trusted.
- The base is held: the scratch root's dpkg status is the base's with every package on hold,
  so apt never upgrades, downgrades or removes a base package by itself. `override remove`
  and `override replace` mark base packages explicitly; everything else that would need a
  base change fails naming the base packages involved (see `aptpkg.layer`).
- Local .debs (`requested-local`, `replace-local`) are checked by dpkg-deb (control fields,
  and the whole data member), then published as a flat `file:` repository inside the scratch
  root (Packages written from their control fields, no external tool), so apt resolves their
  dependencies like any package's. It is `trusted=yes`: the files are the caller's own.
- Downloads go to `CACHEDIR/archives`, each checked against its index hash; a plan whose
  .debs are all there downloads nothing.
- Lists: fetched when older than LISTS_MAX_AGE (like dnf's metadata_expire; `refresh-md`
  fetches at once), and again when a resolution on cached lists fails (a package published
  since, or a .deb the mirror dropped). `refresh=False` reads the lists already cached, and
  `refresh=True` always fetches (the local repository is indexed anyway: no network).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from apt_ostree.aptpkg.dpkg import installed_packages
from apt_ostree.aptpkg.host import native_architecture
from apt_ostree.aptpkg.layer import LayerMarks, LayerResolution, resolve_layer
from apt_ostree.aptpkg.local import LocalDeb
from apt_ostree.aptpkg.root import AptRoot
from apt_ostree.aptpkg.sources import RepoEntry, read_sources, render_sources
from apt_ostree.errors import CommandError, PackageError
from apt_ostree.layering import LayerPlan, LayerRequest, PlannedDeb
from apt_ostree.progress import Progress
from apt_ostree.run import run

LISTS_MAX_AGE = 6 * 3600  # seconds: package lists younger than this are used as they are

STATUS = Path("usr/lib/sysimage/dpkg/status")
ARCH = Path("usr/lib/sysimage/dpkg/arch")


@dataclass(frozen=True)
class BaseTree:
    """What resolution needs from a tree: sources (keys in the cache), status, architecture."""

    root: Path
    repos: tuple[RepoEntry, ...]
    trusted: tuple[Path, ...]  # the tree's trusted.gpg and trusted.gpg.d keyrings
    status: Path
    architecture: str
    foreign: tuple[str, ...] = ()  # dpkg's foreign architectures


def apt_etc(root: Path) -> Path:
    """The tree's apt configuration: its merged /etc when it has one, else /usr/etc."""
    return root / "etc/apt" if (root / "etc").is_dir() else root / "usr/etc/apt"


def read_tree(root: Path, keys: Path) -> BaseTree:
    """Read `root`'s sources, copying the keyrings they name into `keys`."""
    status = root / STATUS
    if not status.is_file():
        raise PackageError(f"{root} is not a base tree: it has no {STATUS}")
    etc = apt_etc(root)
    entries = read_sources(etc / "sources.list", etc / "sources.list.d")
    repos = tuple(replace(e, signed_by=_signed_by(e.signed_by, root, keys, etc)) for e in entries)
    trusted = [etc / "trusted.gpg"] if (etc / "trusted.gpg").is_file() else []
    if (etc / "trusted.gpg.d").is_dir():
        trusted += sorted(
            f for f in (etc / "trusted.gpg.d").iterdir() if f.suffix in (".gpg", ".asc")
        )
    foreign = tuple((root / ARCH).read_text().split()[1:]) if (root / ARCH).is_file() else ()
    return BaseTree(root, repos, tuple(trusted), status, tree_architecture(root), foreign)


def _signed_by(value: str | None, root: Path, keys: Path, etc: Path) -> str | None:
    """Signed-By with each keyring path (inside the tree) replaced by its copy in `keys`."""
    if value is None or "BEGIN PGP" in value:
        return value
    items = []
    for item in re.split(r"[,\s]+", value.strip()):
        if item.startswith("/"):
            items.append(str(_copy_key(root, item, keys, etc)))
        elif item:
            items.append(item)  # a fingerprint
    return ",".join(items)


def _copy_key(root: Path, path: str, keys: Path, etc: Path) -> Path:
    src = root / path.lstrip("/")
    if not src.is_file():
        raise PackageError(f"the keyring {path} named by {etc}'s sources is not in {root}")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    dest = keys / f"{digest}{src.suffix or '.gpg'}"
    if not dest.exists():
        keys.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return dest


def tree_architecture(root: Path) -> str:
    """dpkg's native architecture for the tree: the first line of its arch file (dpkg lists
    the native one, then the foreign ones), its packages' most common one, else ours."""
    arch = root / ARCH
    if arch.is_file() and (names := arch.read_text().split()):
        return names[0]
    counts = Counter(a for _, _, a in installed_packages(root / STATUS) if a != "all")
    counts.pop("", None)
    return counts.most_common(1)[0][0] if counts else native_architecture()


def _apt_root(tree: BaseTree, cachedir: Path) -> AptRoot:
    digests = [hashlib.sha256(k.read_bytes()).hexdigest() for k in tree.trusted]
    archs = " ".join((tree.architecture, *tree.foreign))
    text = "\n".join([render_sources(tree.repos), archs, *digests])
    return AptRoot(
        cachedir / "apt" / hashlib.sha256(text.encode()).hexdigest()[:16],
        tree.repos,
        archives=cachedir / "archives",
        architecture=tree.architecture,
        status=tree.status,
        trusted=tree.trusted,
        foreign=tree.foreign,
    )


def _open(root: Path, cachedir: Path) -> tuple[BaseTree, AptRoot]:
    tree = read_tree(root, cachedir / "apt" / "keys")
    return tree, _apt_root(tree, cachedir)


def read_local_deb(path: Path, architectures: Sequence[str]) -> LocalDeb:
    """A local .deb's control fields, after dpkg-deb has read all of it."""
    if not path.is_file():
        raise PackageError(f"{path}: no such file")
    try:
        control = run(["dpkg-deb", "--field", path]).stdout
        # --contents decompresses the whole data member: a truncated file fails here
        run(["dpkg-deb", "--contents", path])
    except CommandError as e:
        lines = [line for line in e.stderr.splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else str(e)
        raise PackageError(f"{path} is not a valid .deb package: {detail}") from e
    deb = LocalDeb.read(path, control)
    if deb.architecture not in ("all", *architectures):
        raise PackageError(
            f"{path} is built for {deb.architecture}, the tree's architectures are "
            + ", ".join(architectures)
        )
    return deb


def _indices(apt: AptRoot, progress: Progress, *, refresh: bool | None) -> bool:
    """Make the lists ready: fetched when `refresh`, cached when not, and when None fetched
    only if older than LISTS_MAX_AGE (or missing). True when cached lists are used."""
    if refresh is None:
        age = apt.lists_age()
        refresh = age is None or age > LISTS_MAX_AGE
    if not refresh:
        apt.update_local(progress)
        try:
            apt.check_lists()
            return True
        except PackageError:
            if refresh is False:
                raise
    with progress.step("Updating package indices"):
        apt.update(progress)
    return False


def plan_layer(
    root: Path,
    request: LayerRequest,
    *,
    cachedir: Path,
    progress: Progress,
    allow_inactive: bool = False,
    refresh: bool | None = None,
    fetch: bool = True,
) -> LayerPlan:
    """The change that makes `request` true on the base tree `root`, with its .debs at hand
    (with fetch=False nothing is downloaded: a plan to show, whose paths are where the .debs
    would be).

    Raises PackageError (one line, naming every package at fault) when it cannot be done.
    """
    if request.is_empty():
        return LayerPlan()
    tree, apt = _open(root, cachedir)
    archs = (tree.architecture, *tree.foreign)
    local = tuple(read_local_deb(p, archs) for p in request.local_debs)
    replace_local = tuple(read_local_deb(p, archs) for p in request.replace_local)
    apt.set_local([*local, *replace_local])
    cached = False
    if request.packages or request.replace or local or replace_local:
        cached = _indices(apt, progress, refresh=refresh)
    marks = LayerMarks(
        packages=request.packages,
        local=local,
        remove=request.remove,
        replace=request.replace,
        replace_local=replace_local,
        recommends=request.recommends,
        allow_inactive=allow_inactive,
    )
    try:
        resolution, paths = _resolve_and_fetch(apt, marks, progress, fetch=fetch)
    except PackageError as e:
        if not cached or refresh is False:
            raise
        # lists younger than LISTS_MAX_AGE can still miss a new package or name a .deb the
        # mirror no longer has: the answer after a refresh is the one that counts
        progress.message(f"    {e}: updating the package lists and trying again")
        _indices(apt, progress, refresh=True)
        resolution, paths = _resolve_and_fetch(apt, marks, progress, fetch=fetch)
    install = [
        PlannedDeb(p.name, p.version, p.architecture, path, auto=p.auto)
        for p, path in zip(resolution.install, paths, strict=True)
    ] + [PlannedDeb(d.name, d.version, d.architecture, d.path) for d in resolution.local]
    return LayerPlan(
        install=tuple(sorted(install, key=lambda d: (d.name, d.architecture))),
        remove=resolution.remove,
        inactive=resolution.inactive,
    )


def _resolve_and_fetch(
    apt: AptRoot, marks: LayerMarks, progress: Progress, *, fetch: bool
) -> tuple[LayerResolution, list[Path]]:
    with progress.step("Resolving packages"):
        resolution = resolve_layer(apt, marks)
    if not fetch:
        return resolution, [apt.archives / p.deb_name for p in resolution.install]
    paths: list[Path] = []
    if resolution.install:
        with progress.step("Downloading packages"):
            paths = apt.download(resolution.install, progress)
    return resolution, paths


def search(
    root: Path, patterns: Sequence[str], *, cachedir: Path, progress: Progress
) -> list[tuple[str, str, str]]:
    """(name, version, summary) of the packages of `root`'s sources whose name or description
    matches every pattern (regular expressions, case-insensitive, as `apt search`).

    Uses the cached lists; fetches them only when there are none yet (refresh-md updates).
    """
    _tree, apt = _open(root, cachedir)
    apt.set_local([])
    try:
        apt.check_lists()
    except PackageError:
        with progress.step("Updating package indices"):
            apt.update(progress)
    return apt.search(patterns)


def refresh(root: Path, *, cachedir: Path, progress: Progress) -> None:
    """Update the package lists of `root`'s sources (signatures verified): refresh-md."""
    _tree, apt = _open(root, cachedir)
    apt.set_local([])
    with progress.step("Updating package indices"):
        apt.update(progress)
