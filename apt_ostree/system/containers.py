"""upgrade and rebase for deployments that follow a container image (`[origin]
container-image-reference`): the image's manifest says whether there is an update, and only
the layers the repository lacks are fetched (apt_ostree.container.importer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from apt_ostree import keys, ostree
from apt_ostree.container import derive, importer
from apt_ostree.container.imageref import ImageReference
from apt_ostree.errors import UsageError
from apt_ostree.layering import build
from apt_ostree.origin import Origin
from apt_ostree.pkgdiff import diff_packages
from apt_ostree.system import trials
from apt_ostree.system.requests import Upgrade
from apt_ostree.system.results import Outcome
from apt_ostree.system.sysroot import CommitSummary, System


def _etc(merge: ostree.Deployment) -> Path:
    """The managed system's /etc: its containers-policy.json and registries.d decide."""
    return merge.path / "etc"


def upgrade(
    system: System,
    request: Upgrade,
    merge: ostree.Deployment,
    origin: Origin,
    current: CommitSummary,
) -> Outcome:
    reference = origin.refspec
    assert isinstance(reference, ImageReference)
    if request.cache_only:
        raise UsageError("--cache-only: an image origin has no download cache; run upgrade")
    if request.check or request.preview:
        return _check(system, request, merge, reference, current)
    pulled = importer.pull(
        system.repo, reference, _etc(merge), system.progress, _deriver(system, origin)
    )
    if pulled.checksum == current.checksum:
        return Outcome(False, ("No upgrade available.",))
    if request.download_only:
        version = pulled.image.version or "-"
        return Outcome(True, (f"Downloaded {pulled.checksum} (version {version})",))
    trials.refuse_blocked(system, pulled.checksum)
    return deploy(system, merge, origin, pulled, verify=request.verify)


def _deriver(system: System, origin: Origin) -> importer.Derive:
    """How a derived image's layers become the commit to deploy (apt_ostree.container.derive),
    with the initramfs built again by the tree's dracut when they changed the kernel."""

    def make(image: importer.Image, layers: Sequence[str]) -> str:
        progress = system.progress
        lower = build.base_tree(system.sysroot, system.osname(), image.checksum, progress=progress)
        info = system.repo.read_commit(image.checksum)
        made = derive.derive(
            system.repo, image.checksum, layers, lower=lower,
            subject=f"apt-ostree: derived image {image.digest}",
            metadata={**info.metadata, keys.DERIVED_FROM: image.checksum},
            progress=progress,
        )  # fmt: skip
        if not made.kernel_changed:
            return made.checksum
        return build.regenerate_initramfs(
            system.sysroot, made.checksum, origin, progress=progress, client_layer=False
        )

    return make


def _check(
    system: System,
    request: Upgrade,
    merge: ostree.Deployment,
    reference: ImageReference,
    current: CommitSummary,
) -> Outcome:
    """--check from the manifest and config; --preview also reads the commit's packages
    (a derived image's are known only once its layers are fetched)."""
    metadata: dict[str, object] = {}
    with system.progress.step(f"Checking {reference} for updates"):
        if request.preview:
            image, metadata = importer.commit_metadata(reference, _etc(merge))
        else:
            image = importer.inspect(reference, _etc(merge))
    if image.derived:
        same = importer.recorded_commit(system.repo, image.digest) == current.checksum
    else:
        same = image.checksum == current.checksum
    if same:
        return Outcome(False, ("No upgrade available.",))
    if image.derived:
        head = f"Update available: an image derived from {image.checksum}"
    else:
        head = f"Update available: {image.checksum} (version {image.version or '-'})"
    lines = [head, f"  image digest: {image.digest}"]
    diff = None
    if request.preview and image.derived:
        lines.append("  (its packages are known once its layers are fetched: --download-only)")
    elif request.preview:
        new = CommitSummary.of(ostree.CommitInfo(image.checksum, None, "", 0, metadata))
        diff = diff_packages(current.packages, new.packages)
    checksum = None if image.derived else image.checksum
    return Outcome(True, tuple(lines), diff, checksum, image.version)


def deploy(
    system: System,
    merge: ostree.Deployment,
    origin: Origin,
    pulled: importer.Pulled,
    *,
    verify: bool = False,
) -> Outcome:
    check = trials.verify(pulled.checksum, system.progress) if verify else None
    deployed = system.deploy(pulled.checksum, origin, merge, check=check)
    c = system.commit(deployed)
    diff = system.package_diff(merge.checksum, deployed)
    lines = (*system.deployed_lines(deployed), f"  image digest: {pulled.image.digest}")
    return Outcome(True, lines, diff, deployed, c.version, deployed=True)


def rebase(system: System, merge: ostree.Deployment, origin: Origin, text: str) -> Outcome:
    reference = ImageReference.parse(text)
    new_origin = origin.with_refspec(reference)
    pulled = importer.pull(
        system.repo, reference, _etc(merge), system.progress, _deriver(system, new_origin)
    )
    if pulled.checksum == merge.checksum and new_origin == origin:
        return Outcome(False, (f"Already on {reference} at {pulled.checksum}",))
    return deploy(system, merge, new_origin, pulled)
