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


# ---- static deltas and summary ----


def _short(checksum: str | None) -> str:
    return checksum[:6] if checksum else "scratch"


def generate_static_delta(repo: Any, from_checksum: str | None, to_checksum: str) -> None:
    """Write the static delta from `from_checksum` (None: "from scratch") to `to_checksum`.

    MAJOR deltas are the ones meant for serving (ostree static-delta generate's default); the
    defaults of the parameters (bsdiff on, objects over 4 MB left to a plain fetch) are kept.
    """
    params = GLib.Variant("a{sv}", {})
    try:
        repo.static_delta_generate(
            OSTree.StaticDeltaGenerateOpt.MAJOR, from_checksum, to_checksum, None, params, None
        )
    except GLib.Error as e:
        what = f"{_short(from_checksum)} -> {_short(to_checksum)}"
        raise _fail(f"cannot generate the static delta {what}", e) from e


def _delta_dir(from_checksum: str | None, to_checksum: str) -> str:
    """The folder of a delta under `deltas/`, named as libostree names it (ostree-repo-static-
    delta-core.c): modified base64 of the checksums, split after two characters."""
    to_b64 = OSTree.checksum_b64_from_bytes(OSTree.checksum_to_bytes(to_checksum))
    if from_checksum is None:
        return f"{to_b64[:2]}/{to_b64[2:]}"
    from_b64 = OSTree.checksum_b64_from_bytes(OSTree.checksum_to_bytes(from_checksum))
    return f"{from_b64[:2]}/{from_b64[2:]}-{to_b64}"


def static_delta_size(repo: Any, from_checksum: str | None, to_checksum: str) -> int:
    """Bytes a client downloads for this delta (its superblock and parts); 0 when absent."""
    folder = Path(repo.get_path().get_path()) / "deltas" / _delta_dir(from_checksum, to_checksum)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def regenerate_summary(repo: Any) -> None:
    """Rewrite the repository's `summary` (refs, and the index of static deltas) for clients of
    a plain HTTP server. libostree drops the old `summary.sig`: sign again afterwards."""
    try:
        repo.regenerate_summary(None, None)
    except GLib.Error as e:
        raise _fail("cannot regenerate the summary", e) from e


def gpg_sign_summary(repo: Any, key_id: str, homedir: Path | None) -> None:
    """Add a GPG signature of the current summary to `summary.sig`."""
    try:
        repo.add_gpg_signature_summary([key_id], str(homedir) if homedir else None, None)
    except GLib.Error as e:
        raise _fail(f"cannot GPG-sign the summary with key {key_id}", e) from e


def ed25519_sign_summary(repo: Any, secret_key_file: Path) -> None:
    """Add an ed25519 signature of the current summary to `summary.sig`."""
    try:
        secret = secret_key_file.read_text().split()[0]
    except (OSError, IndexError) as e:
        raise RepoError(f"cannot read ed25519 secret key {secret_key_file}") from e
    try:
        signer = OSTree.Sign.get_by_name("ed25519")
        # ostree_sign_summary takes the secret keys as an "av" of engine-specific keys
        keys_variant = GLib.Variant("av", [GLib.Variant("s", secret)])
        signer.summary(repo, keys_variant, None)
    except GLib.Error as e:
        raise _fail(f"cannot sign the summary with {secret_key_file}", e) from e


def set_ref(repo: Any, ref: str, checksum: str | None) -> None:
    """Point `ref` at `checksum` at once, outside a transaction (None deletes the ref)."""
    try:
        repo.set_ref_immediate(None, ref, checksum, None)
    except GLib.Error as e:
        raise _fail(f"cannot set {ref} to {checksum or '(none)'}", e) from e
