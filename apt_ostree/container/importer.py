"""The client's side of container images: read an image's manifest and config, fetch only
the layers the repository lacks, and write the image's ostree commit (docs/container.md).

In the sysroot's repository:
- `aptostree/container/blob/sha256_HEX`: a layer, imported as a commit of its own; a layer
  already there is never fetched again;
- `aptostree/container/manifest/sha256_HEX`: an image that was pulled; an empty commit whose
  metadata holds the manifest and the ostree commit it makes, which is how `status` knows the
  image digest of a deployment.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_ostree import ostree, ostree_container
from apt_ostree.container import oci
from apt_ostree.container.imageref import ImageReference, Verify
from apt_ostree.container.proxy import ImageProxy, ProxyError, image_proxy
from apt_ostree.errors import ImageError
from apt_ostree.progress import Progress, human_size

BLOB_PREFIX = "aptostree/container/blob/"
MANIFEST_PREFIX = "aptostree/container/manifest/"
KEY_MANIFEST = "aptostree.container.manifest"
KEY_COMMIT = "aptostree.container.commit"
KEY_REFERENCE = "aptostree.container.image-reference"


@dataclass(frozen=True)
class Image:
    """What an image's manifest and config say, before any layer is fetched."""

    reference: str
    digest: str  # the manifest's
    manifest: bytes
    checksum: str  # the ostree commit the image carries
    version: str | None
    layers: tuple[oci.Descriptor, ...]  # the tree's layers, in order
    commit_layer: oci.Descriptor
    derived: tuple[oci.Descriptor, ...] = ()  # added by a Containerfile `FROM` the image


def _ref(prefix: str, digest: str) -> str:
    return prefix + digest.replace(":", "_")


def skopeo_options(reference: ImageReference, etc: Path | None) -> list[str]:
    """skopeo's global options: no policy for unverified images; for signed ones the managed
    system's containers-policy.json and registries.d (its /etc, `etc`), else the host's."""
    if reference.verify is Verify.UNVERIFIED:
        return ["--insecure-policy"]
    options: list[str] = []
    if etc is not None and (etc / "containers/policy.json").is_file():
        options += ["--policy", str(etc / "containers/policy.json")]
    if etc is not None and (etc / "containers/registries.d").is_dir():
        options += ["--registries.d", str(etc / "containers/registries.d")]
    return options


def _parse(reference: ImageReference, digest: str, manifest: bytes, config: bytes) -> Image:
    try:
        doc = json.loads(manifest)
        conf = json.loads(config)
        labels: Mapping[str, str] = conf.get("config", {}).get("Labels") or {}
        diff_ids = list(conf.get("rootfs", {}).get("diff_ids") or [])
        layers = [oci.Descriptor.of(d) for d in doc["layers"]]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ImageError(f"{reference}: malformed manifest or config: {e}") from e
    if labels.get(oci.LABEL_BOOTABLE) != "true" or not labels.get(oci.LABEL_COMMIT):
        raise ImageError(
            f"{reference} is not a bootable apt-ostree image"
            f" (its config has no {oci.LABEL_BOOTABLE} and {oci.LABEL_COMMIT} labels)"
        )
    checksum = labels[oci.LABEL_COMMIT]
    marked = [
        i for i, d in enumerate(layers)
        if (d.annotations or {}).get(oci.ANNOTATION_COMMIT_LAYER) == checksum
    ]  # fmt: skip
    diff_id = labels.get(oci.LABEL_COMMIT_LAYER)
    if not marked and diff_id in diff_ids and len(diff_ids) == len(layers):
        marked = [diff_ids.index(diff_id)]
    if not marked:
        raise ImageError(f"{reference}: no layer holds its ostree commit {checksum}")
    index = marked[0]
    version = labels.get(oci.LABEL_VERSION) or labels.get("version")
    return Image(
        str(reference), digest, manifest, checksum, version,
        tuple(layers[:index]), layers[index], tuple(layers[index + 1 :]),
    )  # fmt: skip


def _open(proxy: ImageProxy, reference: ImageReference) -> int:
    if reference.verify is Verify.SIGNED and not proxy.checks_policy:
        version = ".".join(map(str, proxy.version))
        raise ImageError(
            f"{reference}: this skopeo's image proxy (protocol {version}) does not check"
            " signatures; ostree-image-signed: needs skopeo 1.13 or later (Debian 13 has it)"
        )
    try:
        return proxy.open_image(reference.transport_ref)
    except ProxyError as e:
        raise ImageError(f"cannot open {reference}: {e}") from e


