"""Real Debian packages for tests, fetched once through the host's apt sources.

Composes in tests need a real Essential set (dpkg, libc, coreutils ...): it is resolved and
downloaded with the project's own resolver from the host's sources into a cache that outlives
the test session, then published into the local test repository next to the packages the
tests build, so each compose runs against a small, local, signed repository.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from apt_ostree.aptpkg.host import native_architecture
from apt_ostree.aptpkg.resolve import Request, Variant, resolve
from apt_ostree.aptpkg.root import AptRoot
from apt_ostree.aptpkg.sources import read_host_sources, sources_key
from apt_ostree.progress import Progress

SUITE = "bookworm"
CACHE = Path(os.environ.get("APT_OSTREE_TEST_CACHE", "/var/cache/apt-ostree-tests"))


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
    apt = host_apt_root(cache)
    apt.update(Progress())
    resolved = resolve(apt, Request(variant=variant, packages=tuple(packages), suite=SUITE))
    return apt.download(resolved, Progress())
