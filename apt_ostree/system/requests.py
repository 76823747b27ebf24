"""The requests of the client verbs: one frozen type per verb, and the table of verbs.

A request type is the single definition of a verb's arguments. Each field says, in its
metadata (`option`, `positional`), how the command line spells it; its Python type says how
the bus types it (`Kind`). From that one definition:

- the CLI builds its argparse parser (`apt_ostree/cli/parser.py`) and the request it runs;
- the daemon publishes one method per request type on the OS interface, named `method`, with
  the positional fields as arguments and the options in the trailing `a{sv}` under the long
  flag's name (`"download-only": <true>`), and asks polkit for `polkit_action()`;
- `to_call`/`from_call` turn a request into those bus arguments and back, checking what comes
  from the bus (unknown options, wrong types) as argparse checks the command line.

Checks that concern the values together (`--cache-only` with `--download-only`) are in
`__post_init__`, so they hold whichever way a request was made.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from apt_ostree.errors import UsageError


class Kind(StrEnum):
    """The D-Bus type of a field."""

    BOOL = "b"
    STR = "s"  # "" on the bus is None in the request
    STRS = "as"
    INT = "i"  # absent from the options is None


@dataclass(frozen=True)
class Param:
    """How the command line spells one field: flags for an option, none for a positional."""

    flags: tuple[str, ...] = ()
    help: str = ""
    metavar: str | None = None
    nargs: str | None = None  # a positional list: "+" or "*"; an optional positional: "?"


PARAM = "apt_ostree.param"


def option(*flags: str, help: str, metavar: str | None = None, default: Any = False) -> Any:
    """A `--flag` (bool by default; `()` for a repeated flag, None for a value)."""
    if isinstance(default, list | tuple):
        return field(default=(), metadata={PARAM: Param(flags, help, metavar)})
    return field(default=default, metadata={PARAM: Param(flags, help, metavar)})


def positional(*, help: str = "", metavar: str | None = None, nargs: str | None = None) -> Any:
    """A positional argument; optional (`nargs="?"` or `"*"`) ones default to None or ()."""
    param = Param((), help, metavar, nargs)
    if nargs == "?":
        return field(default=None, metadata={PARAM: param})
    if nargs == "*":
        return field(default=(), metadata={PARAM: param})
    return field(metadata={PARAM: param})


@dataclass(frozen=True)
class Field:
    """One field of a request type, with its spelling and bus type."""

    name: str  # the attribute
    param: Param
    kind: Kind

    @property
    def positional(self) -> bool:
        return not self.param.flags

    @property
    def key(self) -> str:
        """Its name on the bus: the long flag without dashes, or the attribute's name."""
        long = [f for f in self.param.flags if f.startswith("--")]
        return long[0].removeprefix("--") if long else self.name.rstrip("_")


def _kind(hint: Any) -> Kind:
    if hint is bool:
        return Kind.BOOL
    args = set(typing.get_args(hint))
    if hint is str or args == {str, type(None)}:
        return Kind.STR
    if args == {int, type(None)}:
        return Kind.INT
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[0] is str:
        return Kind.STRS
    raise TypeError(f"no bus type for {hint!r}")


@dataclass(frozen=True, kw_only=True)
class Request:
    """A verb's request. `method` is its name on the bus; `action` the polkit action that a
    caller other than root needs ("" for read-only verbs, which everyone may call)."""

    method: ClassVar[str]
    action: ClassVar[str] = ""
    served: ClassVar[bool] = True  # False: only in-process (`init`)

    @property
    def mutating(self) -> bool:
        return bool(self.action)

    def polkit_action(self) -> str:
        return self.action

    @classmethod
    def title(cls) -> str:
        """The CLI's words for it (`override remove`): a transaction's title."""
        return next((" ".join(v.words) for v in VERBS if v.request is cls), cls.method)

    @classmethod
    def fields(cls) -> tuple[Field, ...]:
        hints = typing.get_type_hints(cls)
        return tuple(
            Field(f.name, f.metadata[PARAM], _kind(hints[f.name]))
            for f in dataclasses.fields(cls)
            if PARAM in f.metadata
        )


# ---- the image verbs ----

# -r: reboot into the new deployment when it was staged (a machine booted from OSTree)
_REBOOT = option("-r", "--reboot", help="reboot when staged")


