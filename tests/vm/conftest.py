"""Fixtures for VM tests: the minimal example with apt-ostree itself inside (its .deb built
from this checkout and served by a signed local apt repository), composed once, and disk images
of it for qemu."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from apt_ostree import ostree
from apt_ostree.aptpkg.sources import read_host_sources
from apt_ostree.compose import image
from apt_ostree.progress import Progress
from tests.support import vm
from tests.support.aptrepo import AptRepo, GpgKey
from tests.support.debian import (
    CACHE,
    EXAMPLE_SUITE,
    EXAMPLE_VERSION,
    EXAMPLES,
    cache_lock,
    compose_from_archive,
)
from tests.support.debs import EPOCH


def build(
    repo: Path, output: Path, *, ref: str, remote: image.UpdateRemote | None = None
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
    # tools/setup installs them: a machine without them must fail here, not skip the boots
    assert vm.have_qemu(), "qemu-system-x86_64 and OVMF are needed (tools/setup installs them)"


# ---- the image with apt-ostree inside ----

ROOT = Path(__file__).resolve().parents[2]
APT_OSTREE_REF = f"debian/{EXAMPLE_SUITE}/amd64/apt-ostree"
# The composed repository outlives the session: the compose's input hash holds the .deb's
# sha256, so an unchanged checkout is a no-change compose (seconds) and any change to the
# shipped files (a new .deb version, see tools/build-deb) composes anew. The apt repository
# serving the .deb and its keyring live at fixed paths too, so that the treefile (hashed) stays
# the same. Tests that compose further versions work on a hard-linked copy (`cp -al`: libostree
# writes new objects and renames refs and summary into place, so shared files never change).
APT_OSTREE_REPO = CACHE / "vm" / "apt-ostree-repo"
APT_OSTREE_DEBS = CACHE / "vm" / "apt-ostree-debs"
NEXT_REF = f"{APT_OSTREE_REF}-next"


@dataclass(frozen=True)
class ComposedRepo:
    """A composed OSTree repository (shared: compose further versions into a `cp -al` copy)."""

    path: Path
    ref: str
    treefile: Path  # compose it again (or include it) to make further versions
    deb: Path  # the apt-ostree .deb inside
    checksum: str  # the ref's commit
    # the same treefile plus one file (/usr/share/apt-ostree-test/marker, "version two"),
    # composed on NEXT_REF: point `ref` at it in a copy to serve an update (`serve_next`)
    next_checksum: str


def build_apt_ostree_deb(outdir: Path) -> Path:
    out = subprocess.run(
        [str(ROOT / "tools" / "build-deb"), str(outdir)], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def publish_apt_ostree(deb: Path, key: GpgKey, folder: Path = APT_OSTREE_DEBS) -> AptRepo:
    """The .deb alone in a signed apt repository in folder/repo (its keyring beside it)."""
    repo = AptRepo(folder / "repo", key=key)
    for old in repo.debs():
        old.unlink()
    repo.add_debs([deb])
    # Release's Date (and the indices' mtimes) must grow across sessions, or apt could keep
    # the lists of an earlier session's .deb in the compose's cached apt root
    repo.publications = (int(time.time()) - EPOCH) // 60
    repo.publish()
    shutil.copyfile(key.keyring, folder / "keyring.gpg")
    return repo


def apt_ostree_treefile(folder: Path, debs: AptRepo) -> Path:
    """examples/minimal.yaml plus apt-ostree (and skopeo, for container images): the host's
    Debian sources and the .deb's repo (`publish_apt_ostree` into the same folder)."""
    host = [
        {"uris": list(e.uris), "suites": list(e.suites), "components": list(e.components),
         "signed-by": e.signed_by}
        for e in read_host_sources(EXAMPLE_SUITE)
    ]  # fmt: skip
    ours = {"uris": debs.file_uri, "suites": debs.suite, "components": debs.component,
            "signed-by": str(folder / "keyring.gpg")}  # fmt: skip
    treefile = folder / "apt-ostree.json"
    data = {
        "include": str(EXAMPLES / "minimal.yaml"),
        "ref": APT_OSTREE_REF,
        "repos": [*host, ours],
        # what apt-ostree recommends: skopeo (images), systemd-container (upgrade --verify)
        "packages": ["apt-ostree", "skopeo", "systemd-container"],
    }
    treefile.write_text(json.dumps(data, indent=2) + "\n")
    return treefile


def next_treefile(folder: Path, treefile: Path) -> Path:
    """`treefile` plus one file, on NEXT_REF with versions 13.1.N (EXAMPLE_VERSION.1.N)."""
    (folder / "marker").write_text("version two\n")
    data = {
        "include": str(treefile),
        "ref": NEXT_REF,
        "automatic-version-prefix": f"{EXAMPLE_VERSION}.1",
        "add-files": [["marker", "/usr/share/apt-ostree-test/marker"]],
    }
    path = folder / "apt-ostree-next.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


@pytest.fixture(scope="session")
def apt_ostree_repo(gpg_test_key: GpgKey) -> ComposedRepo:
    """The minimal example plus apt-ostree (built from this checkout), composed into the
    cached APT_OSTREE_REPO under APT_OSTREE_REF; and its next version under NEXT_REF."""
    with cache_lock(APT_OSTREE_DEBS / "lock"):
        shutil.rmtree(APT_OSTREE_DEBS / "build", ignore_errors=True)
        deb = build_apt_ostree_deb(APT_OSTREE_DEBS / "build")
        debs = publish_apt_ostree(deb, gpg_test_key)
        treefile = apt_ostree_treefile(APT_OSTREE_DEBS, debs)
        compose_from_archive(treefile, APT_OSTREE_REPO)
        # composed after the first (a newer timestamp: an upgrade, not a downgrade); a no-change
        # compose when the first did not change either
        compose_from_archive(next_treefile(APT_OSTREE_DEBS, treefile), APT_OSTREE_REPO)
        repo = ostree.Repo.open(APT_OSTREE_REPO)
        first, second = repo.resolve_ref(APT_OSTREE_REF), repo.resolve_ref(NEXT_REF)
    assert first and second
    return ComposedRepo(APT_OSTREE_REPO, APT_OSTREE_REF, treefile, deb, first, second)


def serve_next(repo: Path) -> None:
    """In `repo` (a `cp -al` copy of APT_OSTREE_REPO), move APT_OSTREE_REF to NEXT_REF's commit
    and regenerate the summary: what a compose of the next version would have left there."""
    checksum = ostree.Repo.open(repo).resolve_ref(NEXT_REF)
    # `refs --delete` unlinks the ref file (it is shared with the cache), `--create` writes anew
    subprocess.run(["ostree", f"--repo={repo}", "refs", "--delete", APT_OSTREE_REF], check=True)
    subprocess.run(
        ["ostree", f"--repo={repo}", "refs", f"--create={APT_OSTREE_REF}", str(checksum)],
        check=True,
    )
    subprocess.run(["ostree", f"--repo={repo}", "summary", "--update"], check=True)


@pytest.fixture(scope="session")
def apt_ostree_image(
    apt_ostree_repo: ComposedRepo, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A disk image (raw, with the VM agent; no update remote) of `apt_ostree_repo`: boot it
    with `tests.support.vm.boot(apt_ostree_image, tmp_path / "vm")`."""
    output = tmp_path_factory.mktemp("images") / "apt-ostree.raw"
    build(apt_ostree_repo.path, output, ref=apt_ostree_repo.ref)
    return output
