"""Treefiles: the YAML (or JSON) description of a composed image.

Keys follow rpm-ostree's treefile where one exists (see docs/treefile.md). Loading a
treefile resolves `include` (the including file's scalars override, lists concatenate,
mappings merge), substitutes `${name}` variables, checks every key and type, and produces a
frozen `Treefile` plus its flattened form (what goes into the commit's metadata).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from apt_ostree import debconf, keys
from apt_ostree.aptpkg.host import native_architecture
from apt_ostree.aptpkg.resolve import Variant
from apt_ostree.aptpkg.sources import RepoEntry
from apt_ostree.errors import TreefileError
from apt_ostree.treefile_syntax import parse

MetadataValue = str | int | float | bool


@dataclass(frozen=True)
class AddFile:
    source: Path
    dest: str


class CheckType(StrEnum):
    NONE = "none"
    PREVIOUS = "previous"  # the previous commit of the ref
    FILE = "file"
    DATA = "data"


@dataclass(frozen=True)
class AccountCheck:
    """`check-passwd` or `check-groups`: the IDs a new tree must keep (rpm-ostree's shape)."""

    type: CheckType = CheckType.PREVIOUS
    filename: Path | None = None  # FILE: a passwd or group file
    entries: Mapping[str, tuple[int, ...]] = field(default_factory=dict, hash=False)  # DATA


@dataclass(frozen=True)
class Treefile:
    path: Path
    ref: str
    suite: str | None = None
    repos: tuple[RepoEntry, ...] | None = None
    packages: tuple[str, ...] = ()
    exclude_packages: tuple[str, ...] = ()
    recommends: bool = False
    variant: Variant = Variant.MINBASE
    automatic_version_prefix: str | None = None
    units: tuple[str, ...] = ()
    default_target: str | None = None
    add_files: tuple[AddFile, ...] = ()
    remove_files: tuple[str, ...] = ()
    postprocess: tuple[str, ...] = ()  # script texts; postprocess-script comes first
    initramfs_args: tuple[str, ...] = ()
    machineid_compat: bool = True
    automatic_updates: str | None = None  # apt-ostreed's AutomaticUpdatePolicy in the image
    add_commit_metadata: tuple[tuple[str, MetadataValue], ...] = ()
    mutate_os_release: str | None = None  # the base version in os-release's VERSION
    documentation: bool = True  # False: dpkg leaves out /usr/share/{doc,man,info}
    install_langs: tuple[str, ...] | None = None  # None: every translation
    preserve_passwd: bool = True
    check_passwd: AccountCheck = field(default_factory=AccountCheck)
    check_groups: AccountCheck = field(default_factory=AccountCheck)
    etc_group_members: tuple[str, ...] | None = None  # None: the key is absent
    debconf: tuple[str, ...] = ()  # debconf-set-selections lines: debconf-file's, then debconf's
    flattened: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def flattened_json(self) -> str:
        return json.dumps(self.flattened, sort_keys=True, separators=(",", ":"))

    def external_files_digest(self) -> dict[str, str]:
        """sha256 of every file the treefile names, keyed by its destination."""
        return {a.dest: _sha256_file(a.source) for a in self.add_files}

    def account_checks(self) -> dict[str, AccountCheck]:
        """The check of each account database (`passwd`, `group`)."""
        return {"passwd": self.check_passwd, "group": self.check_groups}


# key -> (python type(s) of the raw value, human description)
_SCALARS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "ref": (str, "a string"),
    "suite": (str, "a string"),
    "recommends": (bool, "true or false"),
    "variant": (str, "a string"),
    "automatic-version-prefix": ((str, int, float), "a string"),
    "default-target": (str, "a string"),
    "postprocess-script": (str, "a path"),
    "machineid-compat": (bool, "true or false"),
    "automatic-updates": (str, "none, check or stage"),
    "mutate-os-release": ((str, int), "a string"),
    "documentation": (bool, "true or false"),
}
_STRING_LISTS = (
    "packages",
    "exclude-packages",
    "units",
    "remove-files",
    "postprocess",
    "initramfs-args",
    "install-langs",
)
_OTHER = ("repos", "add-files", "include", "variables", "add-commit-metadata")
# users, groups and debconf answers (docs/treefile.md, "Users and groups" and "debconf")
_SCALARS.update({"preserve-passwd": (bool, "true or false"), "debconf-file": (str, "a path")})
_ACCOUNT_LISTS = ("etc-group-members", "debconf")
_ACCOUNT_CHECKS = ("check-passwd", "check-groups")
KNOWN_KEYS = (
    frozenset(_SCALARS)
    | frozenset(_STRING_LISTS)
    | frozenset(_OTHER)
    | frozenset(_ACCOUNT_LISTS + _ACCOUNT_CHECKS)
)
_REPO_KEYS = frozenset({"uris", "suites", "components", "signed-by", "types"})
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_-]*)\}")
_REF_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
# `packages-ARCH`: Debian's release architectures (bookworm's and trixie's) and those of
# the Debian Ports project (https://www.debian.org/ports/)
ARCH_PACKAGES = "packages-"
DEBIAN_ARCHITECTURES = frozenset(
    "amd64 arm64 armel armhf i386 mips64el mipsel ppc64el riscv64 s390x "
    "alpha hppa hurd-amd64 hurd-i386 ia64 loong64 m68k powerpc ppc64 sh4 sparc64 x32".split()
)
# a language as /usr/share/locale names it: de, pt_BR, es_419, sr@latin
_LANG_RE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2}|_[0-9]{3})?(@[a-z]+)?$")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parse_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise TreefileError(f"cannot read treefile {path}: {e.strerror}") from e
    data = parse(path, text)
    if not isinstance(data, dict):
        raise TreefileError(f"{path}: expected a mapping of keys at the top level")
    return data


