"""Reproducible tar layers: the same entries give the same bytes, so the same commit gives the
same image digest (entries in the given order, mtime 0, numeric owners, no user or group
names, xattrs as PAX `SCHILY.xattr.` records, gzip with no name and no time)."""

from __future__ import annotations

import gzip
import hashlib
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from apt_ostree.ostree_container import Entry

GZIP_LEVEL = 6


@dataclass(frozen=True)
class Blob:
    """A layer written to disk: its compressed digest and size, and its uncompressed digest
    (the image config's diff_id)."""

    path: Path
    digest: str  # "sha256:..."
    size: int
    diff_id: str


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


_KINDS = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}


def tar_info(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path + "/" if entry.kind == "dir" else entry.path or ".")
    if entry.path == "":
        info.name = "./"
    info.type = _KINDS[entry.kind]
    info.mode = stat.S_IMODE(entry.mode)
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = 0
    info.size = entry.size if entry.kind == "file" else 0
    info.linkname = entry.target
    info.pax_headers = {
        "SCHILY.xattr." + k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
        for k, v in entry.xattrs
    }
    return info


def write_layer(path: Path, entries: Iterable[Entry], content: Callable[[str], BinaryIO]) -> Blob:
    """Write `entries` as a gzip'd tar at `path`; `content(checksum)` opens a file's bytes."""
    with path.open("wb") as raw:
        compressed = _Hashing(raw)
        gz = gzip.GzipFile(
            filename="", mode="wb", fileobj=cast(BinaryIO, compressed), mtime=0,
            compresslevel=GZIP_LEVEL,
        )  # fmt: skip
        with gz:
            plain = _Hashing(cast(BinaryIO, gz))
            tar = tarfile.open(fileobj=cast(BinaryIO, plain), mode="w|", format=tarfile.PAX_FORMAT)
            with tar:
                for entry in entries:
                    info = tar_info(entry)
                    tar.addfile(info, content(entry.checksum) if entry.kind == "file" else None)
    return Blob(
        path,
        "sha256:" + compressed.sha.hexdigest(),
        compressed.size,
        "sha256:" + plain.sha.hexdigest(),
    )
