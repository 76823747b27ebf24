"""The verb table: one request type per verb drives the command line, the bus call and the
polkit action; what the bus sends is checked as argparse checks the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from apt_ostree.cli.parser import build_parser, request_of, verb_of
from apt_ostree.daemon.introspection import interfaces_xml, members
from apt_ostree.errors import UsageError
from apt_ostree.system.requests import (
    SERVED,
    VERBS,
    Install,
    KernelArgs,
    Kind,
    Request,
    Uninstall,
    Upgrade,
    from_call,
    to_call,
)


def _parse(*argv: str) -> Request:
    args = build_parser(list(argv)).parse_args(list(argv))
    verb = verb_of(args)
    assert verb is not None
    return request_of(verb, args)


def _example(cls: type[Request]) -> Request:
    """A request of `cls` with every field set away from its default."""
    values: dict[str, object] = {}
    for f in cls.fields():
        values[f.name] = {Kind.BOOL: True, Kind.STR: "x", Kind.STRS: ("x",), Kind.INT: 0}[f.kind]
    exclusive = {"cache_only", "disable", "apply_live", "dry_run", "gpg_import", "ed25519_key"}
    for name in exclusive & set(values):
        values[name] = None if name in ("gpg_import", "ed25519_key") else False
    if "remote" in values:
        values["remote"] = "origin=http://x/"
    if cls is Uninstall:  # packages or --all
        values["packages"] = ()
    return cls(**values)


@pytest.mark.parametrize("cls", [SERVED[m] for m in sorted(SERVED)], ids=sorted(SERVED))
def test_every_request_round_trips_through_the_bus_call(cls: type[Request]) -> None:
    request = _example(cls)
    positional, options = to_call(request)
    assert from_call(cls, positional, options) == request


def test_every_verb_of_the_table_parses_into_its_request() -> None:
    for verb in VERBS:
        argv = [*verb.words]
        for f in verb.request.fields():
            if f.positional and f.param.nargs in (None, "+"):
                argv.append("x")
        if verb.words == ("init",):
            argv += ["--remote", "o=http://x/", "--no-gpg-verify"]
        if verb.words == ("cleanup",):
            argv.append("-p")
        if verb.words in (("override", "reset"), ("uninstall",)):
            argv.append("--all")
        request = _parse(*argv)
        assert type(request) is verb.request


def test_the_bus_methods_are_the_request_types() -> None:
    os_members = members(interfaces_xml())["org.aptostree.AptOstree1.OS"]
    methods = {name: sig for kind, name, sig in os_members if kind == "method"}
    assert set(methods) == {*SERVED, "AutomaticUpdateTrigger"}
    assert methods["Install"] == "in:as,in:a{sv},out:o"
    assert methods["Rebase"] == "in:s,in:s,in:a{sv},out:o"
    assert methods["Status"] == "in:a{sv},out:aa{sv}"
    assert methods["DbDiff"] == "in:s,in:s,in:a{sv},out:a{sv}"
    assert methods["DbList"] == "in:s,in:a{sv},out:s,out:a(sss)"


def test_cli_flags_become_the_same_request_on_the_bus() -> None:
    request = _parse("kargs", "--append=a=1", "--append=b", "--deploy-index=1")
    assert request == KernelArgs(append=("a=1", "b"), deploy_index=1)
    positional, options = to_call(request)
    assert options == {"append": ["a=1", "b"], "deploy-index": 1}
    assert from_call(KernelArgs, positional, options) == request


def test_an_integer_option_of_zero_is_passed() -> None:
    # found on a real boot: `kargs --deploy-index=0` reached the worker without the index
    _, options = to_call(_parse("kargs", "--append=a", "--deploy-index=0"))
    assert options["deploy-index"] == 0


def test_local_debs_are_made_absolute_and_need_their_own_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    request = _parse("install", "./x.deb", "hello")
    assert request == Install(packages=(str(tmp_path / "x.deb"), "hello"))
    assert request.polkit_action() == "install-local-packages"
    assert Install(packages=("hello",)).polkit_action() == "install-uninstall-packages"


@pytest.mark.parametrize(
    ("method", "positional", "options", "message"),
    [
        ("Upgrade", [], {"sysroot": "/"}, "unknown option 'sysroot'"),
        ("Upgrade", [], {"check": 1}, "option 'check': expected type 'b'"),
        ("Upgrade", [], {"cache-only": True, "download-only": True}, "exclude each other"),
        ("KernelArgs", [], {"deploy-index": True}, "expected type 'i'"),
        ("KernelArgs", [], {"append": "a"}, "expected type 'as'"),
        ("DbDiff", ["", "b"], {}, "'from_rev' is empty"),
        ("Deploy", [], {}, "expected 1 arguments, got 0"),
        ("Cleanup", [], {}, "give at least one of -p, -r, -b, -m"),
        ("Install", [["a", 1]], {}, "expected type 'as'"),
        ("Install", [[]], {}, "argument 'packages': must not be empty"),
        ("Deploy", [""], {}, "argument 'revision': must not be empty"),
    ],
)
def test_bad_calls_are_refused(
    method: str, positional: list[object], options: dict[str, object], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        from_call(SERVED[method], positional, options)


def test_bad_flag_combinations_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="exclude each other"):
        _parse("upgrade", "--cache-only", "--download-only")
    with pytest.raises(UsageError, match="--arg needs --enable"):
        _parse("initramfs", "--arg", "x")
    assert _parse("upgrade", "--check") == Upgrade(check=True)
