"""Which files of a commit go into which layer of its container image.

A file belongs to a *component*: the `user.component` xattr when the file has one (the
convention that rpm-ostree's and bootc's chunkers honour), else the Debian source package of
the binary package that ships it (from the dpkg database in the commit: each `info/*.list`,
and the status file's `Source:` field, Debian Policy 5.6.1), else one of four components of
what no package owns: the initramfs, the package manager's state in /usr/lib/sysimage (dpkg's
and apt's, debconf's apart), and the rest. Files that no package lists but that a package's
files make (the kernel moved into /usr/lib/modules/VERSION and depmod's indexes there, udev's
hwdb.bin) go with the package that lists most files of their folder: they change with it.

Components are then packed into at most `max_layers` layers. So that an update re-downloads
little, the components likely to change get layers of their own first (a third of the
layers at most): those that changed in the ref's history (the ancestors of the commit found
in the repository), then the vendor's own packages (those without a Debian changelog, which
Debian Policy 12.7 requires of every Debian package), then those whose changelog shows
stable updates of their release (`+debNuM` versions); the largest of the others fill the
rest. What is left shares a few buckets chosen by a hash of the name, so that a component
stays in the same bucket from one build to the next. The layout is a function of the commit
and its ancestors: the same commit gives the same image.

Directories are not assigned: the first layer holds every directory of the tree, and each
layer also carries the directories above its own files, with the same metadata.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import BinaryIO

from apt_ostree.changelogs import entries as changelog_entries
from apt_ostree.ostree_container import Entry

COMPONENT_XATTR = b"user.component"
ROOTFS = "rootfs"  # directories and files no package owns
INITRAMFS = "initramfs"
SYSIMAGE = "sysimage"  # dpkg's and apt's state: changes with any package
# debconf's: its templates.dat is the largest file of the state and changes only with a
# package's templates, so it travels apart from the dpkg status that every update changes
SYSIMAGE_DEBCONF = "sysimage-debconf"
SPECIAL = (ROOTFS, INITRAMFS, SYSIMAGE, SYSIMAGE_DEBCONF)
MAX_LAYERS = 64
BUCKETS = 8
MIN_LAYERS = BUCKETS + len(SPECIAL) + 2  # the buckets, the special layers, the commit's, one more
HISTORY_DEPTH = 32
VENDOR = 1000  # the expected changes of a package without a Debian changelog: the most
_STABLE_UPDATE = re.compile(r"[+~]deb[0-9]+u[0-9]+")
_CHANGELOG = re.compile(r"usr/share/doc/[^/]+/changelog(\.Debian)?\.gz")
_CHANGELOG_HEAD = 1 << 16  # bytes of a changelog read: its newest entries
_MODULES = "usr/lib/modules/"
DPKG = "usr/lib/sysimage/dpkg"
_USRMERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True)
class Layer:
    name: str  # "rootfs", a component's, or "bucket-N"
    components: tuple[str, ...]
    entries: tuple[Entry, ...]  # directories above the files included, in tree order

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


def parse_status(text: str) -> dict[str, str]:
    """Installed binary package (name, and name:arch) -> its source package."""
    sources: dict[str, str] = {}
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line and not line[0].isspace():
                key, _, value = line.partition(":")
                fields[key.lower()] = value.strip()
        name = fields.get("package")
        if not name or not fields.get("status", "").endswith(" installed"):
            continue
        source = fields.get("source", name).split(" ")[0] or name
        sources[name] = source
        sources[f"{name}:{fields.get('architecture', '')}"] = source
    return sources


def tree_path(listed: str) -> str:
    """Where a path of a package's file list is in a commit: /etc moved to /usr/etc, the
    merged-/usr links followed."""
    rel = listed.strip().lstrip("/")
    first = rel.split("/", 1)[0]
    if first == "etc":
        return "usr/" + rel
    if first in _USRMERGED:
        return "usr/" + rel
    return rel


def status_sources(entries: Sequence[Entry], read: Callable[[str], bytes]) -> dict[str, str]:
    """parse_status of the commit's dpkg status file; `read(checksum)` reads a file."""
    status = next((e for e in entries if e.path == f"{DPKG}/status"), None)
    return parse_status(read(status.checksum).decode(errors="replace")) if status else {}


