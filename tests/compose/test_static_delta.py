"""Serving updates: `compose tree --static-delta`, `compose static-delta`, and the summary.

A repository composed here is served by a plain loopback HTTP server (no ostree on the server
side), and a real `ostree pull` is shown to take the static delta for an update, fetching fewer
bytes than the same update object by object.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.compose.test_compose import (
    TEST_DEBS,
    cli,
    hello,
    ostree,
    repo_snapshot,
    treefile,
)
from tests.support.aptrepo import AptRepo, GpgKey, make_gpg_key
from tests.support.debian import SUITE, fetch_debian_debs
from tests.support.httpd import Server, ServerStats
from tests.support.sysroots import Result

pytestmark = [pytest.mark.slow]

REF = "test/os"


@dataclass(frozen=True)
class Composed:
    """Two composes into one archive repository, hello-aot 1.0 then 1.1."""

    repo: Path
    first: str
    second: str
    deltas_after_first: str  # `ostree static-delta list` after the first compose
    result: Result  # of the second compose
    key: GpgKey  # the second compose is GPG-signed with it
    treefile: Path
    cachedir: Path


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory, gpg_test_key: GpgKey) -> Composed:
    work = tmp_path_factory.mktemp("delta")
    apt_repo = AptRepo(work / "aptrepo", suite=SUITE)
    apt_repo.add_debs(fetch_debian_debs())
    apt_repo.add(*TEST_DEBS)
    apt_repo.publish()
    tf, repo, cache = treefile(work, apt_repo), work / "repo", work / "cache"
    compose = ("compose", "tree", tf, "--repo", repo, "--cachedir", cache, "--static-delta")
    result = cli(*compose)
    assert result.returncode == 0, result.stderr
    first = ostree(repo, "rev-parse", REF).strip()
    deltas_after_first = ostree(repo, "static-delta", "list")
    apt_repo.add(hello("1.1"))
    apt_repo.publish()
    signing = ("--gpg-sign", gpg_test_key.fingerprint, "--gpg-homedir", gpg_test_key.homedir)
    result = cli(*compose, *signing)
    assert result.returncode == 0, result.stderr
    second = ostree(repo, "rev-parse", REF).strip()
    return Composed(repo, first, second, deltas_after_first, result, gpg_test_key, tf, cache)


def _client(path: Path, url: str, *remote_options: str) -> Path:
    subprocess.run(["ostree", "init", f"--repo={path}", "--mode=bare-user"], check=True)
    options = remote_options or ("--no-gpg-verify",)
    ostree(path, "remote", "add", *options, "origin", url)
    return path


def _pull(client: Path, server: Server, refspec: str, *options: str) -> ServerStats:
    """Pull `refspec` from the server; what the server sent for it."""
    server.reset_stats()
    ostree(client, "pull", *options, "origin", refspec)
    return server.stats


# ---------------------------------------------------------------------------------------------
# what the server-side repository holds


def test_static_delta_from_the_parent(composed: Composed) -> None:
    assert composed.deltas_after_first.strip() in ("", "(No static deltas)")  # no parent yet
    assert f"{composed.first}-{composed.second}" in ostree(composed.repo, "static-delta", "list")
    step = f"Generating static delta {composed.first[:6]} -> {composed.second[:6]}"
    assert step in composed.result.stderr
    delta_line = next(line for line in composed.result.stdout.splitlines() if "delta:" in line)
    assert f"{composed.first[:6]} -> {composed.second[:6]}, " in delta_line
    assert delta_line.rstrip().endswith("B")  # a size


def test_summary_lists_the_ref_and_the_delta(composed: Composed) -> None:
    summary = ostree(composed.repo, "summary", "--view")
    assert f"* {REF}" in summary
    assert composed.second in summary
    assert f"{composed.first}-{composed.second}" in summary  # indexed for clients


def test_commit_and_summary_are_gpg_signed(composed: Composed) -> None:
    sigs = ostree(
        composed.repo, "show", "--print-detached-metadata-key=ostree.gpgsigs", composed.second
    )
    assert sigs.strip()
    assert (composed.repo / "summary.sig").is_file()


def test_clients_verify_the_summary_signature(
    composed: Composed, http_server: Callable[[Path], Server], tmp_path: Path
) -> None:
    server = http_server(composed.repo)
    verify = ("--set=gpg-verify-summary=true", "--set=gpg-verify=true")
    trusting = _client(
        tmp_path / "trusting", server.url, *verify, f"--gpg-import={composed.key.keyring}"
    )
    assert REF in ostree(trusting, "remote", "refs", "origin")
    stranger = make_gpg_key("stranger").keyring
    wary = _client(tmp_path / "wary", server.url, *verify, f"--gpg-import={stranger}")
    refused = subprocess.run(
        ["ostree", f"--repo={wary}", "remote", "refs", "origin"], capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "signature" in refused.stderr.lower() or "gpg" in refused.stderr.lower()


# ---------------------------------------------------------------------------------------------
# a client of a plain HTTP server takes the delta


def test_update_pull_uses_the_static_delta(
    composed: Composed, http_server: Callable[[Path], Server], tmp_path: Path
) -> None:
    server = http_server(composed.repo)
    with_delta = _client(tmp_path / "with-delta", server.url)
    full = _pull(with_delta, server, f"{REF}@{composed.first}")
    assert not [p for p in full.paths if p.startswith("/deltas/")]  # no delta to the first
    update = _pull(with_delta, server, REF)
    assert ostree(with_delta, "rev-parse", f"origin:{REF}").strip() == composed.second
    ostree(with_delta, "fsck")
    assert [p for p in update.paths if p.startswith("/deltas/")], update.paths

    # the same update object by object, for comparison, on a client that holds the first commit
    objects = _client(tmp_path / "objects", server.url)
    ostree(objects, "pull-local", str(composed.repo), composed.first)
    ostree(objects, "refs", f"--create=origin:{REF}", composed.first)
    by_object = _pull(objects, server, REF, "--disable-static-deltas")
    assert not [p for p in by_object.paths if p.startswith("/deltas/")]
    print(
        f"first pull {full.bytes_sent} B in {full.requests} requests; update by delta"
        f" {update.bytes_sent} B in {update.requests}; by object {by_object.bytes_sent} B"
        f" in {by_object.requests}"
    )

    # file content comes in the delta parts; libostree may still fetch a few metadata objects
    # and a "fallback" object that the delta left out (seen on a loaded machine)
    def files(paths: list[str]) -> list[str]:
        return [p for p in paths if p.endswith(".filez")]

    assert len(files(update.paths)) < len(files(by_object.paths)), update.paths
    # for a one-package update the delta is about the size of the objects it replaces (its
    # parts carry a little framing): the win is fewer requests, and no more bytes to speak of.
    # Counted: the delta's own parts (a fallback object libostree may fetch beside them, seen
    # on a loaded machine, is not the delta's size)
    delta = sum(h.bytes for h in update.hits if h.path.startswith("/deltas/"))
    assert 0 < delta <= 1.1 * by_object.bytes_sent, (update, by_object)
    assert update.requests < by_object.requests


# ---------------------------------------------------------------------------------------------
# compose static-delta, for repositories composed earlier


@pytest.fixture
def copy_of_repo(composed: Composed, tmp_path: Path) -> Path:
    """The composed repository without its deltas (as if composed without --static-delta)."""
    copy = tmp_path / "repo"
    shutil.copytree(composed.repo, copy, symlinks=True)
    for name in ostree(copy, "static-delta", "list").split():
        if len(name) >= 64:
            ostree(copy, "static-delta", "delete", name)
    ostree(copy, "summary", "--update")
    return copy


def test_static_delta_verb_defaults_to_the_parent(composed: Composed, copy_of_repo: Path) -> None:
    result = cli("compose", "static-delta", "--repo", copy_of_repo, REF)
    assert result.returncode == 0, result.stderr
    name = f"{composed.first}-{composed.second}"
    assert name in ostree(copy_of_repo, "static-delta", "list")
    assert name in ostree(copy_of_repo, "summary", "--view")
    assert f"Generating static delta {composed.first[:6]} -> {composed.second[:6]}" in (
        result.stderr
    )
    assert result.stdout.startswith(f"Static delta {composed.first[:6]} -> ")


def test_static_delta_verb_from_scratch(tmp_path: Path) -> None:
    # a small repository: a delta from nothing holds the whole tree (minutes for an OS)
    repo, tree = tmp_path / "repo", tmp_path / "tree"
    subprocess.run(["ostree", "init", f"--repo={repo}", "--mode=archive"], check=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/tool").write_text("#!/bin/sh\n")
    checksum = ostree(repo, "commit", "-b", "small/os", str(tree)).strip()
    result = cli("compose", "static-delta", "--repo", repo, "small/os", "--empty")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Static delta scratch -> {checksum[:6]}")
    assert ostree(repo, "static-delta", "list").split() == [checksum]
    assert "* small/os" in ostree(repo, "summary", "--view")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("no/such",), "no/such"),
        ((f"{REF}^",), "no parent"),
        ((REF, "--from", "0" * 64), "0" * 64),
        ((REF, "--from", "no/such"), "no/such"),
    ],
)
def test_static_delta_verb_bad_input(
    copy_of_repo: Path, args: tuple[str, ...], needle: str
) -> None:
    before = repo_snapshot(copy_of_repo)
    result = cli("compose", "static-delta", "--repo", copy_of_repo, *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert needle in result.error_line
    assert "Traceback" not in result.stderr
    assert repo_snapshot(copy_of_repo) == before


def test_failed_signing_leaves_ref_and_summary(composed: Composed, copy_of_repo: Path) -> None:
    summary = (copy_of_repo / "summary").read_bytes()
    result = cli(
        "compose",
        "tree",
        composed.treefile,
        "--repo",
        copy_of_repo,
        "--cachedir",
        composed.cachedir,
        "--force-nocache",
        "--static-delta",
        "--gpg-sign",
        "0" * 40,
        "--gpg-homedir",
        composed.key.homedir,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "GPG-sign" in result.error_line
    assert ostree(copy_of_repo, "rev-parse", REF).strip() == composed.second
    assert (copy_of_repo / "summary").read_bytes() == summary
    assert ostree(copy_of_repo, "static-delta", "list").strip() in ("", "(No static deltas)")
