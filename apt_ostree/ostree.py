"""The one adapter to libostree (`gi.repository.OSTree`).

Everything here unpacks GI's `(ok, value)` tuples, builds `GLib.Variant`s with explicit
types, turns `GLib.Error` into `RepoError`, and returns plain Python.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gi

gi.require_version("OSTree", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib, OSTree  # noqa: E402

from apt_ostree import keys  # noqa: E402
from apt_ostree.errors import RepoError  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitInfo:
    checksum: str
    parent: str | None
    subject: str
    timestamp: int
    metadata: Mapping[str, Any]

    @property
    def version(self) -> str | None:
        v = self.metadata.get(keys.VERSION)
        return str(v) if v is not None else None


def _fail(what: str, e: GLib.Error) -> RepoError:
    return RepoError(f"{what}: {e.message}")


def open_repo(path: Path, *, create: bool = False) -> Any:
    """Open the repository at `path`; with create=True make an archive repo when absent."""
    repo = OSTree.Repo.new(Gio.File.new_for_path(str(path)))
    if create and not (path / "config").exists():
        if path.exists() and any(path.iterdir()):
            raise RepoError(f"{path} is not an OSTree repository (and not empty)")
        path.mkdir(parents=True, exist_ok=True)
        try:
            repo.create(OSTree.RepoMode.ARCHIVE, None)
        except GLib.Error as e:
            raise _fail(f"cannot create repository {path}", e) from e
        return repo
    try:
        repo.open(None)
    except GLib.Error as e:
        raise _fail(f"cannot open repository {path}", e) from e
    return repo


def resolve_ref(repo: Any, ref: str) -> str | None:
    try:
        _, rev = repo.resolve_rev(ref, True)
    except GLib.Error as e:
        raise _fail(f"cannot resolve {ref}", e) from e
    return str(rev) if rev else None


def read_commit(repo: Any, checksum: str) -> CommitInfo:
    try:
        _, variant = repo.load_variant(OSTree.ObjectType.COMMIT, checksum)
    except GLib.Error as e:
        raise _fail(f"cannot read commit {checksum}", e) from e
    metadata = variant.get_child_value(0).unpack()
    parent = OSTree.commit_get_parent(variant)
    return CommitInfo(
        checksum=checksum,
        parent=parent,
        subject=variant.get_child_value(3).get_string(),
        timestamp=OSTree.commit_get_timestamp(variant),
        metadata=metadata,
    )


def _variant(key: str, value: Any) -> GLib.Variant:
    signature = keys.METADATA_TYPES.get(key, "s")
    return GLib.Variant(signature, value)


def metadata_variant(metadata: Mapping[str, Any]) -> GLib.Variant:
    return GLib.Variant("a{sv}", {k: _variant(k, v) for k, v in sorted(metadata.items())})


@contextmanager
def transaction(repo: Any) -> Iterator[None]:
    """An OSTree transaction that is aborted on any exception (no ref moves, staging dropped)."""
    try:
        repo.prepare_transaction(None)
    except GLib.Error as e:
        raise _fail("cannot start a repository transaction", e) from e
    try:
        yield
    except BaseException:
        repo.abort_transaction(None)
        raise
    try:
        repo.commit_transaction(None)
    except GLib.Error as e:
        repo.abort_transaction(None)
        raise _fail("cannot complete the repository transaction", e) from e


def commit_tree(
    repo: Any,
    tree: Path,
    *,
    ref: str,
    parent: str | None,
    subject: str,
    metadata: Mapping[str, Any],
    timestamp: int,
) -> str:
    """Commit the folder `tree` onto `ref` with `metadata`; return the new checksum."""
    modifier = OSTree.RepoCommitModifier.new(OSTree.RepoCommitModifierFlags.NONE, None, None)
    with transaction(repo):
        try:
            mtree = OSTree.MutableTree.new()
            repo.write_directory_to_mtree(Gio.File.new_for_path(str(tree)), mtree, modifier, None)
            _, root = repo.write_mtree(mtree, None)
            _, checksum = repo.write_commit_with_time(
                parent, subject, None, metadata_variant(metadata), root, timestamp, None
            )
        except GLib.Error as e:
            raise _fail(f"cannot commit {tree}", e) from e
        repo.transaction_set_ref(None, ref, checksum)
    return str(checksum)


def list_refs(repo: Any) -> Sequence[str]:
    try:
        _, refs = repo.list_refs(None, None)
    except GLib.Error as e:
        raise _fail("cannot list refs", e) from e
    return sorted(refs)


def gpg_sign_commit(repo: Any, checksum: str, key_id: str, homedir: Path | None) -> None:
    """Attach a GPG signature (a detached-metadata entry) to a commit."""
    try:
        repo.sign_commit(checksum, key_id, str(homedir) if homedir else None, None)
    except GLib.Error as e:
        raise _fail(f"cannot GPG-sign {checksum} with key {key_id}", e) from e


def ed25519_sign_commit(repo: Any, checksum: str, secret_key_file: Path) -> None:
    """Sign a commit with the ed25519 secret key in `secret_key_file` (base64, as ostree's)."""
    try:
        secret = secret_key_file.read_text().split()[0]
    except (OSError, IndexError) as e:
        raise RepoError(f"cannot read ed25519 secret key {secret_key_file}") from e
    try:
        signer = OSTree.Sign.get_by_name("ed25519")
        signer.set_sk(GLib.Variant("s", secret))
        signer.commit(repo, checksum, None)
    except GLib.Error as e:
        raise _fail(f"cannot sign {checksum} with {secret_key_file}", e) from e
