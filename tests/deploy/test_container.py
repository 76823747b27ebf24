"""Container images: `compose container-encapsulate` of the test images, and machines that
rebase to them and upgrade by tag, from an OCI layout and from Debian's docker-registry on
loopback; bad images and a registry that is down leave the machine as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_ostree.container import oci
from apt_ostree.system.requests import Rebase, Upgrade
from tests.support.images import Images
from tests.support.registry import Registry, registry
from tests.support.sysroots import Machine, Recorder, cli, ok

UNVERIFIED_OCI = "ostree-unverified-image:oci:"


def encapsulate(images: Images, version: str, image: str) -> str:
    """`compose container-encapsulate` of a test image version; the manifest digest."""
    out = ok("compose", "container-encapsulate", "--repo", images.repo,
             images.checksum(version), image).stdout  # fmt: skip
    return next(line.split()[-1] for line in out.splitlines() if "manifest:" in line)


@pytest.fixture(scope="session")
def layout(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout with tags 1.0 and 1.1: the test images, encapsulated once."""
    path = tmp_path_factory.mktemp("oci") / "layout"
    for version in ("1.0", "1.1"):
        encapsulate(images, version, f"oci:{path}:{version}")
    return path


def retag(layout: Path, source: str, tag: str) -> None:
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"] if m["annotations"][oci.REF_NAME] == source)
    oci.Layout(layout).tag(oci.Descriptor.of(entry), tag)


@pytest.fixture
def tagged(layout: Path, tmp_path: Path) -> Path:
    """A copy of the layout (blobs hard-linked) where `stable` is 1.0."""
    copy = tmp_path / "layout"
    subprocess.run(["cp", "-a", "-l", str(layout), str(copy)], check=True)
    retag(copy, "1.0", "stable")
    return copy


def inspect(image: str) -> dict[str, object]:
    proc = subprocess.run(["skopeo", "inspect", image], capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout))


def test_encapsulate_is_reproducible_bootc_labelled_and_chunked_by_package(
    images: Images, layout: Path, tmp_path: Path
) -> None:
    again = encapsulate(images, "1.1", f"oci:{tmp_path / 'again'}:x")
    assert again == inspect(f"oci:{layout}:1.1")["Digest"]  # the same commit, the same image
    labels = inspect(f"oci:{layout}:1.1")["Labels"]
    assert labels == {
        "ostree.commit": images.checksum("1.1"),
        "ostree.bootable": "true",
        "containers.bootc": "1",
        "org.opencontainers.image.version": "1.1",
        "version": "1.1",
    }
    manifest = json.loads((oci.Layout(layout).blob_path(str(again))).read_text())
    components = [m.get("annotations", {}) for m in manifest["layers"]]
    assert 10 < len(components) <= 64
    own = {a.get(oci.ANNOTATION_COMPONENTS) for a in components}
    assert {"hello-aot", "rootfs", "sysimage", "initramfs"} <= own  # a package's own layer
    assert components[-1] == {oci.ANNOTATION_COMMIT_LAYER: images.checksum("1.1")}


def _fetch_line(progress: Recorder) -> tuple[int, int]:
    line = next(m for m in progress.messages if "layers to fetch" in m)
    fetched, _, total = line.split()[:3]
    return int(fetched), int(total)


def test_rebase_to_an_oci_layout_then_upgrade_by_tag_fetches_only_changed_layers(
    machine: Machine, images: Images, tagged: Path
) -> None:
    ref = f"{UNVERIFIED_OCI}{tagged}:stable"
    machine.change(Rebase(refspec=ref))
    booted = machine.status()[0]
    assert booted["checksum"] == images.checksum("1.0")  # the very commit of the ostree remote
    assert booted["origin"] == ref
    assert booted["container-image-reference"] == ref
    assert booted["container-image-reference-digest"] == inspect(f"oci:{tagged}:1.0")["Digest"]
    origin = next(machine.path.glob("ostree/deploy/test/deploy/*.origin")).read_text()
    assert f"container-image-reference={ref}" in origin

    assert "No upgrade available." in machine.change(Upgrade(check=True)).lines
    retag(tagged, "1.1", "stable")
    check = machine.change(Upgrade(check=True))
    assert check.changed and check.checksum == images.checksum("1.1")
    preview = machine.change(Upgrade(preview=True))
    assert preview.diff is not None
    assert [c.name for c in preview.diff.upgraded] == ["hello-aot"]
    assert "extra-aot" in [c.name for c in preview.diff.added]
    progress = Recorder()
    outcome = machine.change(Upgrade(), progress)
    assert outcome.deployed and machine.status()[0]["checksum"] == images.checksum("1.1")
    fetched, total = _fetch_line(progress)
    assert 0 < fetched < total / 2, progress.messages  # hello-aot's layer and a few others
    assert (
        machine.status()[0]["container-image-reference-digest"]
        == inspect(f"oci:{tagged}:1.1")["Digest"]
    )
    assert (machine.root() / "usr/share/doc/hello-aot").exists()
    machine.fsck()


