"""Fixtures for VM tests: the minimal example composed once, and images of it for qemu."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_ostree.compose import image
from apt_ostree.progress import Progress
from tests.support import vm
from tests.support.debian import CACHE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REF = "debian/bookworm/amd64/minimal"
# The composed minimal repository outlives the session (a no-change compose takes seconds);
# tests that compose further versions work on a hard-linked copy (`cp -al`: libostree writes
# new objects and renames refs and summary into place, so the shared files are never changed).
VM_REPO = CACHE / "vm" / "repo"


def compose_minimal(repo: Path, treefile: Path = EXAMPLES / "minimal.yaml") -> None:
    result = subprocess.run(
        [sys.executable, "-m", "apt_ostree.cli.main", "compose", "tree", str(treefile),
         "--repo", str(repo), "--cachedir", str(CACHE / "compose")],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def build(
    repo: Path, output: Path, *, remote: image.UpdateRemote | None = None
) -> tuple[Path, float]:
    """An image of REF for the VM harness (its agent and network in /etc); build seconds."""
    start = time.monotonic()
    opts = image.ImageOptions(
        repo=repo, ref=REF, output=output, remote=remote, etc_files=vm.GUEST_ETC_FILES
    )
    image.build_image(opts, Progress())
    return output, time.monotonic() - start


@pytest.fixture(scope="session", autouse=True)
def _qemu() -> None:
    if not vm.have_qemu():
        pytest.skip("qemu-system-x86_64 and OVMF are needed (tools/setup installs them)")


@pytest.fixture(scope="session")
def minimal_repo() -> Path:
    VM_REPO.parent.mkdir(parents=True, exist_ok=True)
    compose_minimal(VM_REPO)
    return VM_REPO


@pytest.fixture(scope="session")
def minimal_image(minimal_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output, _ = build(minimal_repo, tmp_path_factory.mktemp("images") / "minimal.raw")
    return output


@pytest.fixture
def booted(minimal_image: Path, tmp_path: Path) -> Iterator[vm.VM]:
    with vm.boot(minimal_image, tmp_path / "vm") as guest:
        yield guest