def _check_types(path: Path, data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if _is_arch_packages(path, key):
            _check_string_list(path, key, value)
        elif key not in KNOWN_KEYS:
            raise TreefileError(f"{path}: unknown key '{key}'")
        elif key in _SCALARS:
            types, what = _SCALARS[key]
            if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
                raise TreefileError(
                    f"{path}: key '{key}': expected {what}, " f"got {type(value).__name__}"
                )
        elif key in _STRING_LISTS:
            _check_string_list(path, key, value)
    _check_other_types(path, data)


def _check_string_list(path: Path, key: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TreefileError(f"{path}: key '{key}': expected a list of strings")


def _check_other_types(path: Path, data: Mapping[str, Any]) -> None:
    include = data.get("include", [])
    if not isinstance(include, str | list) or (
        isinstance(include, list) and not all(isinstance(i, str) for i in include)
    ):
        raise TreefileError(f"{path}: key 'include': expected a path or a list of paths")
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in variables.values()
    ):
        raise TreefileError(f"{path}: key 'variables': expected a mapping of names to strings")
    add_files = data.get("add-files", [])
    if not isinstance(add_files, list) or not all(
        isinstance(a, list) and len(a) == 2 and all(isinstance(s, str) for s in a)
        for a in add_files
    ):
        raise TreefileError(f"{path}: key 'add-files': expected a list of [source, destination]")
    repos = data.get("repos", [])
    if not isinstance(repos, list) or not all(isinstance(r, dict) for r in repos):
        raise TreefileError(f"{path}: key 'repos': expected a list of deb822-style mappings")
    _check_commit_metadata(path, data.get("add-commit-metadata", {}))
    _check_account_types(path, data)


def _is_arch_packages(path: Path, key: Any) -> bool:
    """Whether `key` is `packages-ARCH` (rpm-ostree's `packages-$basearch`)."""
    if not isinstance(key, str) or not key.startswith(ARCH_PACKAGES):
        return False
    arch = key.removeprefix(ARCH_PACKAGES)
    if arch not in DEBIAN_ARCHITECTURES:
        raise TreefileError(f"{path}: key '{key}': '{arch}' is not a Debian architecture")
    return True


def _check_commit_metadata(path: Path, metadata: Any) -> None:
    what = "key 'add-commit-metadata'"
    if not isinstance(metadata, dict):
        raise TreefileError(f"{path}: {what}: expected a mapping of names to values")
    for name, value in metadata.items():
        if not isinstance(name, str) or not name:
            raise TreefileError(f"{path}: {what}: the name {name!r} is not a string")
        if name.startswith("aptostree."):
            raise TreefileError(f"{path}: {what}: '{name}' is apt-ostree's own, not settable")
        if not isinstance(value, MetadataValue):
            raise TreefileError(
                f"{path}: {what}: '{name}': expected a string, number or true/false, "
                f"got {type(value).__name__}"
            )
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise TreefileError(f"{path}: {what}: '{name}': {value} does not fit in 64 bits")
        if keys.METADATA_TYPES.get(name) == "s" and not isinstance(value, str):
            raise TreefileError(f"{path}: {what}: '{name}': expected a string (quote it)")


def _check_account_types(path: Path, data: Mapping[str, Any]) -> None:
    for key in _ACCOUNT_LISTS:
        if key in data:
            _check_string_list(path, key, data[key])
    for line in data.get("debconf", []):
        if "\n" in line or not line.strip() or line.lstrip().startswith("#"):
            wrong: str | None = f"{line!r} is not one 'OWNER QUESTION TYPE VALUE' line"
        else:
            wrong = debconf.problem(line)
        if wrong is not None:
            raise TreefileError(f"{path}: key 'debconf': {wrong}")
    for name in data.get("etc-group-members", []):
        if not name or any(c.isspace() or c in ":," for c in name):
            raise TreefileError(f"{path}: key 'etc-group-members': '{name}' is not a group name")
    for key in _ACCOUNT_CHECKS:
        _check_account_check(path, key, data.get(key, {"type": "previous"}))


def _check_account_check(path: Path, key: str, value: Any) -> None:
    types = ", ".join(t.value for t in CheckType)
    if not isinstance(value, dict) or value.get("type") not in list(CheckType):
        raise TreefileError(f"{path}: key '{key}': expected a mapping with 'type': {types}")
    allowed = {"type", {"file": "filename", "data": "entries"}.get(value["type"], "type")}
    if unknown := sorted(set(value) - allowed):
        raise TreefileError(f"{path}: key '{key}': unknown field '{unknown[0]}'")
    if value["type"] == "file" and not isinstance(value.get("filename"), str):
        raise TreefileError(f"{path}: key '{key}': type file needs 'filename', a path")
    entries = value.get("entries", {})
    users = key == "check-passwd"
    if value["type"] == "data" and (
        not isinstance(entries, dict)
        or not entries
        or not all(_is_ids(v, pair=users) for v in entries.values())
    ):
        what = "a UID or [UID, GID]" if users else "a GID"
        raise TreefileError(
            f"{path}: key '{key}': type data needs 'entries', a mapping of names to {what}"
        )


def _is_ids(value: Any, *, pair: bool) -> bool:
    """An ID, or with `pair` also [UID, GID] (rpm-ostree's `entries`)."""
    ids = value if pair and isinstance(value, list) and 1 <= len(value) <= 2 else [value]
    return all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` is the including file: its scalars win, lists concatenate, mappings merge."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + value
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _absolutize(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Make the file paths a treefile names relative to that treefile's folder."""
    out = dict(data)
    base = path.parent
    if "postprocess-script" in out:
        out["postprocess-script"] = str(base / out["postprocess-script"])
    if "add-files" in out:
        out["add-files"] = [[str(base / src), dest] for src, dest in out["add-files"]]
    if "debconf-file" in out:
        out["debconf-file"] = str(base / out["debconf-file"])
    for key in _ACCOUNT_CHECKS:
        if "filename" in out.get(key, {}):
            out[key] = {**out[key], "filename": str(base / out[key]["filename"])}
    return out


def _load_merged(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise TreefileError(f"{path}: include cycle: {chain}")
    data = _parse_file(path)
    _check_types(path, data)
    includes = data.pop("include", [])
    merged: dict[str, Any] = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        merged = _merge(merged, _load_merged(path.parent / inc, (*seen, path)))
    return _merge(merged, _absolutize(path, data))


def _substitute(path: Path, value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in variables:
                raise TreefileError(f"{path}: unknown variable '${{{m.group(1)}}}'")
            return variables[m.group(1)]

        return _VAR_RE.sub(repl, value)
    if isinstance(value, list):
        return [_substitute(path, v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(path, v, variables) for k, v in value.items()}
    return value


def _as_tuple(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TreefileError(f"{path}: key 'repos' entry '{key}': expected a string or list of strings")


def _repo_entry(path: Path, raw: Mapping[str, Any]) -> RepoEntry:
    for key in raw:
        if key not in _REPO_KEYS:
            raise TreefileError(f"{path}: key 'repos': unknown field '{key}'")
    for key in ("uris", "suites", "components"):
        if key not in raw:
            raise TreefileError(f"{path}: key 'repos': an entry has no '{key}'")
    if raw.get("types", "deb") not in ("deb", ["deb"]):
        raise TreefileError(f"{path}: key 'repos': only 'types: deb' is supported")
    signed_by = raw.get("signed-by")
    if signed_by is not None and not isinstance(signed_by, str):
        raise TreefileError(f"{path}: key 'repos': 'signed-by' must be a path or a key block")
    if signed_by and not signed_by.lstrip().startswith("-----") and not Path(signed_by).exists():
        raise TreefileError(f"{path}: key 'repos': signed-by keyring {signed_by} does not exist")
    return RepoEntry(
        uris=_as_tuple(path, "uris", raw["uris"]),
        suites=_as_tuple(path, "suites", raw["suites"]),
        components=_as_tuple(path, "components", raw["components"]),
        signed_by=signed_by,
    )


def _variant(path: Path, value: str) -> Variant:
    try:
        return Variant(value)
    except ValueError:
        names = ", ".join(v.value for v in Variant)
        raise TreefileError(f"{path}: key 'variant': '{value}' is not one of {names}") from None


def _read_script(path: Path, script: str) -> str:
    try:
        return Path(script).read_text()
    except OSError as e:
        raise TreefileError(
            f"{path}: key 'postprocess-script': cannot read {script}: " f"{e.strerror}"
        ) from e


def _inline_debconf(path: Path, data: dict[str, Any]) -> None:
    """debconf-file's answers, checked, go first into 'debconf' (as postprocess-script)."""
    if "debconf-file" not in data:
        return
    name = data.pop("debconf-file")
    try:
        lines = debconf.answers(Path(name).read_text())
    except OSError as e:
        raise TreefileError(f"{path}: key 'debconf-file': cannot read {name}: {e.strerror}") from e
    except ValueError as e:
        raise TreefileError(f"{path}: key 'debconf-file': {name} {e}") from e
    data["debconf"] = lines + list(data.get("debconf", []))


def _account_check(path: Path, key: str, value: Mapping[str, Any]) -> AccountCheck:
    kind = CheckType(value["type"])
    if kind is CheckType.FILE:
        filename = Path(value["filename"])
        if not filename.is_file():
            raise TreefileError(f"{path}: key '{key}': {filename} is not a file")
        return AccountCheck(kind, filename=filename)
    if kind is CheckType.DATA:
        entries = value["entries"].items()
        return AccountCheck(
            kind, entries={n: tuple(v if isinstance(v, list) else [v]) for n, v in entries}
        )
    return AccountCheck(kind)


def _account_checks(
    path: Path, data: Mapping[str, Any], flattened: dict[str, Any]
) -> dict[str, AccountCheck]:
    """check-passwd and check-groups; the flattened form carries a file's content digest."""
    checks = {}
    for key in _ACCOUNT_CHECKS:
        checks[key] = check = _account_check(path, key, data.get(key, {"type": "previous"}))
        if check.filename is not None:
            flattened[key] = {"type": "file", "filename": _sha256_file(check.filename)}
    return checks


def _check_values(path: Path, data: Mapping[str, Any]) -> None:
    if "ref" not in data:
        raise TreefileError(f"{path}: missing required key 'ref'")
    if not _REF_RE.match(data["ref"]):
        raise TreefileError(f"{path}: key 'ref': '{data['ref']}' is not a valid OSTree ref")
    for src, dest in data.get("add-files", []):
        if not Path(src).is_file():
            raise TreefileError(f"{path}: key 'add-files': {src} is not a file")
        if not dest.startswith("/"):
            raise TreefileError(f"{path}: key 'add-files': destination {dest} is not absolute")


def builtin_variables() -> dict[str, str]:
    """Variables every treefile may use without defining them."""
    return {"basearch": native_architecture()}


def load(path: Path | str) -> Treefile:
    """Load, merge, substitute and check a treefile; raise TreefileError naming the problem."""
    path = Path(path)
    data = _load_merged(path, ())
    variables = {**builtin_variables(), **{k: str(v) for k, v in data.pop("variables", {}).items()}}
    data = _native_packages(_substitute(path, data, variables))
    _check_values(path, data)
    scripts = list(data.get("postprocess", []))
    if "postprocess-script" in data:
        scripts.insert(0, _read_script(path, data.pop("postprocess-script")))
        data["postprocess"] = scripts
    _inline_debconf(path, data)
    add_files = tuple(AddFile(Path(s), d) for s, d in data.get("add-files", []))
    flattened = dict(data)
    if add_files:
        # Host paths vary between machines; the content is what matters (reproducibility).
        flattened["add-files"] = [[_sha256_file(a.source), a.dest] for a in add_files]
    checks = _account_checks(path, data, flattened)
    group_members = data.get("etc-group-members")
    repos = data.get("repos")
    return Treefile(
        path=path,
        ref=data["ref"],
        suite=data.get("suite"),
        repos=None if repos is None else tuple(_repo_entry(path, r) for r in repos),
        packages=tuple(data.get("packages", [])),
        exclude_packages=tuple(data.get("exclude-packages", [])),
        recommends=data.get("recommends", False),
        variant=_variant(path, data.get("variant", Variant.MINBASE.value)),
        automatic_version_prefix=(
            None
            if "automatic-version-prefix" not in data
            else str(data["automatic-version-prefix"])
        ),
        units=tuple(data.get("units", [])),
        default_target=data.get("default-target"),
        add_files=add_files,
        remove_files=tuple(data.get("remove-files", [])),
        postprocess=tuple(scripts),
        initramfs_args=tuple(data.get("initramfs-args", [])),
        machineid_compat=data.get("machineid-compat", True),
        automatic_updates=_automatic_updates(path, data.get("automatic-updates")),
        add_commit_metadata=tuple(sorted(data.get("add-commit-metadata", {}).items())),
        mutate_os_release=_optional_str(data.get("mutate-os-release")),
        documentation=data.get("documentation", True),
        install_langs=_install_langs(path, data.get("install-langs")),
        preserve_passwd=data.get("preserve-passwd", True),
        check_passwd=checks["check-passwd"],
        check_groups=checks["check-groups"],
        etc_group_members=None if group_members is None else tuple(group_members),
        debconf=tuple(data.get("debconf", [])),
        flattened=flattened,
    )


def _native_packages(data: Mapping[str, Any]) -> dict[str, Any]:
    """`packages-ARCH` of the native architecture appended to `packages`; the other
    architectures' lists dropped (so they are not in the flattened form, nor its hash)."""
    native = data.get(ARCH_PACKAGES + native_architecture(), [])
    out = {k: v for k, v in data.items() if not k.startswith(ARCH_PACKAGES)}
    if native:
        out["packages"] = [*out.get("packages", []), *native]
    return out


def _optional_str(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _install_langs(path: Path, value: list[str] | None) -> tuple[str, ...] | None:
    for name in value or ():
        if not _LANG_RE.match(name):
            raise TreefileError(
                f"{path}: key 'install-langs': '{name}' is not a language name such as "
                "en, de or pt_BR"
            )
    return None if value is None else tuple(value)


def _automatic_updates(path: Path, value: str | None) -> str | None:
    if value is not None and value not in ("none", "check", "stage"):
        raise TreefileError(f"{path}: key 'automatic-updates': expected none, check or stage")
    return value
