"""The command line, built from the verb table (`apt_ostree/system/requests.py`).

Each verb of the table gets a parser whose arguments are its request type's fields, plus the
target (`--sysroot`, `--os`) and the flags that only change how the CLI shows the result
(`VIEW_FLAGS`, and `--unchanged-exit-77` on every mutating verb). `request_of` turns the
parsed arguments back into the request. `compose`, `cancel` and `reload` are not in the
table: compose runs only in-process, and the other two are the daemon's own.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from apt_ostree import __version__
from apt_ostree.errors import UsageError
from apt_ostree.system.requests import (
    GROUP_HELP,
    VERBS,
    Field,
    Install,
    Kind,
    OverrideReplace,
    Param,
    Request,
    Verb,
    absolute_debs,
)

COMPOSE_HELP = "compose images on a build server"

# flags of the CLI alone: they change what is shown (or how the daemon is asked), not the
# request; each is written here once
REPO_HELP = "the commits of this OSTree repository (a compose server's), not of a sysroot"
VIEW_FLAGS: Mapping[tuple[str, ...], tuple[Param, ...]] = {
    ("status",): (
        Param(("--json",), "print JSON (rpm-ostree's keys)"),
        Param(("-J", "--jsonpath"), "print what the JSONPath EXPR selects of --json", "EXPR"),
        Param(("-v", "--verbose"), "more fields"),
        Param(("-b", "--booted"), "only the booted deployment"),
    ),
    ("db", "diff"): (
        Param(("-F", "--format"), "block (the default), diff or json", "FORMAT"),
        Param(("--json",), "print JSON (--format=json)"),
        Param(("--repo",), REPO_HELP, "REPO"),
    ),
    ("db", "list"): (Param(("--repo",), REPO_HELP, "REPO"),),
    ("upgrade",): (
        Param(
            ("--trigger-automatic-update-policy",),
            "do what the daemon's AutomaticUpdatePolicy says (check or stage)",
        ),
    ),
}
UNCHANGED_77 = Param(("--unchanged-exit-77",), "exit 77 when nothing changed")
VERB_ATTR = "verb_"  # the Verb of the parsed line, in the namespace
QUIET = "no progress, only results and errors"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _add_field(parser: argparse.ArgumentParser, f: Field) -> None:
    p = f.param
    if f.positional:
        nargs = p.nargs if p.nargs else None
        parser.add_argument(f.name, nargs=nargs, metavar=p.metavar or f.name.upper(), help=p.help)
    elif f.kind is Kind.BOOL:
        parser.add_argument(*p.flags, dest=f.name, action="store_true", help=p.help)
    elif f.kind is Kind.STRS:
        parser.add_argument(*p.flags, dest=f.name, action="append", metavar=p.metavar, help=p.help)
    else:
        kind = int if f.kind is Kind.INT else str
        parser.add_argument(*p.flags, dest=f.name, type=kind, metavar=p.metavar, help=p.help)


def _add_verb(parser: argparse.ArgumentParser, verb: Verb) -> None:
    parser.add_argument("--sysroot", type=Path, help="the sysroot (default / when booted)")
    parser.add_argument("--os", dest="osname", metavar="NAME", help="the stateroot")
    # also after the verb, as rpm-ostree takes it (a dest of its own: a subparser's default
    # would overwrite the one given before the verb)
    parser.add_argument("-q", "--quiet", dest="quiet_verb", action="store_true", help=QUIET)
    for f in verb.request.fields():
        _add_field(parser, f)
    view = VIEW_FLAGS.get(verb.words, ())
    if verb.request.action:
        view = (*view, UNCHANGED_77)
    for p in view:
        if p.metavar:  # a flag with a value
            parser.add_argument(*p.flags, metavar=p.metavar, help=p.help)
        else:
            parser.add_argument(*p.flags, action="store_true", help=p.help)
    parser.set_defaults(**{VERB_ATTR: verb})


def _register_verbs(verbs: Any) -> None:
    groups: dict[str, Any] = {}
    for verb in VERBS:
        where = verbs
        if len(verb.words) == 2:
            group = verb.words[0]
            if group not in groups:
                g = verbs.add_parser(group, help=GROUP_HELP[group])
                groups[group] = g.add_subparsers(
                    dest=f"{group}_verb", metavar="VERB", parser_class=_Parser
                )
                groups[group].required = True
            where = groups[group]
        _add_verb(where.add_parser(verb.words[-1], help=verb.help, aliases=verb.aliases), verb)


def _register_daemon_verbs(verbs: Any) -> None:
    """Verbs of the daemon's own (its Sysroot object), with no request type."""
    verbs.add_parser("cancel", help="cancel the daemon's running transaction")
    verbs.add_parser("reload", help="make the daemon re-read its configuration")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given the `argv` it will parse, the compose verbs (whose
    modules import apt and libostree) are only registered when that is the verb."""
    parser = _Parser(prog="apt-ostree", description="Hybrid image/package system for Debian")
    parser.add_argument("--version", action="version", version=f"apt-ostree {__version__}")
    parser.add_argument("--debug", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    verb = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    if argv is None or verb == "compose":
        from apt_ostree.cli import compose

        compose.register(verbs, help=COMPOSE_HELP)
    else:  # listed in --help; never parsed
        verbs.add_parser("compose", help=COMPOSE_HELP)
    _register_verbs(verbs)
    _register_daemon_verbs(verbs)
    return parser


def quiet(args: argparse.Namespace) -> bool:
    return bool(args.quiet or getattr(args, "quiet_verb", False))


def verb_of(args: argparse.Namespace) -> Verb | None:
    """The verb of the table that was parsed (None: compose, cancel, reload)."""
    verb: Verb | None = getattr(args, VERB_ATTR, None)
    return verb


def request_of(verb: Verb, args: argparse.Namespace) -> Request:
    """The request of the parsed arguments (its checks run here: a bad combination of flags
    is a usage error)."""
    values: dict[str, Any] = {}
    for f in verb.request.fields():
        value = getattr(args, f.name)
        if f.kind is Kind.STRS:
            values[f.name] = tuple(value or ())
        elif value is not None:  # not given: the request's own default
            values[f.name] = value
    if verb.request in (Install, OverrideReplace):
        values["packages"] = absolute_debs(values["packages"])
    return verb.request(**values)
