"""The one adapter to libostree (`gi.repository.OSTree`).

Everything here unpacks GI's `(ok, value)` tuples, builds `GLib.Variant`s with explicit
types, turns `GLib.Error` into `RepoError`, and returns plain Python: the GI repository and
sysroot objects stay inside `Repo` and `Sysroot`, so no other module imports gi for libostree.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from apt_ostree.ostree_trees import diff_folders, resolve_in_commit  # noqa: E402
from apt_ostree.run import run  # noqa: E402

log = logging.getLogger(__name__)

AT_FDCWD = -100


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


@dataclass(frozen=True)
class PullStats:
    fetched_objects: int
    bytes_transferred: int
    delta_parts: int
    seconds: float


PullProgressCallback = Callable[[int, int, int, float], None]  # fetched, requested, bytes, speed


@dataclass(frozen=True)
class TreeDiff:
    """Paths (relative, no leading /) that differ between two commits; a folder that is new
    is listed with everything in it, parents first."""

    added: tuple[str, ...]
    modified: tuple[str, ...]
    removed: tuple[str, ...]


def _fail(what: str, e: GLib.Error) -> RepoError:
    return RepoError(f"{what}: {e.message}")


def _swapped(variant: GLib.Variant) -> GLib.Variant:
    """OSTree's objects hold numbers big-endian, as `ostree show` prints them: both ways."""
    return variant.byteswap() if sys.byteorder == "little" else variant


def _metadata_variant(metadata: Mapping[str, Any]) -> GLib.Variant:
    values = {k: GLib.Variant(keys.metadata_type(k, v), v) for k, v in sorted(metadata.items())}
    return _swapped(GLib.Variant("a{sv}", values))  # strings, booleans: the same bytes


def _ed25519(what: str) -> Any:
    """libostree's ed25519 engine; Debian's libostree (2022.7 in Debian 12, 2025.2 in 13) is
    built without libsodium, so it has none: say so in one line, before anything is made."""
    try:
        return OSTree.Sign.get_by_name("ed25519")
    except GLib.Error as e:
        version = f"{OSTree.YEAR_VERSION}.{OSTree.RELEASE_VERSION}"
        raise RepoError(
            f"{what}: this libostree ({version}) is built without ed25519 signatures: use GPG"
            " (--gpg-sign on the server, --gpg-import on clients)"
        ) from e


def check_ed25519(what: str) -> None:
    """Raise RepoError (one line, starting with `what`) when libostree has no ed25519."""
    _ed25519(what)


def _ed25519_secret(secret_key_file: Path) -> str:
    try:
        return secret_key_file.read_text().split()[0]
    except (OSError, IndexError) as e:
        raise RepoError(f"cannot read ed25519 secret key {secret_key_file}") from e


def _short(checksum: str | None) -> str:
    return checksum[:6] if checksum else "scratch"


def _delta_dir(from_checksum: str | None, to_checksum: str) -> str:
    """The folder of a delta under `deltas/`, named as libostree names it (ostree-repo-static-
    delta-core.c): modified base64 of the checksums, split after two characters."""
    to_b64 = OSTree.checksum_b64_from_bytes(OSTree.checksum_to_bytes(to_checksum))
    if from_checksum is None:
        return f"{to_b64[:2]}/{to_b64[2:]}"
    from_b64 = OSTree.checksum_b64_from_bytes(OSTree.checksum_to_bytes(from_checksum))
    return f"{from_b64[:2]}/{from_b64[2:]}-{to_b64}"


def _mtree_parent(mtree: Any, rel: str) -> tuple[Any, str]:
    # lookup(), not walk(): PyGObject hands walk() a path array it misreads (walk(["usr",
    # "share"]) gives /usr), and lookup() loads a lazily read folder before it is changed.
    *parents, name = rel.split("/")
    for part in parents:
        _, _, mtree = mtree.lookup(part)
    return mtree, name