@dataclass(frozen=True, kw_only=True)
class Init(Request):
    """Create a sysroot in a folder and deploy a remote's ref (in-process only)."""

    method: ClassVar[str] = "Init"
    served: ClassVar[bool] = False
    ref: str = positional(help="the ref to follow")
    remote: str = option("--remote", metavar="NAME=URL", help="the update remote", default="")
    gpg_import: str | None = option(
        "--gpg-import", metavar="KEYRING", help="verify with GPG keys", default=None
    )
    ed25519_key: str | None = option(
        "--ed25519-key", metavar="BASE64", help="verify with an ed25519 key", default=None
    )
    no_gpg_verify: bool = option("--no-gpg-verify", help="no signature checks")
    karg: tuple[str, ...] = option("--karg", metavar="KARG", help="a kernel argument", default=())

    def __post_init__(self) -> None:
        name, sep, url = self.remote.partition("=")
        if not sep or not name or not url:
            raise UsageError(f"--remote {self.remote}: expected NAME=URL")
        chosen = [self.gpg_import is not None, self.ed25519_key is not None, self.no_gpg_verify]
        if sum(chosen) != 1:
            raise UsageError("init: give one of --gpg-import, --ed25519-key, --no-gpg-verify")


@dataclass(frozen=True, kw_only=True)
class Status(Request):
    method: ClassVar[str] = "Status"


@dataclass(frozen=True, kw_only=True)
class Upgrade(Request):
    method: ClassVar[str] = "Upgrade"
    action: ClassVar[str] = "upgrade"
    check: bool = option("--check", help="only say whether an update exists")
    preview: bool = option("--preview", help="--check, with the package diff")
    download_only: bool = option("--download-only", help="pull, do not deploy")
    cache_only: bool = option("-C", "--cache-only", help="deploy what was downloaded")
    allow_downgrade: bool = option("--allow-downgrade", help="accept an older commit")
    verify: bool = option(
        "--verify", help="boot the new deployment in a container first; keep it only if the"
        " required health checks pass there",
    )  # fmt: skip
    reboot: bool = _REBOOT

    def __post_init__(self) -> None:
        if self.cache_only and self.download_only:
            raise UsageError("--cache-only and --download-only exclude each other")


@dataclass(frozen=True, kw_only=True)
class Deploy(Request):
    method: ClassVar[str] = "Deploy"
    action: ClassVar[str] = "deploy"
    revision: str = positional(metavar="VERSION|revision=CHECKSUM")
    preview: bool = option("--preview", help="only show the package changes")
    reboot: bool = _REBOOT


@dataclass(frozen=True, kw_only=True)
class Rebase(Request):
    method: ClassVar[str] = "Rebase"
    action: ClassVar[str] = "rebase"
    refspec: str = positional(metavar="REMOTE:REF[:CHECKSUM]")
    revision: str | None = positional(metavar="VERSION|revision=CHECKSUM", nargs="?")
    reboot: bool = _REBOOT


@dataclass(frozen=True, kw_only=True)
class Rollback(Request):
    method: ClassVar[str] = "Rollback"
    action: ClassVar[str] = "rollback"
    reboot: bool = _REBOOT


@dataclass(frozen=True, kw_only=True)
class Cleanup(Request):
    method: ClassVar[str] = "Cleanup"
    action: ClassVar[str] = "cleanup"
    pending: bool = option("-p", "--pending", help="the pending deployment")
    rollback: bool = option("-r", "--rollback", help="the rollback deployment")
    base: bool = option("-b", "--base", help="unreferenced objects")
    repomd: bool = option("-m", "--repomd", help="cached update metadata")

    def __post_init__(self) -> None:
        if not (self.pending or self.rollback or self.base or self.repomd):
            raise UsageError("cleanup: give at least one of -p, -r, -b, -m")


def _karg_option(name: str) -> Any:
    return option(f"--{name}", metavar="KARG", help=f"{name.replace('-', ' ')} KARG", default=())


@dataclass(frozen=True, kw_only=True)
class KernelArgs(Request):
    method: ClassVar[str] = "KernelArgs"
    action: ClassVar[str] = "bootconfig"
    append: tuple[str, ...] = _karg_option("append")
    delete: tuple[str, ...] = _karg_option("delete")
    replace: tuple[str, ...] = _karg_option("replace")
    append_if_missing: tuple[str, ...] = _karg_option("append-if-missing")
    delete_if_present: tuple[str, ...] = _karg_option("delete-if-present")
    deploy_index: int | None = option(
        "--deploy-index", metavar="N", help="start from deployment N", default=None
    )
    reboot: bool = option("--reboot", help="reboot when staged")


