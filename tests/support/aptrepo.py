"""A real local apt repository for tests, signed with a throwaway GPG key.

Layout as Debian's archive (pool/ and dists/SUITE/COMPONENT/binary-ARCH/Packages), indices by
apt-ftparchive, InRelease and Release.gpg by gpg. Usable as a `file:` URI or served over
HTTP on loopback (tests.support.httpd).
"""

from __future__ import annotations

import atexit
import functools
import gzip
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.support.debs import DebSpec, build_deb


@dataclass(frozen=True)
class GpgKey:
    homedir: Path
    fingerprint: str
    keyring: Path  # binary public keyring, usable as Signed-By


def make_gpg_key(name: str = "apt-ostree test repository") -> GpgKey:
    """A new passphrase-less ed25519 signing key in its own GNUPGHOME."""
    home = Path(tempfile.mkdtemp(prefix="gnupg-"))
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--quiet",
            "--passphrase",
            "",
            "--quick-gen-key",
            name,
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    out = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    fingerprint = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))
    keyring = home / "public.gpg"
    keyring.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--export", fingerprint], check=True, capture_output=True, env=env
        ).stdout
    )
    atexit.register(_forget_key, home)
    return GpgKey(home, fingerprint, keyring)


def _forget_key(home: Path) -> None:
    """Stop the gpg-agent that signing started for `home`, and remove the key."""
    subprocess.run(
        ["gpgconf", "--kill", "gpg-agent"],
        env={**os.environ, "GNUPGHOME": str(home)},
        check=False,
        capture_output=True,
    )
    shutil.rmtree(home, ignore_errors=True)


@functools.cache
def shared_gpg_key() -> GpgKey:
    """One key per test process: key generation is the slow part of a repository."""
    return make_gpg_key()


class AptRepo:
    def __init__(
        self,
        path: Path,
        *,
        suite: str = "stable",
        component: str = "main",
        architecture: str = "amd64",
        key: GpgKey | None = None,
    ) -> None:
        self.path = path
        self.suite = suite
        self.component = component
        self.architecture = architecture
        self.key = key or shared_gpg_key()
        self.pool = path / "pool" / component
        self.pool.mkdir(parents=True, exist_ok=True)

    @property
    def keyring(self) -> Path:
        return self.key.keyring

    @property
    def file_uri(self) -> str:
        return f"file://{self.path}"

    @property
    def dist(self) -> Path:
        return self.path / "dists" / self.suite

    def deb822_source(self, uri: str | None = None) -> str:
        return (
            f"Types: deb\nURIs: {uri or self.file_uri}\nSuites: {self.suite}\n"
            f"Components: {self.component}\nSigned-By: {self.keyring}\n"
        )

    def add(self, *specs: DebSpec) -> list[Path]:
        return [build_deb(spec, self.pool) for spec in specs]

    def add_debs(self, debs: Iterable[Path]) -> None:
        for deb in debs:
            dest = self.pool / deb.name
            if not dest.exists():
                try:
                    os.link(deb, dest)
                except OSError:
                    shutil.copy2(deb, dest)

    def _ftparchive(self, *args: str) -> str:
        return subprocess.run(
            ["apt-ftparchive", *args], cwd=self.path, check=True, capture_output=True, text=True
        ).stdout

    def publish(self) -> None:
        """(Re)write the indices and signatures for what the pool holds now."""
        binary = self.dist / self.component / f"binary-{self.architecture}"
        binary.mkdir(parents=True, exist_ok=True)
        packages = self._ftparchive("packages", f"pool/{self.component}")
        (binary / "Packages").write_text(packages)
        with gzip.GzipFile(binary / "Packages.gz", "wb", mtime=0) as f:
            f.write(packages.encode())
        for old in ("Release", "InRelease", "Release.gpg"):
            (self.dist / old).unlink(missing_ok=True)
        release = self._ftparchive(
            "-o",
            f"APT::FTPArchive::Release::Suite={self.suite}",
            "-o",
            f"APT::FTPArchive::Release::Codename={self.suite}",
            "-o",
            f"APT::FTPArchive::Release::Components={self.component}",
            "-o",
            f"APT::FTPArchive::Release::Architectures={self.architecture}",
            "-o",
            "APT::FTPArchive::Release::Origin=apt-ostree-tests",
            "-o",
            "APT::FTPArchive::Release::Label=apt-ostree-tests",
            "release",
            str(self.dist.relative_to(self.path)),
        )
        (self.dist / "Release").write_text(release)
        self.sign()

    def sign(self, key: GpgKey | None = None) -> None:
        key = key or self.key
        env = {**os.environ, "GNUPGHOME": str(key.homedir)}
        base = ["gpg", "--batch", "--yes", "--quiet", "--local-user", key.fingerprint]
        release = str(self.dist / "Release")
        subprocess.run(
            [*base, "--clearsign", "-o", str(self.dist / "InRelease"), release],
            check=True,
            capture_output=True,
            env=env,
        )
        subprocess.run(
            [*base, "--armor", "--detach-sign", "-o", str(self.dist / "Release.gpg"), release],
            check=True,
            capture_output=True,
            env=env,
        )

    # ---- bad repositories, for negative tests ----

    def strip_signatures(self) -> None:
        """No InRelease, no Release.gpg: an unsigned repository."""
        (self.dist / "InRelease").unlink(missing_ok=True)
        (self.dist / "Release.gpg").unlink(missing_ok=True)

    def sign_with_other_key(self) -> GpgKey:
        """Signed, but by a key that is not the published keyring."""
        other = make_gpg_key("someone else")
        self.sign(other)
        return other

    def tamper_packages(self) -> None:
        """Change the Packages index after Release was made: a hash mismatch."""
        binary = self.dist / self.component / f"binary-{self.architecture}"
        packages = binary / "Packages"
        text = packages.read_text() + "\nPackage: intruder\nVersion: 6.6.6\nArchitecture: all\n"
        packages.write_text(text)
        (binary / "Packages.gz").unlink(missing_ok=True)
