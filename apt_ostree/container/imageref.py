"""Container image references as an origin records them (rpm-ostree's and bootc's forms):

    ostree-unverified-registry:HOST/NAME:TAG    a registry, no signature required
    ostree-unverified-image:TRANSPORT:REF       oci:DIR[:TAG], oci-archive:FILE, docker://...
    ostree-image-signed:TRANSPORT:REF           checked against containers-policy.json

`TRANSPORT:REF` is what skopeo takes (containers-transports(5)).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from apt_ostree.errors import UsageError


class Verify(StrEnum):
    UNVERIFIED = "unverified"  # the image is taken as it comes (--insecure-policy)
    SIGNED = "signed"  # the managed system's containers-policy.json decides


_PREFIXES = {
    "ostree-unverified-registry:": (Verify.UNVERIFIED, "docker://"),
    "ostree-unverified-image:": (Verify.UNVERIFIED, ""),
    "ostree-image-signed:": (Verify.SIGNED, ""),
}
TRANSPORTS = ("oci:", "oci-archive:", "docker://")
IMAGE_PREFIXES = tuple(_PREFIXES)


@dataclass(frozen=True)
class ImageReference:
    verify: Verify
    transport_ref: str  # skopeo's TRANSPORT:REF
    text: str  # as the user gave it

    @staticmethod
    def parse(text: str) -> ImageReference:
        for prefix, (verify, implied) in _PREFIXES.items():
            if text.startswith(prefix):
                rest = implied + text.removeprefix(prefix)
                if not rest.startswith(TRANSPORTS) or rest.rstrip(":/") in TRANSPORTS:
                    raise UsageError(
                        f"image reference {text!r}: expected one of"
                        f" {', '.join(TRANSPORTS)} after {prefix}"
                    )
                return ImageReference(verify, rest, text)
        raise UsageError(
            f"image reference {text!r}: expected {', '.join(IMAGE_PREFIXES)} and an image"
        )

    @staticmethod
    def looks_like(text: str) -> bool:
        return text.startswith(IMAGE_PREFIXES)

    @property
    def transport(self) -> str:
        return next(t for t in TRANSPORTS if self.transport_ref.startswith(t)).rstrip(":/")

    def __str__(self) -> str:
        return self.text