@dataclass(frozen=True, kw_only=True)
class FinalizeDeployment(Request):
    method: ClassVar[str] = "FinalizeDeployment"
    action: ClassVar[str] = "deploy"
    checksum: str | None = positional(nargs="?")


@dataclass(frozen=True, kw_only=True)
class BootCheck(Request):
    """apt-ostree-boot-check.service's run at every boot (docs/boot.md): in this process,
    like libostree's own finalization, before anyone could call the daemon."""

    method: ClassVar[str] = "BootCheck"
    action: ClassVar[str] = "deploy"
    served: ClassVar[bool] = False
    reboot: bool = option("--reboot", help="reboot into the previous deployment on failure")


# ---- package layering and overrides ----

LOCAL_PACKAGE_ACTION = "install-local-packages"


def is_deb_path(item: str) -> bool:
    """A local .deb (a path), not a package name."""
    return item.endswith(".deb") and ("/" in item or Path(item).is_file())


def absolute_debs(items: Sequence[str]) -> tuple[str, ...]:
    """Local .deb paths made absolute: they are the caller's, relative to its directory."""
    return tuple(str(Path(i).absolute()) if is_deb_path(i) else i for i in items)


_IDEMPOTENT = option("--idempotent", help="no error when already so")


@dataclass(frozen=True, kw_only=True)
class Install(Request):
    method: ClassVar[str] = "Install"
    action: ClassVar[str] = "install-uninstall-packages"
    packages: tuple[str, ...] = positional(metavar="PKG", nargs="+")
    idempotent: bool = _IDEMPOTENT
    allow_inactive: bool = option("--allow-inactive", help="allow packages the base has")
    apply_live: bool = option("-A", "--apply-live", help="also apply it to the running system")
    dry_run: bool = option("-n", "--dry-run", help="show what would change, change nothing")
    # rpm-ostree's: nothing here asks a question, so it changes nothing
    assumeyes: bool = option("-y", "--assumeyes", help="accepted; nothing asks for a yes")
    reboot: bool = _REBOOT

    def __post_init__(self) -> None:
        if self.apply_live and self.reboot:
            raise UsageError("install: --apply-live and --reboot exclude each other")
        if self.dry_run and (self.apply_live or self.reboot):
            raise UsageError("install: --dry-run changes nothing to apply or reboot into")

    def polkit_action(self) -> str:
        return LOCAL_PACKAGE_ACTION if any(map(is_deb_path, self.packages)) else self.action


@dataclass(frozen=True, kw_only=True)
class Uninstall(Request):
    method: ClassVar[str] = "Uninstall"
    action: ClassVar[str] = "install-uninstall-packages"
    packages: tuple[str, ...] = positional(metavar="PKG", nargs="*")
    all_: bool = option("--all", help="remove every layered package")
    idempotent: bool = _IDEMPOTENT
    reboot: bool = _REBOOT

    def __post_init__(self) -> None:
        if bool(self.packages) == self.all_:
            raise UsageError("uninstall: name packages or give --all (not both)")


@dataclass(frozen=True, kw_only=True)
class OverrideRemove(Request):
    method: ClassVar[str] = "OverrideRemove"
    action: ClassVar[str] = "override"
    packages: tuple[str, ...] = positional(metavar="PKG", nargs="+")
    reboot: bool = _REBOOT


@dataclass(frozen=True, kw_only=True)
class OverrideReplace(Request):
    method: ClassVar[str] = "OverrideReplace"
    action: ClassVar[str] = "override"
    packages: tuple[str, ...] = positional(metavar="PKG", nargs="+")
    reboot: bool = _REBOOT

    def polkit_action(self) -> str:
        return LOCAL_PACKAGE_ACTION if any(map(is_deb_path, self.packages)) else self.action


@dataclass(frozen=True, kw_only=True)
class OverrideReset(Request):
    method: ClassVar[str] = "OverrideReset"
    action: ClassVar[str] = "override"
    packages: tuple[str, ...] = positional(metavar="PKG", nargs="*")
    all_: bool = option("--all", help="drop every override")
    reboot: bool = _REBOOT

    def __post_init__(self) -> None:
        if not self.packages and not self.all_:
            raise UsageError("override reset: name packages or give --all")


@dataclass(frozen=True, kw_only=True)
class Reset(Request):
    method: ClassVar[str] = "Reset"
    action: ClassVar[str] = "install-uninstall-packages"
    overlays: bool = option("-l", "--overlays", help="only layered packages")
    overrides: bool = option("-o", "--overrides", help="only overrides")
    reboot: bool = _REBOOT