def owners(
    entries: Sequence[Entry], sources: Mapping[str, str], read: Callable[[str], bytes]
) -> dict[str, str]:
    """Path in the commit -> source package, from the commit's dpkg database (`sources`: its
    status file's, `status_sources`)."""
    owned: dict[str, str] = {}
    prefix = f"{DPKG}/info/"
    for entry in entries:
        if not entry.path.startswith(prefix) or entry.kind != "file":
            continue
        name, _, suffix = entry.path.removeprefix(prefix).rpartition(".")
        source = sources.get(name)
        if source is None:
            continue
        owned[entry.path] = source  # the package's own maintainer scripts, md5sums, lists
        if suffix == "list":
            for line in read(entry.checksum).decode(errors="replace").splitlines():
                owned.setdefault(tree_path(line), source)
    return owned | _generated(entries, owned)


def _folder(path: str) -> str:
    """What a file that no package lists is judged by: a kernel version's whole tree under
    usr/lib/modules, or else the folder it is in."""
    if path.startswith(_MODULES):
        return "/".join(path.split("/")[:4])
    return path.rpartition("/")[0]


def _generated(entries: Sequence[Entry], owned: Mapping[str, str]) -> dict[str, str]:
    """The files no package lists that go with one: with the source package of most of the
    listed files in the same folder (a kernel version's tree counting as one folder), if it
    has more than half of them. The initramfs and the package manager's state stay apart."""
    by_folder: dict[str, Counter[str]] = defaultdict(Counter)
    unlisted = []
    for entry in entries:
        if entry.kind == "dir":
            continue
        if entry.path in owned:
            by_folder[_folder(entry.path)][owned[entry.path]] += 1
        elif not entry.path.startswith("usr/lib/sysimage/") and not _is_initramfs(entry.path):
            unlisted.append(entry.path)
    found = {}
    for path in unlisted:
        sources = by_folder.get(_folder(path))
        if sources:
            source, count = sources.most_common(1)[0]
            if count * 2 > sources.total():
                found[path] = source
    return found


def _is_initramfs(path: str) -> bool:
    return path.startswith(_MODULES) and path.endswith("/initramfs.img")


def component_of(entry: Entry, owned: Mapping[str, str]) -> str:
    for key, value in entry.xattrs:
        if key == COMPONENT_XATTR and value:
            return value.decode(errors="replace")
    if entry.path in owned:
        return owned[entry.path]
    if _is_initramfs(entry.path):
        return INITRAMFS
    if entry.path.startswith("usr/lib/sysimage/debconf/"):
        return SYSIMAGE_DEBCONF
    if entry.path.startswith("usr/lib/sysimage/"):
        return SYSIMAGE
    return ROOTFS


def changes(
    history: Sequence[Sequence[tuple[str, str, str]]], sources: Mapping[str, str]
) -> Counter[str]:
    """How often each source package changed version along `history` (package lists, newest
    first)."""
    counts: Counter[str] = Counter()
    for newer, older in pairwise(history):
        before = {(n, a): v for n, v, a in older}
        changed = {n for n, v, a in newer if before.get((n, a)) not in (None, v)}
        counts.update({sources.get(n, n) for n in changed})
    return counts


def stable_updates(changelog: BinaryIO) -> int:
    """How many of the newest entries of a gzipped Debian changelog in a row are stable
    updates (`+debNuM` or `~debNuM` versions): the updates the package had in its release."""
    try:
        with gzip.GzipFile(fileobj=changelog) as f:
            head = f.read(_CHANGELOG_HEAD).decode(errors="replace")
    except (OSError, EOFError, zlib.error):
        return 0
    count = 0
    for version, _ in changelog_entries(head):
        if not _STABLE_UPDATE.search(version):
            break
        count += 1
    return count


