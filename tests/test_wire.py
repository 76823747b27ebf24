"""The bus form of results: every key a result can carry has its D-Bus type, and a deployment
with every field set comes back from its `a{sv}` the same (what the daemon sends, the client
reads), with no bus and no subprocess."""

from __future__ import annotations

from gi.repository import GLib

from apt_ostree.daemon.variants import native, wire_variants
from apt_ostree.system.results import WIRE_TYPES, DeploymentInfo

IMAGE = "ostree-unverified-registry:127.0.0.1:5000/os:stable"
EVERYTHING = DeploymentInfo(
    id="debian-" + "a" * 64 + ".0", osname="debian", checksum="a" * 64,
    base_checksum="b" * 64, version="13.1", timestamp=1700000000, origin=IMAGE,
    override_commit="c" * 64, booted=True, staged=False, pinned=True, unlocked="hotfix",
    live_commit="d" * 64, live_replaced=True, requested_packages=("htop",),
    requested_local_packages=("foo",), requested_base_removals=("nano",),
    requested_base_replacements=("vim=2",), requested_base_local_replacements=("bar",),
    kernel_arguments=("quiet",), regenerate_initramfs=True, initramfs_args=("-a",),
    package_count=171, container_image_reference=IMAGE,
    container_image_digest="sha256:" + "e" * 64,
)  # fmt: skip


def test_every_deployment_key_has_a_bus_type() -> None:
    assert set(EVERYTHING.to_wire()) <= set(WIRE_TYPES)


def test_a_deployment_survives_the_bus() -> None:
    variants = wire_variants(EVERYTHING.to_wire())
    sent = GLib.Variant("a{sv}", variants)  # as dasbus serializes it
    received = native(sent)
    assert DeploymentInfo.from_wire(received) == EVERYTHING
