"""Fixtures for VM tests: the minimal example composed once, and images of it for qemu; the
same image with apt-ostree itself inside (its .deb built from this checkout)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from apt_ostree import aptpkg
from apt_ostree.compose import image
from apt_ostree.progress import Progress
from tests.support import vm
from tests.support.aptrepo import AptRepo, GpgKey
from tests.support.debian import CACHE, SUITE
from tests.support.debs import EPOCH

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
    repo: Path, output: Path, *, remote: image.UpdateRemote | None = None, ref: str = REF
) -> tuple[Path, float]:
    """An image of `ref` for the VM harness (its agent and network in /etc); build seconds."""
    start = time.monotonic()
    opts = image.ImageOptions(
        repo=repo, ref=ref, output=output, remote=remote, etc_files=vm.GUEST_ETC_FILES
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


# ---- the image with apt-ostree inside ----

ROOT = Path(__file__).resolve().parents[2]
APT_OSTREE_REF = f"debian/{SUITE}/amd64/apt-ostree"
# Like VM_REPO, outlives the session: the compose's input hash holds the .deb's sha256, so an
# unchanged checkout is a no-change compose (seconds) and any change to the shipped files
# (a new .deb version, see tools/build-deb) composes anew. The apt repository serving the .deb
# and its keyring live at fixed paths too, so that the treefile (hashed) stays the same.
APT_OSTREE_REPO = CACHE / "vm" / "apt-ostree-repo"
APT_OSTREE_DEBS = CACHE / "vm" / "apt-ostree-debs"


@dataclass(frozen=True)
class ComposedRepo:
    """A composed OSTree repository (shared: compose further versions into a `cp -al` copy)."""

    path: Path
    ref: str
    treefile: Path  # compose it again (or include it) to make further versions
    deb: Path  # the apt-ostree .deb inside


def build_apt_ostree_deb(outdir: Path) -> Path:
    out = subprocess.run(
        [str(ROOT / "tools" / "build-deb"), str(outdir)], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def publish_apt_ostree(deb: Path, key: GpgKey) -> AptRepo:
    """The .deb alone in a signed apt repository at APT_OSTREE_DEBS (its keyring beside it)."""
    repo = AptRepo(APT_OSTREE_DEBS / "repo", key=key)
    for old in repo.debs():
        old.unlink()
    repo.add_debs([deb])
    # Release's Date (and the indices' mtimes) must grow across sessions, or apt could keep
    # the lists of an earlier session's .deb in the compose's cached apt root
    repo.publications = (int(time.time()) - EPOCH) // 60
    repo.publish()
    shutil.copyfile(key.keyring, APT_OSTREE_DEBS / "keyring.gpg")
    return repo


def apt_ostree_treefile(folder: Path, debs: AptRepo) -> Path:
    """examples/minimal.yaml plus apt-ostree: the host's Debian sources and the .deb's repo."""
    host = [
        {"uris": list(e.uris), "suites": list(e.suites), "components": list(e.components),
         "signed-by": e.signed_by}
        for e in aptpkg.read_host_sources(SUITE)
    ]  # fmt: skip
    ours = {"uris": debs.file_uri, "suites": debs.suite, "components": debs.component,
            "signed-by": str(APT_OSTREE_DEBS / "keyring.gpg")}  # fmt: skip
    treefile = folder / "apt-ostree.json"
    data = {
        "include": str(EXAMPLES / "minimal.yaml"),
        "ref": APT_OSTREE_REF,
        "repos": [*host, ours],
        "packages": ["apt-ostree"],
    }
    treefile.write_text(json.dumps(data, indent=2) + "\n")
    return treefile


@pytest.fixture(scope="session")
def apt_ostree_repo(gpg_test_key: GpgKey) -> ComposedRepo:
    """The minimal example plus apt-ostree (built from this checkout), composed into the
    cached APT_OSTREE_REPO under APT_OSTREE_REF."""
    shutil.rmtree(APT_OSTREE_DEBS / "build", ignore_errors=True)
    deb = build_apt_ostree_deb(APT_OSTREE_DEBS / "build")
    debs = publish_apt_ostree(deb, gpg_test_key)
    treefile = apt_ostree_treefile(APT_OSTREE_DEBS, debs)
    compose_minimal(APT_OSTREE_REPO, treefile)
    return ComposedRepo(APT_OSTREE_REPO, APT_OSTREE_REF, treefile, deb)


@pytest.fixture(scope="session")
def apt_ostree_image(
    apt_ostree_repo: ComposedRepo, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A disk image (raw, with the VM agent; no update remote) of `apt_ostree_repo`: boot it
    with `tests.support.vm.boot(apt_ostree_image, tmp_path / "vm")`."""
    output = tmp_path_factory.mktemp("images") / "apt-ostree.raw"
    build(apt_ostree_repo.path, output, ref=apt_ostree_repo.ref)
    return output