def expected_changes(
    entries: Sequence[Entry], owned: Mapping[str, str], open_file: Callable[[str], BinaryIO]
) -> dict[str, int]:
    """Source package -> how likely it is to change: its stable updates so far, or VENDOR for
    a package without a Debian changelog. An image composed without documentation has no
    changelogs: then nothing is said of the packages that have none."""
    logs: dict[str, int] = {}
    for entry in entries:
        source = owned.get(entry.path)
        if source is not None and entry.kind == "file" and _CHANGELOG.fullmatch(entry.path):
            logs[source] = max(logs.get(source, 0), stable_updates(open_file(entry.checksum)))
    packaged = set(owned.values())
    if len(logs) * 2 < len(packaged):
        return logs
    return logs | {source: VENDOR for source in packaged - logs.keys()}


def _bucket(component: str) -> str:
    return f"bucket-{int(hashlib.sha256(component.encode()).hexdigest(), 16) % BUCKETS}"


def assign(
    sizes: Mapping[str, int],
    counts: Mapping[str, int],
    expected: Mapping[str, int] | None = None,
    *,
    max_layers: int = MAX_LAYERS,
) -> dict[str, str]:
    """Component -> layer name: the special components and, within the budget, those likely
    to change (changed in `counts`, then by `expected`, at most a third of the layers) and
    the largest have their own layer; the rest share buckets."""
    expected = expected or {}
    special = [c for c in SPECIAL if c in sizes]
    rest = [c for c in sizes if c not in special]
    budget = max_layers - 1 - len(special)  # one layer for the commit object
    if len(rest) <= budget:
        own = rest
    else:
        slots = budget - BUCKETS
        likely = sorted(
            (c for c in rest if counts.get(c, 0) or expected.get(c, 0)),
            key=lambda c: (-counts.get(c, 0), -expected.get(c, 0), -sizes[c], c),
        )[: min(slots, max_layers // 3)]
        chosen = set(likely)
        largest = sorted((c for c in rest if c not in chosen), key=lambda c: (-sizes[c], c))
        own = likely + largest[: slots - len(likely)]
    layout = {c: c for c in [*special, *own]}
    layout.update({c: _bucket(c) for c in rest if c not in layout})
    return layout


def plan(
    entries: Sequence[Entry],
    owned: Mapping[str, str],
    counts: Mapping[str, int],
    expected: Mapping[str, int] | None = None,
    *,
    max_layers: int = MAX_LAYERS,
) -> list[Layer]:
    """The layers of the image, in order: rootfs (with every directory) first, then the
    others by name."""
    components = {e.path: component_of(e, owned) for e in entries if e.kind != "dir"}
    sizes: dict[str, int] = defaultdict(int)
    for entry in entries:
        if entry.kind != "dir":
            sizes[components[entry.path]] += entry.size
    sizes.setdefault(ROOTFS, 0)
    layout = assign(sizes, counts, expected, max_layers=max_layers)
    members: dict[str, set[str]] = defaultdict(set)
    for component, layer in layout.items():
        members[layer].add(component)
    files: dict[str, list[Entry]] = defaultdict(list)
    dirs = {e.path: e for e in entries if e.kind == "dir"}
    for entry in entries:
        if entry.kind != "dir":
            files[layout[components[entry.path]]].append(entry)
    names = [ROOTFS, *sorted(n for n in members if n != ROOTFS)]
    return [_layer(n, members[n], files[n], dirs, everything=n == ROOTFS) for n in names]


def _layer(
    name: str,
    components: set[str],
    files: list[Entry],
    dirs: Mapping[str, Entry],
    *,
    everything: bool,
) -> Layer:
    wanted: set[str] = set(dirs) if everything else {""}
    for entry in files:
        parts = entry.path.split("/")[:-1]
        wanted.update("/".join(parts[:i]) for i in range(len(parts) + 1))
    chosen = [dirs[p] for p in wanted]
    ordered = sorted([*chosen, *files], key=lambda e: e.path.split("/"))
    return Layer(name, tuple(sorted(components)), tuple(ordered))
