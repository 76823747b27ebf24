"""`compose container-encapsulate`: a commit as an OCI image (docs/container.md).

The image's layers are the commit's files, chunked by package (`chunking`), as reproducible
tar layers (`tarlayer`); its last layer holds the commit object itself (and its detached
metadata: signatures) at the path a repository keeps it, so that a client writes the very
commit the vendor composed, with the same checksum, and checks its tree against it. The
config carries bootc's labels. An `oci:` layout or `oci-archive:` file is written here; a
`docker://` image is written as a layout first and pushed with skopeo, which uploads only the
blobs the registry lacks.
"""

from __future__ import annotations

import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apt_ostree import keys, ostree, ostree_container
from apt_ostree.compose import chunking
from apt_ostree.container import oci, view
from apt_ostree.container.proxy import registries_options
from apt_ostree.container.tarlayer import Blob, write_layer
from apt_ostree.errors import UsageError
from apt_ostree.progress import Progress, human_size
from apt_ostree.run import run

WORKERS = 2  # gzip releases the GIL: layers compress in parallel


@dataclass(frozen=True)
class Target:
    """Where the image goes: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or `docker://REF`."""

    transport: str
    path: Path | None
    tag: str
    reference: str

    @staticmethod
    def parse(text: str) -> Target:
        if text.startswith("docker://") and len(text) > len("docker://"):
            return Target("docker", None, "latest", text)
        for transport in ("oci", "oci-archive"):
            prefix = transport + ":"
            if text.startswith(prefix) and len(text) > len(prefix):
                path, sep, tag = text.removeprefix(prefix).partition(":")
                return Target(transport, Path(path).absolute(), tag if sep else "latest", text)
        raise UsageError(
            f"image {text!r}: expected oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker://REF"
        )


@dataclass(frozen=True)
class EncapsulateResult:
    checksum: str
    manifest_digest: str
    layers: int
    size: int  # compressed, all layers


def _commit_layer(repo: ostree.Repo, checksum: str, dest: Path) -> Blob:
    commit, detached = ostree_container.commit_object(repo, checksum)
    objects = f"sysroot/ostree/repo/objects/{checksum[:2]}"
    files = [(f"{objects}/{checksum[2:]}.commit", commit)]
    if detached is not None:
        files.append((f"{objects}/{checksum[2:]}.commitmeta", detached))
    entries = []
    parts = objects.split("/")
    for i in range(1, len(parts) + 1):
        entries.append(ostree_container.Entry("/".join(parts[:i]), "dir", 0o40755, 0, 0, ()))
    contents = {}
    for path, data in files:
        entries.append(ostree_container.Entry(path, "file", 0o100644, 0, 0, (), len(data), path))
        contents[path] = data
    return write_layer(dest, entries, lambda key: io.BytesIO(contents[key]))


def _history(repo: ostree.Repo, info: ostree.CommitInfo) -> list[Any]:
    lists = [info.metadata.get(keys.PACKAGES, ())]
    parent = info.parent
    while parent and len(lists) < chunking.HISTORY_DEPTH and repo.has_commit(parent):
        older = repo.read_commit(parent)
        lists.append(older.metadata.get(keys.PACKAGES, ()))
        parent = older.parent
    return lists


def _read(repo: ostree.Repo, checksum: str) -> bytes:
    return ostree_container.open_content(repo, checksum).read()


def _config(info: ostree.CommitInfo, blobs: list[Blob], names: list[str]) -> dict[str, Any]:
    labels = {
        oci.LABEL_COMMIT: info.checksum,
        oci.LABEL_BOOTABLE: "true",
        oci.LABEL_BOOTC: "1",
        oci.LABEL_COMMIT_LAYER: blobs[-1].diff_id,
    }
    if info.version:
        labels[oci.LABEL_VERSION] = info.version
        labels["version"] = info.version
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.timestamp))
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in blobs]},
        "history": [{"created": created, "created_by": f"apt-ostree: {name}"} for name in names],
    }


def encapsulate(
    repo_path: Path,
    rev: str,
    image: str,
    progress: Progress,
    *,
    max_layers: int = chunking.MAX_LAYERS,
) -> EncapsulateResult:
    target = Target.parse(image)
    repo = ostree.Repo.open(repo_path)
    checksum = repo.resolve_ref(rev)
    if checksum is None:
        raise UsageError(f"{rev}: no such ref or commit in {repo_path}")
    info = repo.read_commit(checksum)
    if target.transport == "oci":
        assert target.path is not None
        return _write(repo, info, oci.Layout(target.path), target.tag, progress, max_layers)
    with tempfile.TemporaryDirectory(prefix="aot-oci-", dir=repo_path / "tmp") as tmp:
        layout = oci.Layout(Path(tmp) / "layout")
        result = _write(repo, info, layout, target.tag, progress, max_layers)
        with progress.step(f"Writing {target.reference}"):
            _copy(layout, target)
    return result


