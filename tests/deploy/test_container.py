"""Container images: `compose container-encapsulate` of the test images, and machines that
rebase to them and upgrade by tag, from an OCI layout and from Debian's docker-registry on
loopback; bad images and a registry that is down leave the machine as it was."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_ostree.container import oci
from apt_ostree.system.requests import Cleanup, Rebase, Upgrade
from tests.deploy.conftest import encapsulate
from tests.support.debs import DebSpec, Dir, build_deb
from tests.support.images import Images
from tests.support.registry import Registry, registry
from tests.support.sysroots import Machine, Recorder, cli
from tests.support.tamper import tampering

UNVERIFIED_OCI = "ostree-unverified-image:oci:"


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
    labels = dict(inspect(f"oci:{layout}:1.1")["Labels"])  # type: ignore[call-overload]
    manifest = json.loads((oci.Layout(layout).blob_path(str(again))).read_text())
    config = json.loads(oci.Layout(layout).blob_path(manifest["config"]["digest"]).read_text())
    assert labels.pop(oci.LABEL_COMMIT_LAYER) == config["rootfs"]["diff_ids"][-1]
    assert labels == {
        "ostree.commit": images.checksum("1.1"),
        "ostree.bootable": "true",
        "containers.bootc": "1",
        "org.opencontainers.image.version": "1.1",
        "version": "1.1",
    }
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
    origin = Path(f"{machine.root()}.origin").read_text()  # the new deployment's
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

    # cleanup -r -b: the images no deployment runs go, and the layers only they listed
    machine.change(Cleanup(rollback=True, base=True))
    refs = subprocess.run(["ostree", "refs", f"--repo={machine.path}/ostree/repo"],
                          capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    blobs = {r.rpartition("/")[2].replace("_", ":") for r in refs if "/container/blob/" in r}
    layers = list(inspect(f"oci:{tagged}:1.1")["Layers"])  # type: ignore[call-overload]
    assert blobs == set(layers[:-1])  # all but the commit layer, which is not imported
    assert len([r for r in refs if "/container/manifest/" in r]) == 1
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

    before = machine.snapshot()
    wrong = f"ostree-unverified-registry:{name}@sha256:{'0' * 64}"
    by_digest = cli("rebase", *machine.args(), wrong, env=env)
    assert by_digest.returncode == 1 and "sha256:000" in by_digest.error_line
    assert machine.snapshot() == before

    running_registry.stop()
    down = cli("upgrade", *machine.args(), env=env)
    assert down.returncode == 1
    assert name.split("/")[0] in down.error_line
    assert machine.snapshot() == before


@pytest.mark.parametrize("mode", ["manifest", "blob"])
def test_a_registry_that_alters_the_image_changes_nothing(
    machine: Machine, images: Images, running_registry: Registry, tmp_path: Path, mode: str
) -> None:
    """Through a proxy that alters manifests, a reference by digest is refused; through one
    that alters blobs, the image's config (the first blob read) fails its digest."""
    name = f"{running_registry.host}/test/os"
    digest = encapsulate(images, "1.1", f"docker://{name}:1.1", env=running_registry.env)
    before = machine.snapshot()
    with tampering(running_registry.host, tmp_path, mode) as proxy:
        where = f"{proxy.host}/test/os"
        ref = f"{where}@{digest}" if mode == "manifest" else f"{where}:1.1"
        result = cli("rebase", *machine.args(), f"ostree-unverified-registry:{ref}", env=proxy.env)
    assert result.returncode == 1, result.stderr
    assert "does not match" in result.error_line
    assert proxy.altered > 0
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


DERIVED_DEB = DebSpec(
    "derived-aot",
    files={
        "/usr/share/derived-aot/README": "added by a Containerfile\n",
        "/etc/derived-aot.conf": "setting = 1\n",
        "/var/lib/derived-aot": Dir(),
    },
)
CONTAINERFILE = """\
FROM oci:{layout}:1.1
COPY derived-aot_1.0_all.deb /tmp/
RUN dpkg -i /tmp/derived-aot_1.0_all.deb && rm /tmp/derived-aot_1.0_all.deb \\
    && echo state > /var/lib/derived-aot/state && echo x > /etc/machine-id \\
    && rm /usr/share/doc/hello-aot-doc/changelog.Debian.gz
"""
OUTSIDE = """\
FROM oci:{layout}:1.1
RUN mkdir /data && echo x > /data/file
"""


def buildah(store: Path, *args: str) -> str:
    """Debian's buildah with storage of its own in `store`: chroot isolation, no daemon."""
    argv = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
            "--storage-driver", "overlay", *args]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="session")