def _inspect(proxy: ImageProxy, image: int, reference: ImageReference) -> Image:
    try:
        digest, manifest = proxy.manifest(image)
        config = proxy.config(image)
    except ProxyError as e:
        raise ImageError(f"cannot read the manifest of {reference}: {e}") from e
    return _parse(reference, digest, manifest, config)


def inspect(reference: ImageReference, etc: Path | None) -> Image:
    """The image's manifest and labels, without fetching a layer (`upgrade --check`)."""
    with image_proxy(skopeo_options(reference, etc)) as proxy:
        return _inspect(proxy, _open(proxy, reference), reference)


def commit_metadata(reference: ImageReference, etc: Path | None) -> tuple[Image, dict[str, Any]]:
    """The image, and the metadata of its commit (its packages) from the commit layer alone
    (`upgrade --preview`)."""
    with image_proxy(skopeo_options(reference, etc)) as proxy:
        image_id = _open(proxy, reference)
        image = _inspect(proxy, image_id, reference)
        commit, _ = _commit_object(proxy, image_id, image)
    return image, ostree_container.commit_metadata(commit)


Derive = Callable[[Image, Sequence[str]], str]


@dataclass(frozen=True)
class Pulled:
    image: Image
    checksum: str  # what to deploy: the image's commit, or the one made of its derived layers


def pull(
    repo: ostree.Repo,
    reference: ImageReference,
    etc: Path | None,
    progress: Progress,
    derive: Derive | None = None,
) -> Pulled:
    """Fetch the layers the repository lacks and write the image's commit. For a derived
    image, `derive(image, commits of the derived layers)` makes the commit to deploy (once:
    a digest pulled before gives the commit recorded then)."""
    with image_proxy(skopeo_options(reference, etc)) as proxy:
        image_id = _open(proxy, reference)
        with progress.step(f"Reading the manifest of {reference}"):
            image = _inspect(proxy, image_id, reference)
        if image.derived and derive is None:
            raise ImageError(f"{reference}: a derived image is deployed on a sysroot only")
        built = recorded_commit(repo, image.digest) if image.derived else None
        if built is not None:
            return Pulled(image, built)
        had = {r for r in repo.list_refs() if r.startswith(BLOB_PREFIX)}
        try:
            checksum = _pull(repo, proxy, image_id, image, progress, derive)
        except BaseException:
            # a pull that fails leaves the repository's refs as they were (the objects of
            # the layers it fetched go at the next cleanup)
            for ref in repo.list_refs():
                if ref.startswith(BLOB_PREFIX) and ref not in had:
                    repo.set_ref(ref, None)
            raise
    _record(repo, image, checksum)
    return Pulled(image, checksum)


def _pull(
    repo: ostree.Repo,
    proxy: ImageProxy,
    image_id: int,
    image: Image,
    progress: Progress,
    derive: Derive | None,
) -> str:
    # the layers are fetched even when the commit is there already (a machine moving from an
    # ostree remote to the image of the same commit), so that its next upgrade fetches only
    # the layers that changed
    layers = _fetch_layers(repo, proxy, image_id, image.layers + image.derived, progress)
    with progress.step(f"Writing commit {image.checksum[:12]}"):
        commit, detached = _commit_object(proxy, image_id, image)
        base = layers[: len(image.layers)]
        ostree_container.write_image_commit(repo, image.checksum, commit, detached, base)
    if derive is not None and image.derived:
        return derive(image, layers[len(image.layers) :])
    return image.checksum


def _fetch_layers(
    repo: ostree.Repo,
    proxy: ImageProxy,
    image_id: int,
    descriptors: Sequence[oci.Descriptor],
    progress: Progress,
) -> list[str]:
    """The layer commits, in order: fetched and imported where missing."""
    have = {d.digest: repo.resolve_ref(_ref(BLOB_PREFIX, d.digest)) for d in descriptors}
    missing = list({d.digest: d for d in descriptors if have[d.digest] is None}.values())
    total = sum(d.size for d in missing)
    progress.message(
        f"    {len(missing)} of {len(descriptors) + 1} layers to fetch, {human_size(total)}"
    )
    done = [0]
    start = time.monotonic()

    def on_data(n: int) -> None:
        done[0] += n
        speed = done[0] / max(time.monotonic() - start, 1e-3)
        progress.download(done[0], total, speed)

    with progress.step(f"Fetching {len(missing)} layers"):
        for desc in missing:
            _import_layer(repo, proxy, image_id, desc, on_data)
        progress.download(done[0], total, done[0] / max(time.monotonic() - start, 1e-3), final=True)
    for desc in missing:
        have[desc.digest] = repo.resolve_ref(_ref(BLOB_PREFIX, desc.digest))
    return [str(have[d.digest]) for d in descriptors]


