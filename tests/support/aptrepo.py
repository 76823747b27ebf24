"""A real local apt repository for tests, signed with a throwaway GPG key.

Debian's layout (pool/COMPONENT/ and dists/SUITE/COMPONENT/binary-ARCH/Packages) or a flat one
(Packages and Release next to the .debs), indices and Release by apt-ftparchive, InRelease and
Release.gpg by gpg. Usable by `file:` URI or served over HTTP on loopback (tests.support.httpd).
Publishing is deterministic apart from the signatures: Release's Date counts publications from
a fixed epoch instead of reading the clock.
"""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import functools
import gzip
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree.errors import CommandError
from apt_ostree.run import run
from tests.support.debs import EPOCH, DebSpec, build_deb

ORIGIN = "apt-ostree-tests"


@dataclass(frozen=True)
class GpgKey:
    homedir: Path  # a GNUPGHOME holding the secret key
    fingerprint: str
    keyring: Path  # binary public keyring (`gpg --export`), usable as Signed-By


def _gpg(home: Path, *args: str | Path) -> str:
    return run(
        ["gpg", "--batch", "--quiet", "--no-tty", *args], env={"GNUPGHOME": str(home)}
    ).stdout


def make_gpg_key(name: str = "apt-ostree test repository") -> GpgKey:
    """A new passphrase-less ed25519 signing key in its own GNUPGHOME (tens of milliseconds)."""
    # Under /tmp, not pytest's deep tmp_path: gpg-agent's socket path must fit in sun_path.
    home = Path(tempfile.mkdtemp(prefix="gnupg-"))
    atexit.register(_forget_key, home)
    _gpg(
        home,
        "--passphrase",
        "",
        "--quick-gen-key",
        f"{name} <tests@localhost>",
        "ed25519",
        "sign",
        "never",
    )
    colons = _gpg(home, "--with-colons", "--list-secret-keys")
    fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr"))
    keyring = home / "public.gpg"
    _gpg(home, "--output", keyring, "--export", fingerprint)
    return GpgKey(home, fingerprint, keyring)


def _forget_key(home: Path) -> None:
    """Stop the gpg-agent that signing started for `home`, and remove the key."""
    with contextlib.suppress(CommandError):
        run(["gpgconf", "--kill", "gpg-agent"], env={"GNUPGHOME": str(home)})
    shutil.rmtree(home, ignore_errors=True)


@functools.cache
def shared_gpg_key(role: str = "repository") -> GpgKey:
    """One key per role per test process; "other" is the stranger for wrong-key tests."""
    return make_gpg_key(f"apt-ostree test {role}")


