"""Walking the trees of commits, for `apt_ostree.ostree.Repo`: a path resolved with its links
followed inside the commit, and two trees compared folder by folder (only folders whose
checksums differ are entered). Both work on the commit's root as GIO files (OstreeRepoFile),
so nothing is checked out.
"""

from __future__ import annotations

from typing import Any

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio  # noqa: E402

# ---- a path of a commit (Repo.read_file) ----

_LINK_HOPS = 16


def resolve_in_commit(root: Any, path: str) -> Any:
    """The commit's file at `path` with every symbolic link on the way followed inside the
    commit (absolute targets from its root), or None when absent or a loop."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            done = done[:-1]
            continue
        child = root.resolve_relative_path("/".join([*done, name]))
        if not child.query_exists(None):
            return None
        info = child.query_info(
            "standard::type,standard::symlink-target",
            Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS,
            None,
        )
        if info.get_file_type() != Gio.FileType.SYMBOLIC_LINK:
            done.append(name)
            continue
        hops += 1
        if hops > _LINK_HOPS:
            return None
        target = info.get_symlink_target()
        if target.startswith("/"):
            done = []
        parts = [p for p in target.split("/") if p and p != "."] + parts
    return root.resolve_relative_path("/".join(done)) if done else root


# ---- comparing the trees of two commits (Repo.diff_commits) ----


def _children(folder: Any) -> dict[str, tuple[Any, Any]]:
    """name -> (GFile, Gio.FileType) of a folder of a commit."""
    out: dict[str, tuple[Any, Any]] = {}
    infos = folder.enumerate_children(
        "standard::name,standard::type", Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None
    )
    while (info := infos.next_file(None)) is not None:
        out[info.get_name()] = (folder.get_child(info.get_name()), info.get_file_type())
    return out


def _same(a: Any, b: Any, kind: Any) -> bool:
    a.ensure_resolved()
    b.ensure_resolved()
    if kind == Gio.FileType.DIRECTORY:
        return bool(
            a.tree_get_contents_checksum() == b.tree_get_contents_checksum()
            and a.tree_get_metadata_checksum() == b.tree_get_metadata_checksum()
        )
    return bool(a.get_checksum() == b.get_checksum())  # content and metadata, as ostree's


def _all_below(folder: Any, rel: str, out: list[str]) -> None:
    for name, (child, kind) in sorted(_children(folder).items()):
        out.append(f"{rel}/{name}")
        if kind == Gio.FileType.DIRECTORY:
            _all_below(child, f"{rel}/{name}", out)


def diff_folders(a: Any, b: Any, rel: str, diff: tuple[list[str], list[str], list[str]]) -> None:
    added, modified, removed = diff
    old, new = _children(a), _children(b)
    for name in sorted(old.keys() | new.keys()):
        path = f"{rel}/{name}" if rel else name
        if name not in new:
            removed.append(path)
            continue
        child, kind = new[name]
        if name not in old:
            added.append(path)
            if kind == Gio.FileType.DIRECTORY:
                _all_below(child, path, added)
            continue
        old_child, old_kind = old[name]
        if old_kind != kind:
            modified.append(path)
            if kind == Gio.FileType.DIRECTORY:
                _all_below(child, path, modified)
        elif not _same(old_child, child, kind):
            if kind == Gio.FileType.DIRECTORY:
                old_child.ensure_resolved()
                child.ensure_resolved()
                if old_child.tree_get_metadata_checksum() != child.tree_get_metadata_checksum():
                    modified.append(path)
                diff_folders(old_child, child, path, diff)
            else:
                modified.append(path)