@dataclass(frozen=True, kw_only=True)
class RefreshMd(Request):
    method: ClassVar[str] = "RefreshMd"
    action: ClassVar[str] = "repo-refresh"
    # refresh-md always fetches the lists (that is what it is for): -f is rpm-ostree's spelling
    force: bool = option("-f", "--force", help="fetch even lists that are fresh")


@dataclass(frozen=True, kw_only=True)
class Initramfs(Request):
    method: ClassVar[str] = "Initramfs"
    action: ClassVar[str] = "bootconfig"
    enable: bool = option("--enable", help="regenerate it on every deploy")
    disable: bool = option("--disable", help="use the image's again")
    arg: tuple[str, ...] = option("--arg", metavar="ARG", help="a dracut argument", default=())
    reboot: bool = _REBOOT

    def __post_init__(self) -> None:
        if self.enable and self.disable:
            raise UsageError("initramfs: --enable and --disable exclude each other")
        if self.arg and not self.enable:
            raise UsageError("initramfs: --arg needs --enable")


@dataclass(frozen=True, kw_only=True)
class Search(Request):
    method: ClassVar[str] = "Search"
    patterns: tuple[str, ...] = positional(metavar="PATTERN", nargs="+")


# ---- live changes of the booted system ----
# apply-live adds packages to the running system, as install does; usroverlay changes the
# image's content in place, as an override does: their polkit actions are those.


@dataclass(frozen=True, kw_only=True)
class ApplyLive(Request):
    method: ClassVar[str] = "ApplyLive"
    action: ClassVar[str] = "install-uninstall-packages"
    allow_replacement: bool = option("--allow-replacement", help="also replace and remove files")


@dataclass(frozen=True, kw_only=True)
class UsrOverlay(Request):
    method: ClassVar[str] = "UsrOverlay"
    action: ClassVar[str] = "override"
    hotfix: bool = option("--hotfix", help="keep it across reboots")


# ---- commits' packages, from their metadata ----


@dataclass(frozen=True, kw_only=True)
class DbDiff(Request):
    method: ClassVar[str] = "DbDiff"
    from_rev: str | None = positional(metavar="FROM", nargs="?")
    to_rev: str | None = positional(metavar="TO", nargs="?")
    changelogs: bool = option(
        "-c", "--changelogs", help="with the changelog entries of each upgraded package"
    )


@dataclass(frozen=True, kw_only=True)
class DbList(Request):
    method: ClassVar[str] = "DbList"
    rev: str | None = positional(metavar="REV", nargs="?")


@dataclass(frozen=True, kw_only=True)
class AutomaticUpdate(Request):
    """What apt-ostreed's AutomaticUpdatePolicy runs: check (the update's metadata only, as
    `upgrade --preview`), and with `stage` also the upgrade. Not a CLI verb of its own."""

    method: ClassVar[str] = "AutomaticUpdateTrigger"
    action: ClassVar[str] = "upgrade"
    stage: bool = option("--stage", help="also deploy (stage) the update")


# ---- the table ----


@dataclass(frozen=True)
class Verb:
    words: tuple[str, ...]
    request: type[Request]
    help: str
    aliases: tuple[str, ...] = ()  # other last words (rpm-ostree's and apt's)


VERBS: tuple[Verb, ...] = (
    Verb(("init",), Init, "create a sysroot in a folder and deploy a remote's ref"),
    Verb(("status",), Status, "show the deployments"),
    Verb(("upgrade",), Upgrade, "pull and deploy the newest commit of the origin", ("update",)),
    Verb(("deploy",), Deploy, "deploy a version (or revision=CHECKSUM) of the ref"),
    Verb(("rebase",), Rebase, "follow another ref"),
    Verb(("rollback",), Rollback, "make the previous deployment the default"),
    Verb(("cleanup",), Cleanup, "remove deployments and cached data"),
    Verb(("kargs",), KernelArgs, "show or change kernel arguments"),
    Verb(("finalize-deployment",), FinalizeDeployment, "let the staged deployment be finalized"),
    Verb(("boot-check",), BootCheck, "bless a trial boot, or come back from a failed one"),
    Verb(("install",), Install, "layer packages (names, or local .deb files)"),
    Verb(("uninstall",), Uninstall, "remove layered packages", ("remove",)),
    Verb(("override", "remove"), OverrideRemove, "remove base packages"),
    Verb(
        ("override", "replace"), OverrideReplace, "replace base packages (./pkg.deb or PKG=VERSION)"
    ),
    Verb(("override", "reset"), OverrideReset, "drop overrides"),
    Verb(("reset",), Reset, "drop all layered packages and overrides"),
    Verb(("initramfs",), Initramfs, "regenerate the initramfs on this machine"),
    Verb(("search",), Search, "search the machine's apt sources for packages"),
    Verb(("refresh-md",), RefreshMd, "update the package lists of the apt sources"),
    Verb(("apply-live",), ApplyLive, "apply the pending deployment to the running system"),
    Verb(
        ("usroverlay",), UsrOverlay, "a writable overlay on /usr until the next reboot", ("unlock",)
    ),
    Verb(("db", "diff"), DbDiff, "package changes between two commits or deployments"),
    Verb(("db", "list"), DbList, "the packages of a commit"),
    Verb(("db", "version"), DbList, "the dpkg database of a commit"),
)

