"""The layout of container image layers (apt_ostree.compose.chunking), on made-up trees: which
component a file belongs to, and a layout that stays put from one build to the next."""

from __future__ import annotations

import gzip
import io
from typing import BinaryIO

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
    entries += [_file("usr/lib/modules/6.1/initramfs.img"), _file("usr/share/factory/machine-info")]

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
        "usr/share/factory/machine-info": "rootfs",  # a folder no package lists
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


def _gzip(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def _entry(source: str, version: str) -> str:
    return (
        f"{source} ({version}) bookworm; urgency=medium\n\n  * x\n\n -- M <m@x>  Mon, 1 Jan 2024\n"
    )


def _unread(checksum: str) -> BinaryIO:
    raise AssertionError(f"{checksum} read: no changelog is there")


def test_likely_changes_stable_updates_from_changelogs_and_vendor_packages_without_one() -> None:
    logs = {
        "usr/share/doc/libssl3/changelog.Debian.gz": _gzip(
            _entry("openssl", "3.0.15-1~deb12u2")
            + _entry("openssl", "3.0.15-1~deb12u1")
            + _entry("openssl", "3.0.11-1")
            + _entry("openssl", "3.0.9-1+deb11u1")  # an older release's: not counted
        ),
        "usr/share/doc/bash/changelog.Debian.gz": _gzip(_entry("bash", "5.2.15-2")),
    }
    owned = {
        "usr/share/doc/libssl3/changelog.Debian.gz": "openssl",
        "usr/share/doc/bash/changelog.Debian.gz": "bash",
        "usr/bin/bash": "bash",
        "usr/bin/vendor-agent": "vendor-agent",  # the vendor's: no Debian changelog
    }
    entries = [_file(p) for p in owned]
    assert chunking.expected_changes(entries, owned, lambda c: io.BytesIO(logs[c])) == {
        "openssl": 2,
        "bash": 0,
        "vendor-agent": chunking.VENDOR,
    }
    # no documentation in the image: packages without a changelog are not the vendor's
    bare = {p: s for p, s in owned.items() if "doc" not in p} | {"usr/bin/ls": "coreutils"}
    assert chunking.expected_changes([_file(p) for p in bare], bare, _unread) == {}


def test_files_the_compose_makes_go_with_the_package_of_their_folder() -> None:
    lists = {
        "linux-image-6.1:amd64": [
            "/lib/modules/6.1/kernel/ext4.ko",
            "/lib/modules/6.1/modules.order",
        ],
        "linux-headers-6.1:amd64": ["/lib/modules/6.1/build"],
        "udev:amd64": ["/lib/udev/ata_id", "/lib/udev/cdrom_id"],
        "lvm2:amd64": ["/lib/udev/lvm_id"],
    }
    status = "\n\n".join(
        f"Package: {n.split(':')[0]}\nStatus: install ok installed\nArchitecture: amd64\n"
        f"Source: {'systemd' if 'udev' in n else 'lvm2' if 'lvm' in n else 'linux'}"
        for n in lists
    ).encode()
    contents = {f"{chunking.DPKG}/status": status} | {
        f"{chunking.DPKG}/info/{n}.list": "\n".join(p).encode() for n, p in lists.items()
    }
    made = [
        "usr/lib/modules/6.1/vmlinuz",  # moved from /boot by the compose
        "usr/lib/modules/6.1/modules.dep",  # depmod's
        "usr/lib/modules/6.1/initramfs.img",
        "usr/lib/udev/hwdb.bin",  # systemd-hwdb's: udev lists most files of the folder
        "usr/etc/ld.so.cache",
    ]

    def read(c: str) -> bytes:
        return contents[c]

    listed = [chunking.tree_path(p) for paths in lists.values() for p in paths]
    entries = [_file(p) for p in [*contents, *listed, *made]]
    owned = chunking.owners(entries, chunking.status_sources(entries, read), read)
    assert {p: chunking.component_of(_file(p), owned) for p in made} == {
        "usr/lib/modules/6.1/vmlinuz": "linux",
        "usr/lib/modules/6.1/modules.dep": "linux",
        "usr/lib/modules/6.1/initramfs.img": "initramfs",
        "usr/lib/udev/hwdb.bin": "systemd",
        "usr/etc/ld.so.cache": "rootfs",
    }


def test_likely_changes_get_own_layers_within_a_third_of_the_budget() -> None:
    sizes = {f"pkg{i:03}": 1000 + i for i in range(200)} | {"rootfs": 5, "sysimage": 5}
    expected = {f"pkg{i:03}": 1 for i in range(20)} | {"pkg020": chunking.VENDOR}
    layout = chunking.assign(sizes, {}, expected, max_layers=30)
    own = {c for c, layer in layout.items() if c == layer and c.startswith("pkg")}
    assert "pkg020" in own and "pkg199" in own  # the vendor's package, and the largest
    assert len(own & set(expected)) == 30 // 3
    assert len(set(layout.values())) <= 30 - 1
    # at the smallest budget, no likely package takes a bucket's place
    tight = chunking.assign(sizes, {}, expected, max_layers=chunking.MIN_LAYERS)
    assert len(set(tight.values())) <= chunking.MIN_LAYERS - 1
