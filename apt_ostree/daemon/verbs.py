"""The client verbs the daemon serves, as data: D-Bus method, CLI words, polkit action,
positional arguments and options.

One table serves three places, so they cannot drift apart: the CLI turns its parsed arguments
into a method call (`call_arguments`), the daemon checks the call and turns it back into the
argv of the same verb (`worker_argv`), and the worker runs that argv in-process exactly as
`apt-ostree --sysroot DIR VERB ...` would. Options travel in the methods' catch-all `a{sv}`
dictionary under the long flag's name (`"download-only": <true>`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from apt_ostree.errors import UsageError


class Kind(StrEnum):
    """D-Bus type of an argument or option."""

    BOOL = "b"
    STR = "s"
    STRS = "as"
    INT = "i"


@dataclass(frozen=True)
class Arg:
    """A positional argument (`dest` in argparse) or an option (`--name`)."""

    name: str
    kind: Kind
    dest: str = ""

    @property
    def attr(self) -> str:
        return self.dest or self.name.replace("-", "_")


@dataclass(frozen=True)
class Verb:
    words: tuple[str, ...]
    method: str
    action: str  # polkit action name ("" for read-only verbs, allowed to everyone)
    positional: tuple[Arg, ...] = ()
    options: tuple[Arg, ...] = ()

    @property
    def mutating(self) -> bool:
        return bool(self.action)


_B, _S, _AS, _I = Kind.BOOL, Kind.STR, Kind.STRS, Kind.INT
_EXIT77 = Arg("unchanged-exit-77", _B)
_PACKAGES = Arg("packages", _AS)

VERBS: tuple[Verb, ...] = (
    Verb(
        ("upgrade",),
        "Upgrade",
        "upgrade",
        options=(
            *(Arg(n, _B) for n in ("check", "preview", "download-only", "cache-only")),
            Arg("allow-downgrade", _B),
            _EXIT77,
        ),
    ),
    Verb(("deploy",), "Deploy", "deploy", (Arg("revision", _S),), (_EXIT77,)),
    Verb(("rebase",), "Rebase", "rebase", (Arg("refspec", _S), Arg("revision", _S)), (_EXIT77,)),
    Verb(("rollback",), "Rollback", "rollback", options=(_EXIT77,)),
    Verb(
        ("cleanup",),
        "Cleanup",
        "cleanup",
        options=(*(Arg(n, _B) for n in ("pending", "rollback", "base", "repomd")), _EXIT77),
    ),
    Verb(
        ("kargs",),
        "KernelArgs",
        "bootconfig",
        options=(
            *(
                Arg(n, _AS)
                for n in ("append", "delete", "replace", "append-if-missing", "delete-if-present")
            ),
            Arg("deploy-index", _I),
            _EXIT77,
        ),
    ),
    Verb(("finalize-deployment",), "FinalizeDeployment", "deploy", (Arg("checksum", _S),)),
    Verb(
        ("install",),
        "Install",
        "install-uninstall-packages",
        (_PACKAGES,),
        (*(Arg(n, _B) for n in ("idempotent", "allow-inactive", "apply-live", "reboot")), _EXIT77),
    ),
    Verb(
        ("uninstall",),
        "Uninstall",
        "install-uninstall-packages",
        (_PACKAGES,),
        (Arg("idempotent", _B), Arg("reboot", _B), _EXIT77),
    ),
    Verb(("override", "remove"), "OverrideRemove", "override", (_PACKAGES,), (_EXIT77,)),
    Verb(("override", "replace"), "OverrideReplace", "override", (_PACKAGES,), (_EXIT77,)),
    Verb(
        ("override", "reset"),
        "OverrideReset",
        "override",
        (_PACKAGES,),
        (Arg("all", _B, "all_"), _EXIT77),
    ),
    Verb(
        ("reset",),
        "Reset",
        "install-uninstall-packages",
        options=(Arg("overlays", _B), Arg("overrides", _B), _EXIT77),
    ),
    Verb(("refresh-md",), "RefreshMd", "repo-refresh"),
    Verb(
        ("initramfs",),
        "Initramfs",
        "bootconfig",
        options=(
            Arg("enable", _B),
            Arg("disable", _B),
            Arg("arg", _AS),
            Arg("reboot", _B),
            _EXIT77,
        ),
    ),
    # live changes of the booted system (apt_ostree/live.py): apply-live adds packages to the
    # running system, as install does; usroverlay changes the image's content in place, as
    # an override does
    Verb(
        ("apply-live",),
        "ApplyLive",
        "install-uninstall-packages",
        options=(Arg("allow-replacement", _B), _EXIT77),
    ),
    Verb(("usroverlay",), "UsrOverlay", "override", options=(Arg("hotfix", _B), _EXIT77)),
    # read-only: run in the daemon's process, allowed to everyone
    Verb(
        ("status",),
        "Status",
        "",
        options=(Arg("json", _B), Arg("verbose", _B), Arg("booted", _B)),
    ),
    Verb(
        ("db", "diff"),
        "DbDiff",
        "",
        (Arg("from", _S, "from_rev"), Arg("to", _S, "to_rev")),
        (Arg("json", _B),),
    ),
    Verb(("db", "list"), "DbList", "", (Arg("rev", _S),)),
    Verb(("db", "version"), "DbVersion", "", (Arg("rev", _S),)),
    Verb(("search",), "Search", "", (Arg("patterns", _AS),)),
)

BY_METHOD: Mapping[str, Verb] = {v.method: v for v in VERBS}
BY_WORDS: Mapping[tuple[str, ...], Verb] = {v.words: v for v in VERBS}

LOCAL_PACKAGE_ACTION = "install-local-packages"


def verb_of(args: argparse.Namespace) -> Verb | None:
    """The served verb that the CLI parsed, if any (`override remove` -> ("override", "remove"))."""
    verb = getattr(args, "verb", None)
    if verb is None:
        return None
    sub = getattr(args, f"{verb.replace('-', '_')}_verb", None)
    return BY_WORDS.get((verb, sub) if sub else (verb,))


def _absolute_debs(values: Sequence[str]) -> list[str]:
    # local .deb paths are the client's, relative to its working directory
    return [str(Path(v).absolute()) if v.endswith(".deb") else v for v in values]


def call_arguments(verb: Verb, args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The method's positional values and options dictionary, from the CLI's parsed arguments
    (plain Python; the client wraps them into variants)."""
    positional: list[Any] = []
    for arg in verb.positional:
        value = getattr(args, arg.attr)
        if arg.kind is Kind.STRS:
            positional.append(_absolute_debs(value or []))
        else:
            positional.append(value or "")
    options: dict[str, Any] = {}
    for arg in verb.options:
        value = getattr(args, arg.attr, None)
        # not `value in (None, False, [])`: 0 == False, and --deploy-index=0 was dropped
        if value is not None and value is not False and value != []:
            options[arg.name] = value
    return positional, options


