"""The verb table: bus calls become the CLI line the worker runs, and bad input is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from apt_ostree.cli.main import build_parser
from apt_ostree.daemon.verbs import (
    BY_METHOD,
    VERBS,
    action_of,
    call_arguments,
    verb_of,
    worker_argv,
)
from apt_ostree.errors import UsageError

SYSROOT = Path("/sysroot")


def test_every_served_verb_round_trips_through_the_parser() -> None:
    parser = build_parser()
    for verb in VERBS:
        argv = worker_argv(
            verb, SYSROOT, "test", ["x" if a.kind == "s" else ["x"] for a in verb.positional], {}
        )
        args = parser.parse_args(argv)
        assert verb_of(args) is verb
        assert args.sysroot == SYSROOT and args.osname == "test"


def test_cli_arguments_become_the_same_cli_line() -> None:
    parser = build_parser()
    line = ["kargs", "--append=a=1", "--append=b", "--deploy-index=1", "--unchanged-exit-77"]
    args = parser.parse_args(line)
    verb = verb_of(args)
    assert verb is not None
    positional, options = call_arguments(verb, args)
    again = parser.parse_args(worker_argv(verb, SYSROOT, "test", positional, options))
    for key in ("append", "deploy_index", "unchanged_exit_77"):
        assert getattr(again, key) == getattr(args, key)


def test_an_integer_option_of_zero_is_passed() -> None:
    # found on a real boot: `kargs --deploy-index=0` reached the worker without the index
    parser = build_parser()
    args = parser.parse_args(["kargs", "--append=a", "--deploy-index=0"])
    verb = verb_of(args)
    assert verb is not None
    _, options = call_arguments(verb, args)
    assert options["deploy-index"] == 0
    again = parser.parse_args(worker_argv(verb, SYSROOT, "test", [], options))
    assert again.deploy_index == 0


def test_local_debs_are_made_absolute_and_need_their_own_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["install", "./x.deb", "hello"])
    verb = BY_METHOD["Install"]
    positional, _ = call_arguments(verb, args)
    assert positional == [[str(tmp_path / "x.deb"), "hello"]]
    assert action_of(verb, positional) == "install-local-packages"
    assert action_of(verb, [["hello"]]) == "install-uninstall-packages"


@pytest.mark.parametrize(
    ("method", "positional", "options", "message"),
    [
        ("Upgrade", [], {"sysroot": "/"}, "unknown option 'sysroot'"),
        ("Upgrade", [], {"check": 1}, "expected type 'b'"),
        ("KernelArgs", [], {"deploy-index": True}, "expected type 'i'"),
        ("KernelArgs", [], {"append": "a"}, "expected type 'as'"),
        ("DbDiff", ["", "b"], {}, "'from' is empty"),
        ("Deploy", [], {}, "expected 1 arguments"),
    ],
)
def test_bad_calls_are_refused(
    method: str, positional: list[object], options: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        worker_argv(BY_METHOD[method], SYSROOT, "test", positional, options)


def test_positionals_cannot_pass_for_options() -> None:
    argv = worker_argv(BY_METHOD["Deploy"], SYSROOT, "test", ["--allow-downgrade"], {})
    assert argv[-2:] == ["--", "--allow-downgrade"]
    args = build_parser().parse_args(argv)
    assert args.revision == "--allow-downgrade"