def derived(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An OCI layout with two images built by buildah FROM test/os 1.1: `derived` installs a
    package with dpkg, writes /var and /etc and deletes a file of the base; `outside` writes
    a folder at / that a deployment cannot have."""
    top = tmp_path_factory.mktemp("derived")
    context = top / "context"
    build_deb(DERIVED_DEB, context)
    (context / "Containerfile").write_text(CONTAINERFILE.format(layout=layout))
    (context / "Outside").write_text(OUTSIDE.format(layout=layout))
    for tag, containerfile in (("derived", "Containerfile"), ("outside", "Outside")):
        buildah(top / "store", "bud", "--isolation", "chroot", "--quiet",
                "-f", str(context / containerfile), "-t", tag, str(context))  # fmt: skip
        buildah(top / "store", "push", "--quiet", tag, f"oci:{top / 'layout'}:{tag}")
    yield top / "layout"
    buildah(top / "store", "rmi", "--all", "--force")
    shutil.rmtree(top / "store", ignore_errors=True)


def test_rebase_to_a_derived_image_built_by_buildah(
    machine: Machine, images: Images, derived: Path
) -> None:
    ref = f"{UNVERIFIED_OCI}{derived}:derived"
    outcome = machine.change(Rebase(refspec=ref))
    assert outcome.deployed and outcome.diff is not None
    assert "derived-aot" in [c.name for c in outcome.diff.added]  # the machine was at 1.0
    booted = machine.status()[0]
    assert booted["checksum"] != images.checksum("1.1")
    assert booted["container-image-reference-digest"] == inspect(f"oci:{derived}:derived")["Digest"]
    root = machine.root()
    assert (root / "usr/share/derived-aot/README").read_text() == "added by a Containerfile\n"
    assert (root / "usr/etc/derived-aot.conf").is_file()  # /etc as the image keeps it
    assert not (root / "usr/share/doc/hello-aot-doc/changelog.Debian.gz").exists()  # a whiteout
    assert not (root / "usr/etc/hosts").exists() or (root / "usr/etc/hosts").stat().st_size
    conf = (root / "usr/lib/tmpfiles.d/apt-ostree-derived-var.conf").read_text()
    assert "/var/lib/derived-aot" in conf  # /var content recreated at boot
    assert (root / "usr/share/factory/var/lib/derived-aot/state").read_text() == "state\n"
    machine_id = root / "usr/etc/machine-id"
    assert not machine_id.exists() or machine_id.read_text() != "x\n"  # the base's, if any
    assert not list(root.glob("var/lib/*"))  # a deployment's /var is the machine's
    status = (root / "usr/lib/sysimage/dpkg/status").read_text()
    assert "Package: derived-aot" in status

    assert "No upgrade available." in machine.change(Upgrade(check=True)).lines
    again = machine.change(Upgrade())  # the digest was made into a commit once
    assert not again.changed
    machine.fsck()


def test_a_derived_image_with_files_outside_usr_changes_nothing(
    machine: Machine, derived: Path
) -> None:
    before = machine.snapshot()
    result = cli("rebase", *machine.args(), f"{UNVERIFIED_OCI}{derived}:outside")
    assert result.returncode == 1, result.stderr
    assert "the derived image cannot boot" in result.error_line
    assert "/data/file" in result.error_line
    assert machine.snapshot() == before


PLAIN_TAR = "application/vnd.oci.image.layer.v1.tar"


def _tar(members: list[tarfile.TarInfo]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(b"owned\n") if member.isfile() else None)
    return out.getvalue()


def _escaping_image(layout: Path, target: Path) -> None:
    """`layout` (a copy of the test images') gets tag `escape`: 1.1 plus two hand-made layers,
    a symlink `escape -> target`, then a file under `escape/` (what no container engine
    writes, and what would land in `target` if the link were followed)."""
    link = tarfile.TarInfo("escape")
    link.type, link.linkname = tarfile.SYMTYPE, str(target)
    folder = tarfile.TarInfo("escape")
    folder.type, folder.mode = tarfile.DIRTYPE, 0o755
    file = tarfile.TarInfo("escape/owned")
    file.size = len(b"owned\n")
    oci_layout = oci.Layout(layout)
    index = json.loads((layout / "index.json").read_text())
    entry = next(m for m in index["manifests"] if m["annotations"][oci.REF_NAME] == "1.1")
    manifest = json.loads(oci_layout.blob_path(entry["digest"]).read_text())
    config = json.loads(oci_layout.blob_path(manifest["config"]["digest"]).read_text())
    layers = [oci.Descriptor.of(d) for d in manifest["layers"]]
    for members in ([link], [folder, file]):
        data = _tar(members)
        blob = oci_layout.write_blob(data)
        layers.append(oci.Descriptor(PLAIN_TAR, blob.digest, blob.size))
        config["rootfs"]["diff_ids"].append(oci.digest_of(data))
    written = oci_layout.write_blob(oci.dumps(config))
    config_desc = oci.Descriptor(oci.CONFIG_TYPE, written.digest, written.size)
    oci_layout.tag(oci_layout.write_blob(oci.dumps(oci.manifest(config_desc, layers))), "escape")


def test_a_derived_layer_that_writes_through_a_symlink_is_refused(
    machine: Machine, tagged: Path, tmp_path: Path
) -> None:
    target = tmp_path / "outside"
    target.mkdir()
    _escaping_image(tagged, target)
    before = machine.snapshot()
    result = cli("rebase", *machine.args(), f"{UNVERIFIED_OCI}{tagged}:escape")
    assert result.returncode == 1, result.stderr
    assert "symlink /escape" in result.error_line
    assert not list(target.iterdir())  # nothing written outside the scratch folder
    assert machine.snapshot() == before
