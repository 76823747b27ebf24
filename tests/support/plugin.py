"""pytest fixtures every test may use: .deb builder, signed apt repository, loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.aptrepo import AptRepo, GpgKey, shared_gpg_key
from tests.support.debian import EXAMPLES, compose_from_archive
from tests.support.debs import EPOCH, DebSpec, build_deb
from tests.support.httpd import Server, serve_directory
from tests.support.images import Images, compose_images


@pytest.fixture(scope="session")
def gpg_test_key() -> GpgKey:
    """The session's repository signing key (the default key of every AptRepo)."""
    return shared_gpg_key()


@pytest.fixture
def deb_builder(tmp_path: Path) -> Callable[[DebSpec], Path]:
    """Build a DebSpec into tmp_path/debs and return the .deb's path."""
    out = tmp_path / "debs"
    return lambda spec: build_deb(spec, out)


@pytest.fixture
def apt_repo(tmp_path: Path, gpg_test_key: GpgKey) -> AptRepo:
    """An empty, published, signed repository (suite "stable", component "main", amd64)."""
    repo = AptRepo(tmp_path / "aptrepo", key=gpg_test_key)
    repo.publish()
    return repo


@pytest.fixture
def http_server() -> Iterator[Callable[[Path], Server]]:
    """Start a loopback HTTP server for a folder; every server is stopped at teardown."""
    with ExitStack() as stack:
        yield lambda directory: stack.enter_context(serve_directory(directory))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    """test/os 1.0 and 1.1 and test/other 2.0, signed, in an archive repository with a
    summary (see tests/support/images.py). Composed once per session (about 2 minutes)."""
    return compose_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def minimal_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/minimal.yaml composed from the Debian archive into a fresh archive repository
    (so its first version, 12.0), once per session: tests/compose/test_compose_debian.py checks
    the tree, tests/vm/test_grub.py makes a GRUB image of it. Read it, never compose into it."""
    repo = tmp_path_factory.mktemp("minimal") / "repo"
    compose_from_archive(EXAMPLES / "minimal.yaml", repo, env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    return repo
