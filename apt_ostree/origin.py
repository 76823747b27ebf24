"""A deployment's origin: what the user asked for, never the result (DESIGN.md "The origin").

The `.origin` file is libostree's GKeyFile. It is read and written here as text so that the
model stays plain Python; `ostree.Sysroot.deploy` hands the text to libostree. List values
use GKeyFile's `a;b;` form.

A deployment whose commit is built on the base (layered packages, overrides, a regenerated
initramfs) records its ref as `[origin] baserefspec`, as rpm-ostree does, not `refspec`:
libostree takes `refspec` to name the deployed commit itself, and `ostree admin status` then
checks that commit's signature against the remote's keys (a client-built commit has none) and
fails. Both are read.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field, replace

from apt_ostree.container.imageref import ImageReference
from apt_ostree.errors import StateError, UsageError

CHECKSUM_RE = re.compile(r"^[0-9a-f]{64}$")
IMAGE_KEY = "container-image-reference"

# (group, key) of every list the origin holds, with the Origin field it maps to.
_LISTS = {
    "requested_packages": ("packages", "requested"),
    "requested_local_packages": ("packages", "requested-local"),
    "override_remove": ("overrides", "remove"),
    "override_replace": ("overrides", "replace"),
    "override_replace_local": ("overrides", "replace-local"),
    "initramfs_args": ("aptostree", "initramfs-args"),
}


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(";") if v)


@dataclass(frozen=True)
class Refspec:
    remote: str | None
    ref: str

    @staticmethod
    def parse(text: str) -> Refspec:
        remote, sep, ref = text.rpartition(":")
        if not ref or (sep and not remote):
            raise UsageError(f"malformed refspec {text!r}: expected REMOTE:REF")
        return Refspec(remote or None, ref)

    def __str__(self) -> str:
        return f"{self.remote}:{self.ref}" if self.remote else self.ref


@dataclass(frozen=True)
class Origin:
    refspec: Refspec | ImageReference  # [origin] container-image-reference for images
    override_commit: str | None = None
    requested_packages: tuple[str, ...] = ()
    requested_local_packages: tuple[str, ...] = ()
    override_remove: tuple[str, ...] = ()
    override_replace: tuple[str, ...] = ()
    override_replace_local: tuple[str, ...] = ()
    regenerate_initramfs: bool = False
    initramfs_args: tuple[str, ...] = ()
    # groups and keys this version does not know, kept as they were
    extra: tuple[tuple[str, str, str], ...] = field(default=())

    def with_refspec(self, refspec: Refspec | ImageReference, *, pin: str | None = None) -> Origin:
        return replace(self, refspec=refspec, override_commit=pin)

    def with_pin(self, checksum: str | None) -> Origin:
        return replace(self, override_commit=checksum)

    @property
    def layered(self) -> bool:
        """Whether the deployed commit is built on the base (not the base itself)."""
        return bool(
            self.requested_packages
            or self.requested_local_packages
            or self.override_remove
            or self.override_replace
            or self.override_replace_local
            or self.regenerate_initramfs
        )

    @staticmethod
    def parse(text: str) -> Origin:
        parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text)
        except configparser.Error as e:
            raise StateError(f"malformed origin: {e}") from e
        key = "refspec" if parser.has_option("origin", "refspec") else "baserefspec"
        if parser.has_option("origin", IMAGE_KEY):
            key = IMAGE_KEY
        if not parser.has_option("origin", key):
            raise StateError("the origin has no [origin] refspec or container-image-reference")
        # `unlocked` (usroverlay --hotfix) is the state of one deployment, which libostree
        # leaves to its callers to drop from the origins of new ones
        # (ostree_deployment_origin_remove_transient_state)
        known = {("origin", "refspec"), ("origin", "baserefspec"), ("origin", "override-commit")}
        known |= {("origin", IMAGE_KEY)}
        known |= {("origin", "unlocked")}
        known |= {("aptostree", "regenerate-initramfs")} | set(_LISTS.values())
        lists = {
            name: _split_list(parser.get(group, key, fallback=""))
            for name, (group, key) in _LISTS.items()
        }
        extra = tuple(
            (group, key, value)
            for group in parser.sections()
            for key, value in parser.items(group)
            if (group, key) not in known
        )
        try:
            text = parser.get("origin", key)
            refspec: Refspec | ImageReference = (
                ImageReference.parse(text) if key == IMAGE_KEY else Refspec.parse(text)
            )
        except UsageError as e:
            raise StateError(f"malformed origin: {e}") from e
        return Origin(
            refspec=refspec,
            override_commit=parser.get("origin", "override-commit", fallback=None) or None,
            regenerate_initramfs=parser.getboolean(
                "aptostree", "regenerate-initramfs", fallback=False
            ),
            extra=extra,
            **lists,
        )

    def to_text(self) -> str:
        key = "baserefspec" if self.layered else "refspec"
        if isinstance(self.refspec, ImageReference):
            key = IMAGE_KEY  # rpm-ostree's, layered or not
        groups: dict[str, dict[str, str]] = {"origin": {key: str(self.refspec)}}
        if self.override_commit:
            groups["origin"]["override-commit"] = self.override_commit
        for name, (group, key) in _LISTS.items():
            values: tuple[str, ...] = getattr(self, name)
            if values:
                groups.setdefault(group, {})[key] = "".join(f"{v};" for v in values)
        if self.regenerate_initramfs:
            groups.setdefault("aptostree", {})["regenerate-initramfs"] = "true"
        for group, key, value in self.extra:
            groups.setdefault(group, {})[key] = value
        return "".join(
            f"[{group}]\n" + "".join(f"{k}={v}\n" for k, v in entries.items()) + "\n"
            for group, entries in groups.items()
        )
