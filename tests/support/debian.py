"""Real Debian packages for tests, fetched once through the host's apt sources, and composes
from the Debian archive.

Composes in tests need a real Essential set (dpkg, libc, coreutils ...): it is resolved and
downloaded with the project's own resolver from the host's sources into a cache that outlives
the test session, then published into the local test repository next to the packages the
tests build, so each compose runs against a small, local, signed repository.

Composes of whole systems (examples/minimal.yaml, with or without apt-ostree in it) use the
archive itself, with `compose tree --cachedir CACHE/compose` (`compose_from_archive`).

Test sessions running at the same time (pytest-xdist's workers, or two runs) share CACHE:
each use of its apt roots takes `cache_lock` first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from apt_ostree.aptpkg.host import native_architecture
from apt_ostree.aptpkg.resolve import Request, Variant, resolve
from apt_ostree.aptpkg.root import AptRoot
from apt_ostree.aptpkg.sources import read_host_sources, sources_key
from apt_ostree.progress import Progress

# the release of the Essential sets in the tests' local repositories (the build host's own)
SUITE = "bookworm"
CACHE = Path(os.environ.get("APT_OSTREE_TEST_CACHE", "/var/cache/apt-ostree-tests"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# examples/minimal.yaml: Debian 13, the image the VM scenarios boot; its ref and first version
EXAMPLE_SUITE = "trixie"
EXAMPLE_VERSION = "13"
MINIMAL_REF = f"debian/{EXAMPLE_SUITE}/amd64/minimal"
# examples/minimal-bookworm.yaml: the same image on Debian 12, kept honest by the GRUB boots
BOOKWORM_EXAMPLE = EXAMPLES / "minimal-bookworm.yaml"
BOOKWORM_REF = f"debian/{SUITE}/amd64/minimal"


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (made with its folders): users of the same cached
    files take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def host_apt_root(cache: Path = CACHE) -> AptRoot:
    repos = read_host_sources(SUITE)
    arch = native_architecture()
    return AptRoot(
        cache / "apt" / sources_key(repos, arch),
        repos,
        archives=cache / "archives",
        architecture=arch,
    )


def fetch_debian_debs(
    packages: Sequence[str] = (), *, variant: Variant = Variant.ESSENTIAL, cache: Path = CACHE
) -> list[Path]:
    """Resolve `variant` + `packages` against the host's sources and download the closure."""
    with cache_lock(cache / "apt.lock"):
        apt = host_apt_root(cache)
        apt.update(Progress())
        resolved = resolve(apt, Request(variant=variant, packages=tuple(packages), suite=SUITE))
        return apt.download(resolved, Progress())


def compose_from_archive(
    treefile: Path, repo: Path, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`apt-ostree compose tree TREEFILE --repo REPO` with the shared --cachedir CACHE/compose;
    `env` adds to the environment. AssertionError (with compose's stderr) when it fails."""
    cachedir = CACHE / "compose"
    with cache_lock(cachedir / "lock"):
        result = subprocess.run(
            [sys.executable, "-m", "apt_ostree.cli.main", "compose", "tree", str(treefile),
             "--repo", str(repo), "--cachedir", str(cachedir)],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result
