"""Fixtures for deploy/upgrade/rollback/rebase tests: composed images and folder sysroots."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apt_ostree.run import run
from tests.support.httpd import Server, serve_directory
from tests.support.images import Images, copy_repo, remove_sysroot
from tests.support.sysroots import Machine, Served, init, ok


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


@pytest.fixture
def served(images: Images, tmp_path: Path, http_server: Callable[[Path], Server]) -> Served:
    repo = copy_repo(images.repo, tmp_path / "served")
    return Served(repo, http_server(repo), images)


@pytest.fixture(scope="session")
def template(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """A sysroot with test/os 1.0 deployed, made once (a full pull is ~30 s), copied per test."""
    work = tmp_path_factory.mktemp("template")
    repo = copy_repo(images.repo, work / "served")
    with serve_directory(repo) as server:
        served = Served(repo, server, images)
        served.set_ref("1.0")
        m = init(work / "sysroot", served)
    yield m
    remove_sysroot(m.path)


@pytest.fixture
def machine(template: Machine, served: Served, tmp_path: Path) -> Iterator[Machine]:
    """A copy of the template sysroot whose remote is `served`, where test/os is at 1.1."""
    path = tmp_path / "sysroot"
    subprocess.run(["cp", "-a", str(template.path), str(path)], check=True)
    config = path / "ostree/repo/config"
    config.write_text(config.read_text().replace(template.served.url, served.url))
    served.set_ref("1.1")
    yield Machine(path, served)
    remove_sysroot(path)


def encapsulate(images: Images, version: str, image: str, env: dict[str, str] | None = None) -> str:
    """`compose container-encapsulate` of a test image version; the manifest digest."""
    out = ok("compose", "container-encapsulate", "--repo", images.repo,
             images.checksum(version), image, env=env).stdout  # fmt: skip
    return next(line.split()[-1] for line in out.splitlines() if "manifest:" in line)


@pytest.fixture(scope="session")
def layout(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout with tags 1.0 and 1.1: the test images, encapsulated once."""
    path = tmp_path_factory.mktemp("oci") / "layout"
    for version in ("1.0", "1.1"):
        encapsulate(images, version, f"oci:{path}:{version}")
    return path
