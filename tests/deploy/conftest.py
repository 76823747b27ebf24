"""Fixtures for deploy/upgrade/rollback/rebase tests: composed images and folder sysroots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_ostree.run import run
from tests.support.images import Images, compose_images, remove_sysroot


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    """test/os 1.0 and 1.1 and test/other 2.0, signed, in an archive repository with a
    summary (see tests/support/images.py). Composed once per session (about 2 minutes)."""
    return compose_images(tmp_path_factory.mktemp("images"))


@pytest.fixture
def sysroot(tmp_path: Path) -> Iterator[Path]:
    """An empty folder sysroot with stateroot "test" (`ostree admin init-fs` + `os-init`),
    removed at teardown even when libostree made its deployments immutable."""
    path = tmp_path / "sysroot"
    path.mkdir()
    run(["ostree", "admin", "init-fs", str(path)])
    run(["ostree", "admin", "os-init", f"--sysroot={path}", "test"])
    yield path
    remove_sysroot(path)