GROUP_HELP: Mapping[str, str] = {
    "override": "remove or replace base packages",
    "db": "packages of commits, from their metadata",
}

# the request types the OS interface serves as methods of their own, by method name (`db
# version` is `DbList`; AutomaticUpdateTrigger takes its policy from the daemon's settings)
SERVED: Mapping[str, type[Request]] = {
    v.request.method: v.request for v in VERBS if v.request.served
}
# what a worker may be asked to run
WORKER_REQUESTS: Mapping[str, type[Request]] = {**SERVED, AutomaticUpdate.method: AutomaticUpdate}


# ---- on the bus ----


def _bus_value(f: Field, value: Any) -> Any:
    if f.kind is Kind.STR and value is None:
        return ""
    return list(value) if f.kind is Kind.STRS else value


def to_call(request: Request) -> tuple[list[Any], dict[str, Any]]:
    """The bus method's positional values and options (plain Python; the client makes the
    variants): options only where they differ from the default, so an old daemon is never
    sent an option it does not know for a flag nobody gave."""
    positional: list[Any] = []
    options: dict[str, Any] = {}
    defaults = {f.name: f.default for f in dataclasses.fields(request)}
    for f in request.fields():
        value = getattr(request, f.name)
        if f.positional:
            positional.append(_bus_value(f, value))
        elif value != defaults[f.name]:  # 0 != None: --deploy-index=0 is sent
            options[f.key] = _bus_value(f, value)
    return positional, options


_PYTHON: Mapping[Kind, type | tuple[type, ...]] = {
    Kind.BOOL: bool,
    Kind.STR: str,
    Kind.INT: int,
    Kind.STRS: (list, tuple),
}


def _checked(f: Field, value: Any, where: str) -> Any:
    ok = isinstance(value, _PYTHON[f.kind])
    if f.kind is Kind.INT and isinstance(value, bool):
        ok = False
    if ok and f.kind is Kind.STRS:
        ok = all(isinstance(v, str) for v in value)
    if not ok:
        raise UsageError(f"{where} {f.key!r}: expected type {f.kind.value!r}")
    if f.positional and not value and f.param.nargs in (None, "+"):
        raise UsageError(f"{where} {f.key!r}: must not be empty")
    if f.kind is Kind.STRS:
        return tuple(value)
    if f.kind is Kind.STR and value == "" and f.param.nargs == "?":
        return None
    return value


def from_call(cls: type[Request], positional: Sequence[Any], options: Mapping[str, Any]) -> Request:
    """The request of a bus call: unknown options, wrongly typed values and a missing or
    extra argument are refused (InvalidArgs), as argparse refuses them on the command line."""
    fields = cls.fields()
    args = [f for f in fields if f.positional]
    if len(positional) != len(args):
        raise UsageError(f"{cls.method}: expected {len(args)} arguments, got {len(positional)}")
    values: dict[str, Any] = {}
    empty: Field | None = None
    for f, value in zip(args, positional, strict=True):
        values[f.name] = _checked(f, value, f"{cls.method}: argument")
        if values[f.name] in (None, ""):
            empty = empty or f
        elif empty is not None:  # `db diff "" TO` has no command line
            raise UsageError(f"{cls.method}: {empty.key!r} is empty but a later argument is not")
    by_key = {f.key: f for f in fields if not f.positional}
    for key, value in options.items():
        if key not in by_key:
            raise UsageError(f"{cls.method}: unknown option {key!r}")
        values[by_key[key].name] = _checked(by_key[key], value, f"{cls.method}: option")
    return cls(**values)
