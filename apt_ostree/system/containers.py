"""upgrade and rebase for deployments that follow a container image (`[origin]
container-image-reference`): the image's manifest says whether there is an update, and only
the layers the repository lacks are fetched (apt_ostree.container.importer)."""

from __future__ import annotations

from pathlib import Path

from apt_ostree import ostree
from apt_ostree.container import importer
from apt_ostree.container.imageref import ImageReference
from apt_ostree.errors import UsageError
from apt_ostree.origin import Origin
from apt_ostree.pkgdiff import diff_packages
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
    image = importer.pull(system.repo, reference, _etc(merge), system.progress)
    if image.checksum == current.checksum:
        return Outcome(False, ("No upgrade available.",))
    if request.download_only:
        return Outcome(True, (f"Downloaded {image.checksum} (version {image.version or '-'})",))
    return deploy(system, merge, origin, image)


def _check(
    system: System,
    request: Upgrade,
    merge: ostree.Deployment,
    reference: ImageReference,
    current: CommitSummary,
) -> Outcome:
    """--check from the manifest and config; --preview also reads the commit's packages."""
    metadata: dict[str, object] = {}
    with system.progress.step(f"Checking {reference} for updates"):
        if request.preview:
            image, metadata = importer.commit_metadata(reference, _etc(merge))
        else:
            image = importer.inspect(reference, _etc(merge))
    if image.checksum == current.checksum:
        return Outcome(False, ("No upgrade available.",))
    head = f"Update available: {image.checksum} (version {image.version or '-'})"
    lines = (head, f"  image digest: {image.digest}")
    diff = None
    if request.preview:
        new = CommitSummary.of(ostree.CommitInfo(image.checksum, None, "", 0, metadata))
        diff = diff_packages(current.packages, new.packages)
    return Outcome(True, lines, diff, image.checksum, image.version)


def deploy(
    system: System, merge: ostree.Deployment, origin: Origin, image: importer.Image
) -> Outcome:
    deployed = system.deploy(image.checksum, origin, merge)
    c = system.commit(deployed)
    diff = system.package_diff(merge.checksum, deployed)
    lines = (*system.deployed_lines(deployed), f"  image digest: {image.digest}")
    return Outcome(True, lines, diff, deployed, c.version, deployed=True)


def rebase(system: System, merge: ostree.Deployment, origin: Origin, text: str) -> Outcome:
    reference = ImageReference.parse(text)
    image = importer.pull(system.repo, reference, _etc(merge), system.progress)
    new_origin = origin.with_refspec(reference)
    if image.checksum == merge.checksum and new_origin == origin:
        return Outcome(False, (f"Already on {reference} at {image.checksum}",))
    return deploy(system, merge, new_origin, image)