class AptRepo:
    """A signed apt repository in `path`; `add` packages, then `publish` (again after changes)."""

    def __init__(
        self,
        path: Path,
        *,
        suite: str = "stable",
        codename: str | None = None,
        component: str = "main",
        architectures: Sequence[str] = ("amd64",),
        flat: bool = False,
        key: GpgKey | None = None,
    ) -> None:
        self.path = path.absolute()
        self.suite = suite
        self.codename = codename or suite
        self.component = component
        self.architectures = tuple(architectures)
        self.flat = flat
        self.key = key or shared_gpg_key()
        self.publications = 0
        self.pool.mkdir(parents=True, exist_ok=True)

    # ---- where things are ----

    @property
    def pool(self) -> Path:
        return self.path if self.flat else self.path / "pool" / self.component

    @property
    def dist(self) -> Path:
        """The folder holding Release, InRelease and Release.gpg."""
        return self.path if self.flat else self.path / "dists" / self.suite

    def binary_dirs(self) -> list[Path]:
        """The folders holding Packages and Packages.gz."""
        if self.flat:
            return [self.path]
        return [self.dist / self.component / f"binary-{a}" for a in self.architectures]

    @property
    def keyring(self) -> Path:
        return self.key.keyring

    @property
    def file_uri(self) -> str:
        return self.path.as_uri()

    def deb822_source(self, uri: str | None = None, *, signed_by: Path | None = None) -> str:
        """A sources.list.d/*.sources stanza for this repository at `uri` (default file:)."""
        lines = ["Types: deb", f"URIs: {uri or self.file_uri}"]
        lines += (
            ["Suites: ./"]
            if self.flat
            else [f"Suites: {self.suite}", f"Components: {self.component}"]
        )
        lines.append(f"Signed-By: {signed_by or self.keyring}")
        return "\n".join(lines) + "\n"

    # ---- content ----

    def add(self, *specs: DebSpec) -> list[Path]:
        """Build `specs` into the pool (unpublished until `publish`)."""
        return [build_deb(spec, self.pool) for spec in specs]

    def add_debs(self, debs: Iterable[Path]) -> list[Path]:
        """Hard-link (or copy) existing .deb files into the pool, keeping their names."""
        added = []
        for deb in debs:
            dest = self.pool / deb.name
            if not (dest.exists() and dest.samefile(deb)):
                dest.unlink(missing_ok=True)
                try:
                    os.link(deb, dest)
                except OSError:
                    shutil.copyfile(deb, dest)
            added.append(dest)
        return added

    def remove(self, name: str, version: str | None = None) -> list[Path]:
        """Take package `name` (all versions, or one) out of the pool."""
        upstream = "*" if version is None else version.partition(":")[2] or version
        gone = sorted(self.pool.glob(f"{name}_{upstream}_*.deb"))
        for deb in gone:
            deb.unlink()
        return gone

    def debs(self) -> list[Path]:
        return sorted(self.pool.glob("*.deb"))

    # ---- indices and signatures ----

    def _ftparchive(self, *args: str) -> str:
        return run(["apt-ftparchive", *args], cwd=self.path).stdout

    def _write_packages(self) -> None:
        if self.flat:
            self._write_index(self.path, self._ftparchive("packages", "."))
            return
        pool = str(self.pool.relative_to(self.path))
        for arch, binary in zip(self.architectures, self.binary_dirs(), strict=True):
            # --arch keeps *_ARCH.deb and *_all.deb: Architecture: all is in every binary-ARCH.
            self._write_index(binary, self._ftparchive("--arch", arch, "packages", pool))

    @staticmethod
    def _write_index(binary: Path, packages: str) -> None:
        binary.mkdir(parents=True, exist_ok=True)
        (binary / "Packages").write_text(packages)
        _write_gzip(binary / "Packages.gz", packages.encode())

    def _date(self) -> int:
        return EPOCH + 60 * self.publications

    def _release_options(self) -> list[str]:
        fields = {
            "Origin": ORIGIN,
            "Label": ORIGIN,
            "Suite": self.suite,
            "Codename": self.codename,
            "Date": email.utils.formatdate(self._date(), usegmt=True),
            "Architectures": " ".join(self.architectures),
            "Components": "" if self.flat else self.component,
        }
        options = []
        for name, value in fields.items():
            if value:
                options += ["-o", f"APT::FTPArchive::Release::{name}={value}"]
        return options

    def publish(self) -> None:
        """(Re)write Packages, Release, InRelease and Release.gpg for what the pool holds now."""
        self.publications += 1
        self._write_packages()
        for old in ("Release", "InRelease", "Release.gpg"):
            (self.dist / old).unlink(missing_ok=True)
        where = "." if self.flat else str(self.dist.relative_to(self.path))
        release = self._ftparchive(*self._release_options(), "release", where)
        (self.dist / "Release").write_text(release)
        self.sign()
        # mtimes follow Date, so a client's If-Modified-Since (apt's file: and http methods)
        # sees each publication as newer even when two happen within the same second.
        date = self._date()
        for index in (*self.binary_dirs(), self.dist):
            for name in ("Packages", "Packages.gz", "Release", "InRelease", "Release.gpg"):
                if (index / name).exists():
                    os.utime(index / name, (date, date))

    def sign(self, key: GpgKey | None = None) -> None:
        """Sign the current Release as InRelease and Release.gpg with `key` (default ours)."""
        key = key or self.key
        release = self.dist / "Release"
        base = ["--yes", "--local-user", key.fingerprint, "--digest-algo", "SHA512"]
        _gpg(key.homedir, *base, "--clearsign", "--output", self.dist / "InRelease", release)
        _gpg(
            key.homedir,
            *base,
            "--armor",
            "--detach-sign",
            "--output",
            self.dist / "Release.gpg",
            release,
        )

    # ---- bad repositories, for negative tests ----

    def strip_signatures(self) -> None:
        """No InRelease, no Release.gpg: an unsigned repository."""
        (self.dist / "InRelease").unlink(missing_ok=True)
        (self.dist / "Release.gpg").unlink(missing_ok=True)

    def sign_with_other_key(self, key: GpgKey | None = None) -> GpgKey:
        """Signed, but by a key that is not `keyring` (by default the session's "other" key)."""
        other = key or shared_gpg_key("other")
        self.sign(other)
        return other

    def tamper_packages(self) -> None:
        """Add a stanza to every Packages index after Release was made: a hash mismatch."""
        intruder = "\nPackage: intruder\nVersion: 6.6.6\nArchitecture: all\nFilename: x.deb\n"
        for binary in self.binary_dirs():
            self._write_index(binary, (binary / "Packages").read_text() + intruder)

    def tamper_deb(self, filename: str) -> Path:
        """Change one published .deb in the pool: apt refuses it at download (size/hash)."""
        deb = self.pool / filename
        data = deb.read_bytes()
        deb.unlink()  # it may be a hard link to a cached original: never write through it
        deb.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
        return deb


def _write_gzip(path: Path, data: bytes) -> None:
    """gzip with no name or time in the header, so equal input gives equal bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(data)