class Repo:
    """An OSTree repository. Made by `Repo.open` or `Sysroot.repo`; the GI `OSTree.Repo` it
    wraps never leaves this module."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo

    @staticmethod
    def open(path: Path, *, create: bool = False) -> Repo:
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
            return Repo(repo)
        try:
            repo.open(None)
        except GLib.Error as e:
            raise _fail(f"cannot open repository {path}", e) from e
        return Repo(repo)

    @property
    def path(self) -> Path:
        return Path(self._repo.get_path().get_path())

    # ---- refs and commits ----

    def resolve_ref(self, ref: str) -> str | None:
        try:
            _, rev = self._repo.resolve_rev(ref, True)
        except GLib.Error as e:
            raise _fail(f"cannot resolve {ref}", e) from e
        return str(rev) if rev else None

    def list_refs(self) -> Sequence[str]:
        try:
            _, refs = self._repo.list_refs(None, None)
        except GLib.Error as e:
            raise _fail("cannot list refs", e) from e
        return sorted(refs)

    def set_ref(self, ref: str, checksum: str | None) -> None:
        """Point `ref` at `checksum` at once, outside a transaction (None deletes the ref)."""
        try:
            self._repo.set_ref_immediate(None, ref, checksum, None)
        except GLib.Error as e:
            raise _fail(f"cannot set {ref} to {checksum or '(none)'}", e) from e

    def read_commit(self, checksum: str) -> CommitInfo:
        try:
            _, variant = self._repo.load_variant(OSTree.ObjectType.COMMIT, checksum)
        except GLib.Error as e:
            raise _fail(f"cannot read commit {checksum}", e) from e
        return CommitInfo(
            checksum=checksum,
            parent=OSTree.commit_get_parent(variant),
            subject=variant.get_child_value(3).get_string(),
            timestamp=OSTree.commit_get_timestamp(variant),
            metadata=_swapped(variant.get_child_value(0)).unpack(),
        )

    def has_commit(self, checksum: str) -> bool:
        try:
            _, found = self._repo.has_object(OSTree.ObjectType.COMMIT, checksum, None)
        except GLib.Error as e:
            raise _fail(f"cannot look up {checksum}", e) from e
        return bool(found)

    def commit_is_partial(self, checksum: str) -> bool:
        try:
            _, _, state = self._repo.load_commit(checksum)
        except GLib.Error as e:
            raise _fail(f"commit {checksum} is not in the repository", e) from e
        return bool(state & OSTree.RepoCommitState.PARTIAL)

    # ---- writing commits ----

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """An OSTree transaction that is aborted on any exception (no ref moves, staging
        dropped)."""
        try:
            self._repo.prepare_transaction(None)
        except GLib.Error as e:
            raise _fail("cannot start a repository transaction", e) from e
        try:
            yield
        except BaseException:
            self._repo.abort_transaction(None)
            raise
        try:
            self._repo.commit_transaction(None)
        except GLib.Error as e:
            self._repo.abort_transaction(None)
            raise _fail("cannot complete the repository transaction", e) from e

    def write_commit(
        self,
        tree: Path,
        *,
        base: str | None = None,
        remove: Sequence[str] = (),
        ref: str | None = None,
        parent: str | None = None,
        subject: str,
        metadata: Mapping[str, Any],
        timestamp: int,
    ) -> str:
        """Commit the folder `tree` with `metadata`; return the new checksum. With `ref`, the
        ref moves to it in the same transaction (else no ref moves).

        With `base`, `tree` is written on top of the tree of the commit `base`, less the paths
        `remove` (relative, no leading /). The base's tree is never read from disk: its root is
        loaded into a MutableTree by checksum, so the cost is that of `tree` and `remove`,
        whatever the size of the base.
        """
        if remove and base is None:
            raise ValueError("remove needs a base to remove from")
        modifier = OSTree.RepoCommitModifier.new(OSTree.RepoCommitModifierFlags.NONE, None, None)
        with self.transaction():
            try:
                if base is None:
                    mtree = OSTree.MutableTree.new()
                else:
                    mtree = OSTree.MutableTree.new_from_commit(self._repo, base)
                for rel in remove:
                    subdir, name = _mtree_parent(mtree, rel)
                    subdir.remove(name, True)
                folder = Gio.File.new_for_path(str(tree))
                self._repo.write_directory_to_mtree(folder, mtree, modifier, None)
                _, root = self._repo.write_mtree(mtree, None)
                _, checksum = self._repo.write_commit_with_time(
                    parent, subject, None, _metadata_variant(metadata), root, timestamp, None
                )
            except GLib.Error as e:
                what = tree if base is None else f"the layer on {base}"
                raise _fail(f"cannot commit {what}", e) from e
            if ref is not None:
                self._repo.transaction_set_ref(None, ref, checksum)
        return str(checksum)

    def gpg_sign_commit(self, checksum: str, key_id: str, homedir: Path | None) -> None:
        """Attach a GPG signature (a detached-metadata entry) to a commit."""
        try:
            self._repo.sign_commit(checksum, key_id, str(homedir) if homedir else None, None)
        except GLib.Error as e:
            raise _fail(f"cannot GPG-sign {checksum} with key {key_id}", e) from e

    def ed25519_sign_commit(self, checksum: str, secret_key_file: Path) -> None:
        """Sign a commit with the ed25519 secret key in `secret_key_file` (base64, as
        ostree's)."""
        signer = _ed25519(f"cannot sign {checksum} with {secret_key_file}")
        secret = _ed25519_secret(secret_key_file)
        try:
            signer.set_sk(GLib.Variant("s", secret))
            signer.commit(self._repo, checksum, None)
        except GLib.Error as e:
            raise _fail(f"cannot sign {checksum} with {secret_key_file}", e) from e

    # ---- config and remotes ----

    def set_config(self, group: str, key: str, value: str) -> None:
        """Set `[group] key=value` in the repository's config (as `ostree config set`)."""
        config = self._repo.copy_config()
        config.set_string(group, key, value)
        try:
            self._repo.write_config(config)
        except GLib.Error as e:
            raise _fail(f"cannot write the config of {self.path}", e) from e

    def add_remote(
        self,
        name: str,
        url: str,
        *,
        gpg_verify: bool,
        gpg_keyring: Path | None = None,
        ed25519_key: str | None = None,
    ) -> None:
        """Add (or replace) the remote `name` with its verification settings."""
        options: dict[str, GLib.Variant] = {
            "gpg-verify": GLib.Variant("b", gpg_verify),
            "gpg-verify-summary": GLib.Variant("b", False),
        }
        if ed25519_key is not None:
            _ed25519(f"cannot configure remote {name}")  # else pulls fail: "No signatures found"
            options["sign-verify"] = GLib.Variant("b", True)
            options["verification-ed25519-key"] = GLib.Variant("s", ed25519_key)
        try:
            self._repo.remote_change(
                None,
                OSTree.RepoRemoteChange.REPLACE,
                name,
                url,
                GLib.Variant("a{sv}", options),
                None,
            )
            if gpg_keyring is not None:
                stream = Gio.File.new_for_path(str(gpg_keyring)).read(None)
                self._repo.remote_gpg_import(name, stream, None, None)
        except GLib.Error as e:
            raise _fail(f"cannot configure remote {name}", e) from e

    def remote_names(self) -> list[str]:
        return sorted(self._repo.remote_list() or [])

    # ---- pulls ----

    def pull(
        self,
        remote: str,
        refs: Sequence[str],
        *,
        commit_only: bool = False,
        depth: int = 0,
        on_progress: PullProgressCallback | None = None,
    ) -> PullStats:
        """Pull `refs` (names or checksums) from `remote`, with libostree's verification."""
        flags = OSTree.RepoPullFlags.COMMIT_ONLY if commit_only else OSTree.RepoPullFlags.NONE
        options = GLib.Variant(
            "a{sv}",
            {
                "refs": GLib.Variant("as", list(refs)),
                "flags": GLib.Variant("i", int(flags)),
                "depth": GLib.Variant("i", depth),
            },
        )
        start = time.monotonic()
        progress = OSTree.AsyncProgress.new()
        last = {"bytes": 0, "fetched": 0, "parts": 0}

        def changed(p: Any) -> None:
            fetched, requested = p.get_uint("fetched"), p.get_uint("requested")
            transferred = p.get_uint64("bytes-transferred")
            last.update(bytes=transferred, fetched=fetched, parts=p.get_uint("fetched-delta-parts"))
            if on_progress is not None:
                elapsed = max(time.monotonic() - start, 1e-3)
                on_progress(fetched, requested, transferred, transferred / elapsed)

        progress.connect("changed", changed)
        try:
            self._repo.pull_with_options(remote, options, progress, None)
        except GLib.Error as e:
            raise _fail(f"cannot pull {', '.join(refs)} from {remote}", e) from e
        finally:
            progress.finish()
        changed(progress)
        return PullStats(last["fetched"], last["bytes"], last["parts"], time.monotonic() - start)

    def pull_local(self, source: Path, ref: str, *, remote: str | None) -> str:
        """Copy `ref` of the repository at `source` into this one; return its checksum.

        With `remote`, the ref is written as `remote:ref` (libostree's `override-remote-name`,
        as `ostree pull-local --remote`), so a sysroot made from a local build upgrades from
        that remote.
        """
        options: dict[str, GLib.Variant] = {
            "refs": GLib.Variant("as", [ref]),
            "flags": GLib.Variant("i", int(OSTree.RepoPullFlags.NONE)),
        }
        if remote is not None:
            options["override-remote-name"] = GLib.Variant("s", remote)
        try:
            self._repo.pull_with_options(
                f"file://{source.absolute()}", GLib.Variant("a{sv}", options), None, None
            )
        except GLib.Error as e:
            raise _fail(f"cannot copy {ref} from {source}", e) from e
        checksum = self.resolve_ref(f"{remote}:{ref}" if remote else ref)
        if checksum is None:
            raise RepoError(f"{ref} was not copied from {source}")
        return checksum

    # ---- reading trees ----

    def read_file(self, checksum: str, path: str) -> bytes | None:
        """The content of one file of a commit (None when absent), read without a checkout;
        symbolic links on the way are followed inside the commit (`/usr/share/doc/PKG` that
        links to another package's folder)."""
        try:
            _, root, _ = self._repo.read_commit(checksum, None)
            f = resolve_in_commit(root, path)
            if f is None:
                return None
            f.ensure_resolved()
            _, stream, _, _ = self._repo.load_file(f.get_checksum(), None)
            chunks: list[bytes] = []
            while stream is not None:
                chunk = stream.read_bytes(1 << 20, None).get_data()
                if not chunk:
                    break
                chunks.append(bytes(chunk))
        except GLib.Error as e:
            raise _fail(f"cannot read {path} of {checksum}", e) from e
        return b"".join(chunks)

    def checkout_subpath(self, checksum: str, subpath: str, dest: Path) -> None:
        """Check out one folder of a commit into `dest` (made here; plain copies, user mode)."""
        options = OSTree.RepoCheckoutAtOptions()
        options.mode = OSTree.RepoCheckoutMode.USER
        options.subpath = subpath
        try:
            self._repo.checkout_at(options, AT_FDCWD, str(dest), checksum, None)
        except GLib.Error as e:
            raise _fail(f"cannot check out {subpath} of {checksum}", e) from e

    def checkout_hardlinked(self, checksum: str, dest: Path) -> None:
        """Check out `checksum` at `dest` (which must not exist) sharing the repository's
        objects.

        A bare repository's objects are hard-linked as they are (mode NONE keeps owners and
        xattrs); a bare-user one's in USER mode. Either way no file is copied
        (`no_copy_fallback`: a repository on another filesystem is an error, not a silent
        copy), so the files of `dest` ARE the repository's objects: never write into them. An
        archive repository has no files to link and is checked out by copying.
        """
        mode = self._repo.get_mode()
        options = OSTree.RepoCheckoutAtOptions()
        bare = mode == OSTree.RepoMode.BARE
        options.mode = OSTree.RepoCheckoutMode.NONE if bare else OSTree.RepoCheckoutMode.USER
        options.no_copy_fallback = mode != OSTree.RepoMode.ARCHIVE
        try:
            self._repo.checkout_at(options, AT_FDCWD, str(dest), checksum, None)
        except GLib.Error as e:
            raise _fail(f"cannot check out {checksum} at {dest}", e) from e

    def diff_commits(self, old: str, new: str, subpath: str = "usr") -> TreeDiff:
        """What changes from commit `old` to `new` below `subpath`, read from the repository
        (folders whose content checksums agree are not entered, as `ostree diff`)."""
        diff: tuple[list[str], list[str], list[str]] = ([], [], [])
        try:
            _, a, _ = self._repo.read_commit(old, None)
            _, b, _ = self._repo.read_commit(new, None)
            diff_folders(a.get_child(subpath), b.get_child(subpath), subpath, diff)
        except GLib.Error as e:
            raise _fail(f"cannot compare {old[:12]} with {new[:12]}", e) from e
        return TreeDiff(*(tuple(d) for d in diff))

    # ---- static deltas and summary ----

    def generate_static_delta(self, from_checksum: str | None, to_checksum: str) -> None:
        """Write the static delta from `from_checksum` (None: "from scratch") to `to_checksum`.

        MAJOR deltas are the ones meant for serving (ostree static-delta generate's default);
        the defaults of the parameters (bsdiff on, objects over 4 MB left to a plain fetch)
        are kept.
        """
        params = GLib.Variant("a{sv}", {})
        try:
            self._repo.static_delta_generate(
                OSTree.StaticDeltaGenerateOpt.MAJOR, from_checksum, to_checksum, None, params, None
            )
        except GLib.Error as e:
            what = f"{_short(from_checksum)} -> {_short(to_checksum)}"
            raise _fail(f"cannot generate the static delta {what}", e) from e

    def static_delta_size(self, from_checksum: str | None, to_checksum: str) -> int:
        """Bytes a client downloads for this delta (its superblock and parts); 0 when absent."""
        folder = self.path / "deltas" / _delta_dir(from_checksum, to_checksum)
        if not folder.is_dir():
            return 0
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

    def regenerate_summary(self) -> None:
        """Rewrite the repository's `summary` (refs, and the index of static deltas) for
        clients of a plain HTTP server. libostree drops the old `summary.sig`: sign again
        afterwards."""
        try:
            self._repo.regenerate_summary(None, None)
        except GLib.Error as e:
            raise _fail("cannot regenerate the summary", e) from e

    def gpg_sign_summary(self, key_id: str, homedir: Path | None) -> None:
        """Add a GPG signature of the current summary to `summary.sig`."""
        try:
            self._repo.add_gpg_signature_summary([key_id], str(homedir) if homedir else None, None)
        except GLib.Error as e:
            raise _fail(f"cannot GPG-sign the summary with key {key_id}", e) from e

    def ed25519_sign_summary(self, secret_key_file: Path) -> None:
        """Add an ed25519 signature of the current summary to `summary.sig`."""
        signer = _ed25519(f"cannot sign the summary with {secret_key_file}")
        secret = _ed25519_secret(secret_key_file)
        try:
            # ostree_sign_summary takes the secret keys as an "av" of engine-specific keys
            keys_variant = GLib.Variant("av", [GLib.Variant("s", secret)])
            signer.summary(self._repo, keys_variant, None)
        except GLib.Error as e:
            raise _fail(f"cannot sign the summary with {secret_key_file}", e) from e


# ---- sysroots and deployments ----


@dataclass(frozen=True)
class Deployment:
    """One deployment of a sysroot, as plain data (its GI object stays in `Sysroot`)."""

    osname: str
    checksum: str
    serial: int
    index: int
    booted: bool
    staged: bool
    pinned: bool
    unlocked: str
    origin: str  # the .origin keyfile's text
    kargs: tuple[str, ...]  # without libostree's own ostree= argument
    path: Path

    @property
    def id(self) -> str:
        return f"{self.osname}-{self.checksum}.{self.serial}"


# live changes of a booted system (usroverlay, apply-live: apt_ostree/system/live.py)
_UNLOCKED = {
    "development": OSTree.DeploymentUnlockedState.DEVELOPMENT,
    "hotfix": OSTree.DeploymentUnlockedState.HOTFIX,
    "transient": OSTree.DeploymentUnlockedState.TRANSIENT,
}
UNLOCK_STATES = tuple(_UNLOCKED)  # the names `Sysroot.unlock` takes


def _keyfile(text: str) -> GLib.KeyFile:
    kf = GLib.KeyFile()
    try:
        kf.load_from_data(text, len(text.encode()), GLib.KeyFileFlags.KEEP_COMMENTS)
    except GLib.Error as e:
        raise _fail("malformed origin", e) from e
    return kf


GRUB2_EXEC_ENV = "OSTREE_GRUB2_EXEC"
INSTALLED_GRUB_GENERATOR = Path("/usr/lib/apt-ostree/grub-generator")


def grub_generator() -> Path:
    """apt-ostree's GRUB config generator: the installed one, else this checkout's module
    (a program with Debian's Python and the standard library only)."""
    if INSTALLED_GRUB_GENERATOR.is_file():
        return INSTALLED_GRUB_GENERATOR
    from apt_ostree.boot import grubcfg

    return Path(grubcfg.__file__)


class Sysroot:
    """A loaded OSTree sysroot (a folder, or / on a machine booted from OSTree)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sysroot = OSTree.Sysroot.new(Gio.File.new_for_path(str(path)))
        self._repo: Repo | None = None
        # libostree's grub2 backend (a sysroot configured `sysroot.bootloader=grub2`) runs
        # this program at every deployment write; apt-ostreed's unit and
        # ostree-finalize-staged's drop-in set it too (docs/boot.md)
        os.environ.setdefault(GRUB2_EXEC_ENV, str(grub_generator()))
        self.load()

    def load(self) -> None:
        self._repo = None
        try:
            self._sysroot.load(None)
        except GLib.Error as e:
            raise _fail(f"{self.path} is not an OSTree sysroot", e) from e

    @staticmethod
    def initialize(path: Path, osname: str) -> Sysroot:
        """Create the sysroot layout in the folder `path` (made if absent) and a stateroot."""
        path.mkdir(parents=True, exist_ok=True)
        sysroot = OSTree.Sysroot.new(Gio.File.new_for_path(str(path)))
        try:
            sysroot.ensure_initialized(None)
            sysroot.load(None)
            if not (path / "ostree" / "deploy" / osname).is_dir():
                sysroot.init_osname(osname, None)
        except GLib.Error as e:
            raise _fail(f"cannot initialize a sysroot in {path}", e) from e
        return Sysroot(path)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold libostree's sysroot lock; fail at once when another process holds it."""
        try:
            _, acquired = self._sysroot.try_lock()
        except GLib.Error as e:
            raise _fail(f"cannot lock the sysroot {self.path}", e) from e
        if not acquired:
            raise RepoError(f"the sysroot {self.path} is locked by another process")
        try:
            self.load()
            yield
        finally:
            self._sysroot.unlock()

    @property
    def repo(self) -> Repo:
        """The sysroot's repository (`ostree/repo`), kept until the next `load()`: libostree's
        ostree_sysroot_get_repo returns a reference to the sysroot's own open repository, not
        a new one, so keeping the wrapper keeps nothing a fresh call would not give."""
        if self._repo is None:
            try:
                _, repo = self._sysroot.get_repo(None)
            except GLib.Error as e:
                raise _fail(f"cannot open the repository of {self.path}", e) from e
            self._repo = Repo(repo)
        return self._repo

    def is_booted(self) -> bool:
        return self._sysroot.get_booted_deployment() is not None

    def _info(self, d: Any, booted: Any) -> Deployment:
        origin = d.get_origin()
        bootconfig = d.get_bootconfig()
        options = (bootconfig.get("options") if bootconfig else None) or ""
        return Deployment(
            osname=d.get_osname(),
            checksum=d.get_csum(),
            serial=d.get_deployserial(),
            index=d.get_index(),
            booted=booted is not None and d.equal(booted),
            staged=d.is_staged(),
            pinned=d.is_pinned(),
            unlocked=OSTree.Deployment.unlocked_state_to_string(d.get_unlocked()),
            origin=origin.to_data()[0] if origin is not None else "",
            kargs=tuple(a for a in options.split() if not a.startswith("ostree=")),
            path=self.path / self._sysroot.get_deployment_dirpath(d),
        )

    def deployments(self) -> list[Deployment]:
        booted = self._sysroot.get_booted_deployment()
        return [self._info(d, booted) for d in self._sysroot.get_deployments()]

    def _find(self, deployment: Deployment) -> Any:
        for d in self._sysroot.get_deployments():
            found = (d.get_osname(), d.get_csum(), d.get_deployserial())
            if found == (deployment.osname, deployment.checksum, deployment.serial):
                return d
        raise RepoError(f"deployment {deployment.id} is gone")

    def deploy(
        self,
        osname: str,
        checksum: str,
        origin: str,
        *,
        merge: Deployment | None,
        kargs: Sequence[str] | None,
        stage: bool,
        clean: bool = True,
        write: bool = True,
    ) -> Path | None:
        """Deploy `checksum` as the new default of `osname`, keeping the merge deployment;
        return the new deployment's root (None when staged: written at shutdown).

        On a booted system the deployment is staged (libostree writes it at shutdown, with
        /etc merged then); in a folder sysroot it is written at once, and unless `clean` is
        false the trees of the deployments it drops are removed and the repository pruned
        (`cleanup()`: that costs what the image weighs, so a caller may do it later).
        With `write` false (and not `stage`) the deployment's folder is made, /etc merged, but
        it is not written into the boot list: the tree as it would boot, for a check, which
        `cleanup()` removes.
        """
        merge_gi = self._find(merge) if merge is not None else None
        argv = list(kargs) if kargs is not None else None
        try:
            if stage:
                self._sysroot.stage_tree(osname, checksum, _keyfile(origin), merge_gi, argv, None)
                return None
            _, new = self._sysroot.deploy_tree(
                osname, checksum, _keyfile(origin), merge_gi, argv, None
            )
            if write:
                flags = OSTree.SysrootSimpleWriteDeploymentFlags
                self._sysroot.simple_write_deployment(
                    osname, new, merge_gi, flags.NONE if clean else flags.NO_CLEAN, None
                )
            return self.path / str(self._sysroot.get_deployment_dirpath(new))
        except GLib.Error as e:
            raise _fail(f"cannot deploy {checksum}", e) from e
        finally:
            self.load()

    def write_order(self, deployments: Sequence[Deployment]) -> None:
        """Make the deployment list exactly `deployments` (reorder or drop; the first boots)."""
        new = [self._find(d) for d in deployments]
        try:
            self._sysroot.write_deployments(new, None)
        except GLib.Error as e:
            raise _fail("cannot write the deployment list", e) from e
        finally:
            self.load()

    def unlock(self, deployment: Deployment, state: str) -> None:
        """libostree's unlock of a deployment (`ostree admin unlock`; not the sysroot lock of
        `locked()`): an overlayfs on /usr of the booted deployment, mounted in the calling
        process's mount namespace (libostree 2022.7 mounts from a forked child, no setns).

        development: writable, its upper layer in /var/tmp, gone at reboot; transient: the
        same but mounted read-only (only a private remount writes); hotfix: persistent, and
        libostree first clones the deployment as a rollback target."""
        gi_deployment = self._find(deployment)
        try:
            self._sysroot.deployment_unlock(gi_deployment, _UNLOCKED[state], None)
        except GLib.Error as e:
            raise _fail(f"cannot unlock {deployment.id}", e) from e
        finally:
            self.load()

    def cleanup(self) -> None:
        """Remove undeployed trees and prune repository objects no ref or deployment uses."""
        try:
            self._sysroot.cleanup(None)
        except GLib.Error as e:
            raise _fail(f"cannot clean up {self.path}", e) from e


def remove_sysroot(path: Path) -> None:
    """Remove a folder sysroot, whose deployment roots libostree made immutable (chattr +i,
    so that nothing writes into a deployed tree by accident)."""
    deploys = list(path.glob("ostree/deploy/*/deploy/*"))
    if deploys:
        run(["chattr", "-i", *map(str, deploys)], check=False)
    shutil.rmtree(path, ignore_errors=True)
