"""libostree for container images: read a commit's tree as entries to put in tar layers, and
write the tree back from the layers of an image (the other half of `apt_ostree.ostree`, the
one adapter to `gi.repository.OSTree`).

A commit travels in an image as path-based tar layers plus its commit object (see
docs/container.md). The client imports each layer with libostree's own libarchive import
(`write_archive_to_mtree`: owners, modes and xattrs as the tar carries them) as a commit of its
own, then joins the layers' trees by checksum, without reading a file, and writes the image's
commit object on that tree only when the tree's checksum is the one the object names: the
client gets the very commit the vendor composed, or an error.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gi

gi.require_version("OSTree", "1.0")
from gi.repository import Gio, GLib, OSTree  # noqa: E402

from apt_ostree import ostree  # noqa: E402
from apt_ostree.errors import RepoError  # noqa: E402

Xattrs = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Entry:
    """One path of a commit's tree, as a tar layer carries it."""

    path: str  # relative, no leading "/" ("" is the root)
    kind: str  # "dir", "file" or "symlink"
    mode: int  # the full st_mode
    uid: int
    gid: int
    xattrs: Xattrs
    size: int = 0
    checksum: str = ""  # a file's content object
    target: str = ""  # a symlink's


def _gi(repo: ostree.Repo) -> Any:
    return repo._repo  # the adapter's own object, shared with its companion module


def _hex(raw: bytes) -> str:
    return bytes(raw).hex()


def _xattrs(variant: Any) -> Xattrs:
    if variant is None:
        return ()
    return tuple((bytes(k).rstrip(b"\0"), bytes(v)) for k, v in variant.unpack())


def _dirmeta(gi: Any, checksum: str) -> tuple[int, int, int, Xattrs]:
    _, variant = gi.load_variant(OSTree.ObjectType.DIR_META, checksum)
    uid, gid, mode = (struct.unpack(">I", struct.pack("=I", v))[0] for v in variant.unpack()[:3])
    return uid, gid, mode, _xattrs(variant.get_child_value(3))


def walk_commit(repo: ostree.Repo, checksum: str) -> Iterator[Entry]:
    """Every path of the commit's tree, parents before children, names sorted (as libostree
    sorts them), without checking anything out."""
    gi = _gi(repo)
    try:
        _, commit = gi.load_variant(OSTree.ObjectType.COMMIT, checksum)
        yield from _walk(gi, "", *_root_of(gi, commit))
    except GLib.Error as e:
        raise RepoError(f"cannot read the tree of {checksum}: {e.message}") from e


def _walk(gi: Any, path: str, contents: str, meta: str) -> Iterator[Entry]:
    uid, gid, mode, xattrs = _dirmeta(gi, meta)
    yield Entry(path, "dir", mode, uid, gid, xattrs, checksum=meta)
    _, tree = gi.load_variant(OSTree.ObjectType.DIR_TREE, contents)
    files, dirs = tree.unpack()
    children = [(name, False, _hex(c), "") for name, c in files]
    children += [(name, True, _hex(c), _hex(m)) for name, c, m in dirs]
    for name, is_dir, child, child_meta in sorted(children):
        rel = f"{path}/{name}" if path else name
        if is_dir:
            yield from _walk(gi, rel, child, child_meta)
        else:
            yield _file_entry(gi, rel, child)


def _file_entry(gi: Any, path: str, checksum: str) -> Entry:
    _, _, info, xattrs = gi.load_file(checksum, None)
    mode = info.get_attribute_uint32("unix::mode")
    uid, gid = info.get_attribute_uint32("unix::uid"), info.get_attribute_uint32("unix::gid")
    if info.get_file_type() == Gio.FileType.SYMBOLIC_LINK:
        target = info.get_symlink_target()
        return Entry(path, "symlink", mode, uid, gid, _xattrs(xattrs), 0, checksum, target)
    return Entry(path, "file", mode, uid, gid, _xattrs(xattrs), info.get_size(), checksum)


class _Reader:
    """A file-like view of a content object's bytes (what tarfile.addfile reads)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        chunks: list[bytes] = []
        want = size if size >= 0 else 1 << 62
        while want > 0:
            chunk = bytes(self._stream.read_bytes(min(want, 1 << 20), None).get_data())
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        return b"".join(chunks)


def open_content(repo: ostree.Repo, checksum: str) -> BinaryIO:
    """The content of a regular file's object, to read once."""
    try:
        _, stream, _, _ = _gi(repo).load_file(checksum, None)
    except GLib.Error as e:
        raise RepoError(f"cannot read object {checksum}: {e.message}") from e
    return _Reader(stream)  # type: ignore[return-value]


def commit_object(repo: ostree.Repo, checksum: str) -> tuple[bytes, bytes | None]:
    """The commit object's serialized bytes, and its detached metadata's (signatures)."""
    gi = _gi(repo)
    try:
        _, commit = gi.load_variant(OSTree.ObjectType.COMMIT, checksum)
        _, detached = gi.read_commit_detached_metadata(checksum, None)
    except GLib.Error as e:
        raise RepoError(f"cannot read commit {checksum}: {e.message}") from e
    meta = bytes(detached.get_data_as_bytes().get_data()) if detached is not None else None
    return bytes(commit.get_data_as_bytes().get_data()), meta