def _import_layer(
    repo: ostree.Repo, proxy: ImageProxy, image_id: int, desc: oci.Descriptor, on_data: Any
) -> None:
    with tempfile.NamedTemporaryFile(dir=repo.path / "tmp", prefix="layer-") as tmp:
        try:
            proxy.blob(image_id, desc.digest, desc.size, tmp, on_data)  # type: ignore[arg-type]
        except ProxyError as e:
            raise ImageError(f"cannot fetch layer {desc.digest}: {e}") from e
        tmp.flush()
        ostree_container.import_layer(
            repo, Path(tmp.name), ref=_ref(BLOB_PREFIX, desc.digest), subject=desc.digest
        )


def _commit_object(proxy: ImageProxy, image_id: int, image: Image) -> tuple[bytes, bytes | None]:
    out = io.BytesIO()
    desc = image.commit_layer
    try:
        proxy.blob(image_id, desc.digest, desc.size, out, lambda n: None)
    except ProxyError as e:
        raise ImageError(f"cannot fetch the commit layer {desc.digest}: {e}") from e
    name = f"sysroot/ostree/repo/objects/{image.checksum[:2]}/{image.checksum[2:]}"
    found: dict[str, bytes] = {}
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:*") as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            if member.isfile() and path in (f"{name}.commit", f"{name}.commitmeta"):
                data = tar.extractfile(member)
                found[path.rpartition(".")[2]] = data.read() if data else b""
    if "commit" not in found:
        raise ImageError(f"{image.reference}: the commit layer has no commit {image.checksum}")
    return found["commit"], found.get("commitmeta")


def _record(repo: ostree.Repo, image: Image, checksum: str) -> None:
    metadata = {
        KEY_MANIFEST: image.manifest.decode(),
        KEY_COMMIT: checksum,
        KEY_REFERENCE: image.reference,
    }
    with tempfile.TemporaryDirectory(dir=repo.path / "tmp") as empty:
        repo.write_commit(
            Path(empty),
            ref=_ref(MANIFEST_PREFIX, image.digest),
            subject=image.digest,
            metadata=metadata,
            timestamp=0,
        )


def recorded_commit(repo: ostree.Repo, digest: str) -> str | None:
    """The commit made from the image `digest` when it was pulled, if it is still here."""
    ref = repo.resolve_ref(_ref(MANIFEST_PREFIX, digest))
    commit = repo.read_commit(ref).metadata.get(KEY_COMMIT) if ref else None
    return str(commit) if commit and repo.has_commit(str(commit)) else None


def _images(repo: ostree.Repo) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The images pulled into `repo`: their manifest ref and its commit's metadata."""
    for ref in repo.list_refs():
        checksum = repo.resolve_ref(ref) if ref.startswith(MANIFEST_PREFIX) else None
        if checksum is not None:
            yield ref, repo.read_commit(checksum).metadata


def image_digests(repo: ostree.Repo) -> dict[str, str]:
    """Ostree commit -> the manifest digest of the image it was pulled from."""
    return {
        str(metadata[KEY_COMMIT]): ref.removeprefix(MANIFEST_PREFIX).replace("_", ":", 1)
        for ref, metadata in _images(repo)
        if metadata.get(KEY_COMMIT)
    }


def prune_refs(repo: ostree.Repo, keep: set[str]) -> int:
    """Drop the images whose commit is not in `keep` (the commits deployments run, and their
    bases), and the layers no remaining image lists; how many layers went. Their objects go
    at the prune that follows."""
    wanted: set[str] = set()
    for ref, metadata in list(_images(repo)):
        if metadata.get(KEY_COMMIT) not in keep:
            repo.set_ref(ref, None)
            continue
        try:
            layers = json.loads(str(metadata.get(KEY_MANIFEST, "")))["layers"]
            wanted.update(_ref(BLOB_PREFIX, str(d["digest"])) for d in layers)
        except (ValueError, KeyError, TypeError):
            continue
    dropped = [r for r in repo.list_refs() if r.startswith(BLOB_PREFIX) and r not in wanted]
    for ref in dropped:
        repo.set_ref(ref, None)
    return len(dropped)
