"""A commit as a container sees it, and back (docs/container.md, "The container view").

A commit keeps /etc in /usr/etc and has an empty /var, which systemd-tmpfiles fills at boot
from the tree's own tmpfiles.d lines. A container engine boots nothing, and `RUN apt-get
install` in a Containerfile needs /etc, /var/lib/dpkg and the rest of /var. So an image's
layers carry the commit in the container view:

- /usr/etc is at /etc;
- /var holds what the tree's `d` and `L` lines under /var make (the links into
  /usr/lib/sysimage: dpkg's database, apt's extended_states, debconf's cache; the folders
  the image's packages own), as systemd-tmpfiles would make them;

and the client maps the view back: /etc into /usr/etc, the children of /var dropped (a
commit's /var is empty), before it checks the tree against the commit object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

from apt_ostree.compose import postprocess
from apt_ostree.ostree_container import Entry

TREE_ETC = "usr/etc"
TMPFILES = (postprocess.SYSIMAGE_CONF, postprocess.VAR_CONF)


def to_container(path: str) -> str:
    """A commit's path in the container view."""
    if path == TREE_ETC or path.startswith(TREE_ETC + "/"):
        return path.removeprefix("usr/")
    return path


def to_tree(path: str) -> str:
    """A container path in the commit's layout (the inverse of to_container for /etc)."""
    if path == "etc" or path.startswith("etc/"):
        return "usr/" + path
    return path


def in_view(entries: Iterable[Entry]) -> Iterator[Entry]:
    for entry in entries:
        path = to_container(entry.path)
        yield entry if path == entry.path else replace(entry, path=path)


def var_entries(fragments: Iterable[str]) -> list[Entry]:
    """The entries under /var that the tmpfiles.d `fragments` (their texts) make: `d` lines
    as folders (parents 0755, as systemd-tmpfiles makes them), `L` lines as symlinks; the
    first line for a path wins. Owners are root's: a container's apt and dpkg run as root."""
    made: dict[str, Entry] = {}
    for text in fragments:
        for kind, path, mode, _user, _group, _age, arg in postprocess.tmpfiles_fields(text):
            rel = path.lstrip("/")
            parts = rel.split("/")
            if kind not in ("d", "L") or parts[0] != "var" or len(parts) < 2 or ".." in parts:
                continue
            if "%" in rel or rel in made or _under_link(made, parts):
                continue
            for i in range(2, len(parts)):
                parent = "/".join(parts[:i])
                made.setdefault(parent, Entry(parent, "dir", 0o40755, 0, 0, ()))
            if kind == "d":
                bits = int(mode, 8) if mode not in ("-", "") and mode.isdigit() else 0o755
                made[rel] = Entry(rel, "dir", 0o40000 | bits, 0, 0, ())
            elif arg != "-":
                made[rel] = Entry(rel, "symlink", 0o120777, 0, 0, (), target=arg)
    return [made[p] for p in sorted(made, key=lambda p: p.split("/"))]


def _under_link(made: dict[str, Entry], parts: list[str]) -> bool:
    parents = ("/".join(parts[:i]) for i in range(2, len(parts)))
    return any(p in made and made[p].kind == "symlink" for p in parents)
