"""The spellings rpm-ostree and apt users type: aliases, short flags, `-r`, `-y`, `-n`, `-q`,
`--all`, `status -J`, `db diff --format`, `deploy --preview`; on a folder sysroot where they do
something."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from apt_ostree.cli.parser import build_parser, quiet, request_of, verb_of
from apt_ostree.cli.render import jsonpath, render_diff_lines
from apt_ostree.errors import UsageError
from apt_ostree.progress import Progress
from apt_ostree.system.execute import execute
from apt_ostree.system.requests import (
    Deploy,
    Install,
    RefreshMd,
    Request,
    Reset,
    Uninstall,
    Upgrade,
    UsrOverlay,
)
from apt_ostree.system.results import Outcome, PackageChange, PackageDiff
from apt_ostree.system.sysroot import System
from tests.deploy import conftest as deploy
from tests.support.aptrepo import AptRepo, GpgKey
from tests.support.debs import DebSpec
from tests.support.httpd import Server
from tests.support.sysroots import Machine, cli, ok

served, template, machine = deploy.served, deploy.template, deploy.machine


def _parse(*argv: str) -> Request:
    args = build_parser(list(argv)).parse_args(list(argv))
    verb = verb_of(args)
    assert verb is not None
    return request_of(verb, args)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["update"], Upgrade()),
        (["upgrade", "-C", "-r"], Upgrade(cache_only=True, reboot=True)),
        (["remove", "htop"], Uninstall(packages=("htop",))),
        (["uninstall", "--all"], Uninstall(all_=True)),
        (["unlock"], UsrOverlay()),
        (["install", "-y", "-n", "htop"], Install(packages=("htop",), assumeyes=True,
                                                   dry_run=True)),
        (["reset", "-l"], Reset(overlays=True)),
        (["reset", "-o", "-r"], Reset(overrides=True, reboot=True)),
        (["refresh-md", "-f"], RefreshMd(force=True)),
        (["deploy", "--preview", "1.0"], Deploy(revision="1.0", preview=True)),
    ],
)  # fmt: skip
def test_spellings_parse_into_their_requests(argv: list[str], expected: Request) -> None:
    assert _parse(*argv) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["uninstall"], "name packages or give --all"),
        (["uninstall", "--all", "htop"], "name packages or give --all"),
        (["install", "-n", "-A", "htop"], "--dry-run changes nothing"),
    ],
)
def test_contradictions_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _parse(*argv)


def test_quiet_before_or_after_the_verb() -> None:
    for argv in (["-q", "status"], ["status", "-q"], ["status", "--quiet"]):
        assert quiet(build_parser(argv).parse_args(argv))
    assert not quiet(build_parser(["status"]).parse_args(["status"]))


def test_jsonpath_subset() -> None:
    doc = {"deployments": [{"id": "a", "booted": True}, {"id": "b", "booted": False}]}
    assert jsonpath(doc, "$.deployments[0].id") == ["a"]
    assert jsonpath(doc, "$.deployments[*].id") == ["a", "b"]
    assert jsonpath(doc, "$['deployments'][1]['booted']") == [False]
    assert jsonpath(doc, "$.nothing") == []
    with pytest.raises(UsageError, match="cannot read"):
        jsonpath(doc, "$.deployments[?(@.booted)]")


def test_diff_format_lines() -> None:
    diff = PackageDiff(
        added=(PackageChange("new", None, "1", "all"),),
        removed=(PackageChange("old", "2", None, "all"),),
        upgraded=(PackageChange("lib", "1.0", "1.1", "amd64"),),
    )
    assert render_diff_lines(diff) == ["-lib-1.0", "+lib-1.1", "+new-1", "-old-2"]


# ---- on a folder sysroot (test/os 1.0 deployed, the remote at 1.1) ----

pytestmark_slow = pytest.mark.slow
LAYERED = DebSpec("hello-habit", files={"/usr/bin/hello-habit": "#!/bin/sh\necho habit\n"})


@pytestmark_slow
def test_status_jsonpath_db_diff_formats_and_deploy_preview(machine: Machine) -> None:
    m = machine
    assert json.loads(ok("status", *m.args(), "-J", "$.deployments[*].version").stdout) == ["1.0"]
    preview = ok("deploy", *m.args(), "--preview", "1.1").stdout
    assert preview.startswith("Would deploy ") and "hello-aot 1.0 -> 1.1" in preview
    assert m.versions() == ["1.0"]  # nothing deployed
    ok("update", *m.args(), "-q")
    assert m.versions() == ["1.1", "1.0"]
    lines = ok("db", "diff", *m.args(), "--format=diff", "1", "0").stdout.splitlines()
    assert "-hello-aot-1.0" in lines and "+hello-aot-1.1" in lines
    as_json = json.loads(ok("db", "diff", *m.args(), "-F", "json", "1", "0").stdout)
    assert as_json["upgraded"][0]["name"] == "hello-aot"
    bad = cli("db", "diff", *m.args(), "--format=xml")
    assert bad.returncode == 2 and "--format xml: expected one of" in bad.error_line


@pytestmark_slow
def test_install_dry_run_changes_nothing_and_uninstall_all(
    machine: Machine, tmp_path: Path, gpg_test_key: GpgKey,
    http_server: Callable[[Path], Server],
) -> None:  # fmt: skip
    apt = AptRepo(tmp_path / "apt", key=gpg_test_key)
    apt.add(LAYERED)
    apt.publish()
    [deployment] = [p for p in machine.path.glob("ostree/deploy/test/deploy/*") if p.is_dir()]
    for old in (deployment / "etc/apt/sources.list.d").iterdir():
        old.unlink()
    (deployment / "etc/apt/keyrings").mkdir(exist_ok=True)
    (deployment / "etc/apt/keyrings/test.gpg").write_bytes(apt.keyring.read_bytes())
    (deployment / "etc/apt/sources.list.d/test.sources").write_text(
        apt.deb822_source(http_server(apt.path).url + "/",
                          signed_by=Path("/etc/apt/keyrings/test.gpg"))
    )  # fmt: skip
    system = System(machine.path, "test", Progress())
    before = machine.snapshot()
    dry = execute(system, Install(packages=(LAYERED.name,), dry_run=True))
    assert isinstance(dry, Outcome) and not dry.changed and not dry.deployed
    assert dry.diff is not None and [c.name for c in dry.diff.added] == [LAYERED.name]
    assert machine.snapshot() == before
    out = ok("install", *machine.args(), "-y", LAYERED.name).stdout
    assert f"{LAYERED.name}-{LAYERED.version}" in out
    gone = execute(System(machine.path, "test", Progress()), Uninstall(all_=True))
    assert isinstance(gone, Outcome) and gone.changed and gone.diff is not None
    assert [c.name for c in gone.diff.removed] == [LAYERED.name]
    assert machine.status()[0]["requested-packages"] == []
