"""The OCI image layout on disk (image-spec's image-layout.md) and the JSON documents in it:
index, manifest, config. Written with sorted keys and no spaces, so the same image is the
same bytes (and digest) every time."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_ostree.errors import ImageError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"

# labels and annotations (bootc's and ostree-rs-ext's names where they exist)
LABEL_COMMIT = "ostree.commit"
LABEL_BOOTABLE = "ostree.bootable"
LABEL_BOOTC = "containers.bootc"
LABEL_VERSION = "org.opencontainers.image.version"
ANNOTATION_COMPONENTS = "org.aptostree.components"  # a layer's components, space-separated
ANNOTATION_COMMIT_LAYER = "org.aptostree.ostree-commit"  # on the layer that holds the commit
# the diff_id of that layer: container engines drop layer annotations in a derived image,
# its config keeps the base's labels
LABEL_COMMIT_LAYER = "org.aptostree.ostree-commit-layer"


def dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest}
        doc["size"] = self.size
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc

    @staticmethod
    def of(doc: Mapping[str, Any]) -> Descriptor:
        try:
            return Descriptor(
                str(doc["mediaType"]), str(doc["digest"]), int(doc["size"]),
                dict(doc.get("annotations") or {}),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise ImageError(f"malformed descriptor in the manifest: {e}") from e


def manifest(config: Descriptor, layers: Sequence[Descriptor]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }


class Layout:
    """An OCI image layout folder: blobs/sha256/..., oci-layout, index.json."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.path / "blobs" / algorithm / hexdigest

    def create(self) -> None:
        if self.path.exists() and any(self.path.iterdir()) and not self._is_layout():
            raise ImageError(f"{self.path} exists and is not an OCI image layout")
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_bytes(dumps({"imageLayoutVersion": "1.0.0"}))

    def _is_layout(self) -> bool:
        return (self.path / "oci-layout").is_file()

    def add_blob(self, source: Path, digest: str) -> None:
        """Move the file `source` in as the blob `digest` (kept when already there)."""
        dest = self.blob_path(digest)
        if dest.exists():
            source.unlink()
        else:
            os.replace(source, dest)

    def write_blob(self, data: bytes) -> Descriptor:
        digest = digest_of(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.write_bytes(data)
        return Descriptor("", digest, len(data))

    def tag(self, manifest_desc: Descriptor, tag: str) -> None:
        """Point `tag` at the manifest in index.json (another manifest of that tag is
        replaced; other tags stay)."""
        index_path = self.path / "index.json"
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []}
        if index_path.exists():
            index = json.loads(index_path.read_text())
        kept = [
            m for m in index.get("manifests", [])
            if (m.get("annotations") or {}).get(REF_NAME) != tag
        ]  # fmt: skip
        entry = Descriptor(MANIFEST_TYPE, manifest_desc.digest, manifest_desc.size, {REF_NAME: tag})
        index["manifests"] = [*kept, entry.to_json()]
        tmp = index_path.with_suffix(".tmp")
        tmp.write_bytes(dumps(index))
        os.replace(tmp, index_path)
