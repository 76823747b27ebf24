"""The layout of container image layers (apt_ostree.compose.chunking), on made-up trees: which
component a file belongs to, and a layout that stays put from one build to the next."""

from __future__ import annotations

from apt_ostree.compose import chunking
from apt_ostree.ostree_container import Entry

STATUS = b"""\
Package: libfoo1
Status: install ok installed
Architecture: amd64
Source: foo (1.2-1)
Version: 1.2-1+b1

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1
"""


def _file(path: str, size: int = 10, xattrs: tuple[tuple[bytes, bytes], ...] = ()) -> Entry:
    return Entry(path, "file", 0o100644, 0, 0, xattrs, size, checksum=path)


def test_files_belong_to_source_packages_xattr_components_or_the_special_layers() -> None:
    contents = {
        f"{chunking.DPKG}/status": STATUS,
        f"{chunking.DPKG}/info/libfoo1:amd64.list": b"/lib/x86_64/libfoo.so.1\n/etc/foo.conf\n",
    }
    entries = [_file(p) for p in contents]
    entries += [_file("usr/lib/x86_64/libfoo.so.1"), _file("usr/etc/foo.conf")]
    entries += [_file("usr/bin/tool", xattrs=((b"user.component", b"tools"),))]
    entries += [_file("usr/lib/modules/6.1/initramfs.img"), _file("usr/etc/machine-info")]

    def read(c: str) -> bytes:
        return contents[c]

    owned = chunking.owners(entries, chunking.status_sources(entries, read), read)
    assert {e.path: chunking.component_of(e, owned) for e in entries} == {
        f"{chunking.DPKG}/status": "sysimage",
        f"{chunking.DPKG}/info/libfoo1:amd64.list": "foo",
        "usr/lib/x86_64/libfoo.so.1": "foo",  # merged /usr: /lib is usr/lib in the commit
        "usr/etc/foo.conf": "foo",  # /etc is usr/etc in the commit
        "usr/bin/tool": "tools",
        "usr/lib/modules/6.1/initramfs.img": "initramfs",
        "usr/etc/machine-info": "rootfs",
    }
    assert chunking.parse_status(STATUS.decode()) == {"libfoo1": "foo", "libfoo1:amd64": "foo"}


def test_changed_then_large_components_get_own_layers_and_the_rest_stay_in_their_buckets() -> None:
    sizes = {f"pkg{i:03}": 1000 + i for i in range(200)} | {"rootfs": 5, "sysimage": 5}
    counts = {"pkg000": 3}  # the smallest package, but it changes
    layout = chunking.assign(sizes, counts, max_layers=30)
    assert layout["pkg000"] == "pkg000" and layout["pkg199"] == "pkg199"
    assert len(set(layout.values())) <= 30 - 1  # one layer is the commit's
    assert layout["rootfs"] == "rootfs" and layout["sysimage"] == "sysimage"
    # one more small package: every other component keeps its layer
    grown = chunking.assign(sizes | {"new": 1}, counts, max_layers=30)
    moved = [c for c in layout if grown[c] != layout[c]]
    assert moved == [], moved


def test_history_counts_version_changes_by_source() -> None:
    newest = [("libfoo1", "2", "amd64"), ("bar", "1", "amd64")]
    older = [("libfoo1", "1", "amd64"), ("bar", "1", "amd64")]
    assert chunking.changes([newest, older, older], {"libfoo1": "foo"}) == {"foo": 1}