def import_layer(repo: ostree.Repo, archive: Path, *, ref: str, subject: str) -> str:
    """Write the tar `archive` (any compression libarchive reads) as a commit of its own,
    moving `ref` to it; return the commit's checksum."""
    gi = _gi(repo)
    modifier = OSTree.RepoCommitModifier.new(OSTree.RepoCommitModifierFlags.NONE, None, None)
    with repo.transaction():
        try:
            mtree = OSTree.MutableTree.new()
            gi.write_archive_to_mtree(Gio.File.new_for_path(str(archive)), mtree, modifier, True)
            _, root = gi.write_mtree(mtree, None)
            empty = GLib.Variant("a{sv}", {})
            _, checksum = gi.write_commit_with_time(None, subject, None, empty, root, 0, None)
        except GLib.Error as e:
            raise RepoError(f"cannot import layer {archive.name}: {e.message}") from e
        gi.transaction_set_ref(None, ref, checksum)
    return str(checksum)


def checkout_union(repo: ostree.Repo, checksum: str, dest: Path) -> None:
    """Check out `checksum` into the folder `dest` over what it has (files replaced, folders
    merged), as copies: `dest` is scratch to change."""
    options = OSTree.RepoCheckoutAtOptions()
    bare = _gi(repo).get_mode() == OSTree.RepoMode.BARE
    options.mode = OSTree.RepoCheckoutMode.NONE if bare else OSTree.RepoCheckoutMode.USER
    options.overwrite_mode = OSTree.RepoCheckoutOverwriteMode.UNION_FILES
    options.force_copy = True
    try:
        _gi(repo).checkout_at(options, ostree.AT_FDCWD, str(dest), checksum, None)
    except GLib.Error as e:
        raise RepoError(f"cannot check out layer {checksum}: {e.message}") from e


def _merge(gi: Any, mtree: Any, contents: str, meta: str, *, root: bool = False) -> None:
    """Add the tree `contents` (with root metadata `meta`) into `mtree`, by checksum. At the
    `root` of a layer in the container view (apt_ostree.container.view), /etc goes into
    /usr/etc and the children of /var are left out."""
    mtree.set_metadata_checksum(meta)
    _, tree = gi.load_variant(OSTree.ObjectType.DIR_TREE, contents)
    files, dirs = tree.unpack()
    for name, checksum in files:
        mtree.replace_file(name, _hex(checksum))
    for name, child, child_meta in dirs:
        if root and name == "var":
            _, sub = mtree.ensure_dir(name)
            sub.set_metadata_checksum(_hex(child_meta))
            continue
        if root and name == "etc":
            _, usr = mtree.ensure_dir("usr")
            _, sub = usr.ensure_dir("etc")
        else:
            _, sub = mtree.ensure_dir(name)
        _merge(gi, sub, _hex(child), _hex(child_meta))


def _root_of(gi: Any, commit: Any) -> tuple[str, str]:
    contents = _hex(commit.get_child_value(6).get_data_as_bytes().get_data())
    return contents, _hex(commit.get_child_value(7).get_data_as_bytes().get_data())


def commit_metadata(commit: bytes) -> dict[str, Any]:
    """The metadata of a serialized commit object (one not written to any repository)."""
    variant = GLib.Variant.new_from_bytes(
        GLib.VariantType.new("(a{sv}aya(say)sstayay)"), GLib.Bytes.new(commit), False
    )
    metadata = variant.get_child_value(0)
    # numbers in ostree's objects are big-endian (as apt_ostree.ostree reads them)
    swapped = metadata.byteswap() if sys.byteorder == "little" else metadata
    return dict(swapped.unpack())


def write_image_commit(
    repo: ostree.Repo,
    checksum: str,
    commit: bytes,
    detached: bytes | None,
    layers: Sequence[str],
) -> None:
    """Join the trees of the layer commits `layers` (in order) and write the commit object
    `commit` on the result, checked to be the object named `checksum` whose root is exactly
    that tree."""
    gi = _gi(repo)
    variant = GLib.Variant.new_from_bytes(
        GLib.VariantType.new("(a{sv}aya(say)sstayay)"), GLib.Bytes.new(commit), False
    )
    with repo.transaction():
        try:
            mtree = OSTree.MutableTree.new()
            for layer in layers:
                _, layer_commit = gi.load_variant(OSTree.ObjectType.COMMIT, layer)
                _merge(gi, mtree, *_root_of(gi, layer_commit), root=True)
            _, root = gi.write_mtree(mtree, None)
            want = _root_of(gi, variant)
            got = (root.tree_get_contents_checksum(), root.tree_get_metadata_checksum())
            if got != want:
                raise RepoError(
                    f"the image's layers do not make the tree of commit {checksum}"
                    f" (tree {got[0][:12]}, expected {want[0][:12]})"
                )
            gi.write_metadata(OSTree.ObjectType.COMMIT, checksum, variant, None)
            if detached is not None:
                meta = GLib.Variant.new_from_bytes(
                    GLib.VariantType.new("a{sv}"), GLib.Bytes.new(detached), False
                )
                gi.write_commit_detached_metadata(checksum, meta, None)
        except GLib.Error as e:
            raise RepoError(f"cannot write commit {checksum} from the image: {e.message}") from e