@pytest.fixture
def running_registry(tmp_path: Path) -> Iterator[Registry]:
    with registry(tmp_path / "registry") as reg:
        yield reg


def test_push_to_a_registry_rebase_and_a_registry_that_is_down(
    machine: Machine, images: Images, running_registry: Registry
) -> None:
    env = running_registry.env
    name = f"{running_registry.host}/test/os"
    push = cli("compose", "container-encapsulate", "--repo", images.repo,
               images.checksum("1.1"), f"docker://{name}:1.1", env=env)  # fmt: skip
    assert push.returncode == 0, push.stderr
    rebase = cli("rebase", *machine.args(), f"ostree-unverified-registry:{name}:1.1", env=env)
    assert rebase.returncode == 0, rebase.stderr
    assert "layers to fetch" in rebase.stderr
    status = json.loads(cli("status", *machine.args(), "--json").stdout)["deployments"][0]
    assert status["checksum"] == images.checksum("1.1")
    assert status["container-image-reference"] == f"ostree-unverified-registry:{name}:1.1"
    assert status["container-image-reference-digest"].startswith("sha256:")

    running_registry.stop()
    before = machine.snapshot()
    down = cli("upgrade", *machine.args(), env=env)
    assert down.returncode == 1
    assert name.split("/")[0] in down.error_line
    assert machine.snapshot() == before


def _not_bootable(path: Path) -> None:
    """An ordinary image: one empty layer, a config with no labels."""
    layout = oci.Layout(path)
    layout.create()
    empty = subprocess.run(
        ["sh", "-c", "tar -cf - -T /dev/null | gzip -n"], capture_output=True, check=True
    ).stdout
    layer = layout.write_blob(empty)
    config = layout.write_blob(
        oci.dumps({"architecture": "amd64", "os": "linux", "config": {},
                   "rootfs": {"type": "layers", "diff_ids": [oci.digest_of(b"")]}})
    )  # fmt: skip
    manifest = oci.manifest(
        oci.Descriptor(oci.CONFIG_TYPE, config.digest, config.size),
        [oci.Descriptor(oci.LAYER_TYPE, layer.digest, layer.size)],
    )
    layout.tag(layout.write_blob(oci.dumps(manifest)), "latest")


@pytest.mark.parametrize(
    ("image", "error", "code"),
    [
        ("plain", "is not a bootable apt-ostree image", 1),
        ("missing", "cannot open", 1),
        # Debian 12's skopeo cannot check a policy without copying the whole image
        ("signed", "does not check signatures", 1),
        ("malformed", "image reference", 2),
    ],
)
def test_bad_images_change_nothing(
    machine: Machine, tagged: Path, tmp_path: Path, image: str, error: str, code: int
) -> None:
    _not_bootable(tmp_path / "plain")
    refs = {
        "plain": f"{UNVERIFIED_OCI}{tmp_path / 'plain'}:latest",
        "missing": f"{UNVERIFIED_OCI}{tmp_path / 'nothing-here'}:latest",
        "signed": f"ostree-image-signed:oci:{tagged}:stable",
        "malformed": "ostree-unverified-image:ftp://example",
    }
    before = machine.snapshot()
    result = cli("rebase", *machine.args(), refs[image])
    assert result.returncode == code, result.stderr
    assert error in result.error_line
    assert machine.snapshot() == before
    shutil.rmtree(tmp_path / "plain")