def _copy(layout: oci.Layout, target: Target) -> None:
    dest = target.reference
    if target.transport == "oci-archive":
        dest = f"oci-archive:{target.path}:{target.tag}"
    run(
        [
            "skopeo",
            *registries_options(),
            "--insecure-policy",
            "copy",
            "--quiet",
            f"oci:{layout.path}:{target.tag}",
            dest,
        ],  # fmt: skip
        what=f"writing {target.reference}",
    )


def _write(
    repo: ostree.Repo,
    info: ostree.CommitInfo,
    layout: oci.Layout,
    tag: str,
    progress: Progress,
    max_layers: int,
) -> EncapsulateResult:
    layout.create()
    with progress.step(f"Reading the tree of {info.checksum[:12]}"):
        entries = list(ostree_container.walk_commit(repo, info.checksum))
        entries += _var_view(repo, info.checksum, entries)
        sources = chunking.status_sources(entries, lambda c: _read(repo, c))
        owned = chunking.owners(entries, sources, lambda c: _read(repo, c))
        counts = chunking.changes(_history(repo, info), sources)
        expected = chunking.expected_changes(
            entries, owned, lambda c: ostree_container.open_content(repo, c)
        )
        layers = chunking.plan(entries, owned, counts, expected, max_layers=max_layers)
    work = Path(tempfile.mkdtemp(prefix="layers-", dir=layout.path))
    try:
        blobs = _write_layers(repo, info.checksum, layers, work, progress)
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    names = [layer.name for layer in layers] + ["ostree commit"]
    config = layout.write_blob(oci.dumps(_config(info, blobs, names)))
    descriptors = [
        oci.Descriptor(
            oci.LAYER_TYPE, b.digest, b.size,
            {oci.ANNOTATION_COMPONENTS: " ".join(layer.components)},
        )
        for b, layer in zip(blobs, layers, strict=False)
    ]  # fmt: skip
    last = blobs[-1]
    descriptors.append(
        oci.Descriptor(
            oci.LAYER_TYPE, last.digest, last.size, {oci.ANNOTATION_COMMIT_LAYER: info.checksum}
        )
    )
    manifest = oci.manifest(
        oci.Descriptor(oci.CONFIG_TYPE, config.digest, config.size), descriptors
    )
    desc = layout.write_blob(oci.dumps(manifest))
    layout.tag(desc, tag)
    total = sum(b.size for b in blobs)
    progress.message(
        f"    {len(blobs)} layers, {human_size(total)} compressed; manifest {desc.digest}"
    )
    return EncapsulateResult(info.checksum, desc.digest, len(blobs), total)


def _var_view(
    repo: ostree.Repo, checksum: str, entries: list[ostree_container.Entry]
) -> list[ostree_container.Entry]:
    """/var in the container view (`view`): what the tree's tmpfiles.d lines make there."""
    if any(e.path.startswith("var/") for e in entries):
        raise UsageError(
            f"commit {checksum} has files in /var: not an apt-ostree tree (a commit's /var is"
            " empty, its content made at boot from tmpfiles.d)"
        )
    confs = {e.path: e.checksum for e in entries if e.kind == "file"}
    texts = [_read(repo, confs[p]).decode(errors="replace") for p in view.TMPFILES if p in confs]
    return view.var_entries(texts)


def _write_layers(
    repo: ostree.Repo, checksum: str, layers: list[chunking.Layer], work: Path, progress: Progress
) -> list[Blob]:
    done = [0]

    def one(index: int, layer: chunking.Layer) -> Blob:
        blob = write_layer(
            work / f"{index}.tar.gz",
            view.in_view(layer.entries),
            lambda c: ostree_container.open_content(repo, c),
        )
        done[0] += 1
        progress.percent("Writing layers", done[0], len(layers) + 1)
        return blob

    # the largest first, so that the last to finish is a small one
    order = sorted(range(len(layers)), key=lambda i: -layers[i].size)
    with progress.step(f"Writing {len(layers) + 1} layers"), ThreadPoolExecutor(WORKERS) as pool:
        futures = {i: pool.submit(one, i, layers[i]) for i in order}
        blobs = [futures[i].result() for i in range(len(layers))]
        blobs.append(_commit_layer(repo, checksum, work / "commit.tar.gz"))
    layout = oci.Layout(work.parent)
    for blob in blobs:
        layout.add_blob(blob.path, blob.digest)
    return [Blob(layout.blob_path(b.digest), b.digest, b.size, b.diff_id) for b in blobs]