def _check(arg: Arg, value: Any) -> None:
    expected = {Kind.BOOL: bool, Kind.STR: str, Kind.INT: int, Kind.STRS: list}[arg.kind]
    ok = isinstance(value, expected) and not (arg.kind is Kind.INT and isinstance(value, bool))
    if arg.kind is Kind.STRS:
        ok = ok and all(isinstance(v, str) for v in value)
    if not ok:
        raise UsageError(f"option {arg.name!r}: expected type {arg.kind.value!r}")


def worker_argv(
    verb: Verb, sysroot: Path, osname: str, positional: Sequence[Any], options: Mapping[str, Any]
) -> list[str]:
    """`VERB --sysroot DIR --os NAME [OPTIONS] -- [ARGS]`: the CLI line the worker runs.

    Input from the bus is checked here: unknown options and wrongly typed values are refused
    with InvalidArgs, and positionals come after `--` so that none can pass for an option."""
    known = {a.name: a for a in verb.options}
    argv = [*verb.words, "--sysroot", str(sysroot), "--os", osname]
    for name, value in options.items():
        arg = known.get(name)
        if arg is None:
            raise UsageError(f"{verb.method}: unknown option {name!r}")
        _check(arg, value)
        if arg.kind is Kind.BOOL:
            argv += [f"--{name}"] if value else []
        elif arg.kind is Kind.STRS:
            argv += [f"--{name}={v}" for v in value]
        else:
            argv += [f"--{name}={value}"]
    if len(positional) != len(verb.positional):
        raise UsageError(f"{verb.method}: expected {len(verb.positional)} arguments")
    rest: list[str] = []
    for arg, value in zip(verb.positional, positional, strict=True):
        _check(arg, value)
        if value in ("", []) and any(positional[verb.positional.index(arg) + 1 :]):
            raise UsageError(f"{verb.method}: {arg.name!r} is empty but a later argument is not")
        rest += value if isinstance(value, list) else [value] if value else []
    return [*argv, "--", *rest] if rest else argv


def action_of(verb: Verb, positional: Sequence[Any]) -> str:
    """The polkit action name of a call: local .deb files need install-local-packages."""
    if verb.method in ("Install", "OverrideReplace") and any(
        str(p).endswith(".deb") for p in positional[0]
    ):
        return LOCAL_PACKAGE_ACTION
    return verb.action
