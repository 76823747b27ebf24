"""The test fixtures themselves, checked with the real tools: dpkg-deb, apt-get, gpg."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.aptrepo import AptRepo
from tests.support.debs import DebSpec, File, Symlink, build_deb
from tests.support.httpd import Server, serve_directory

SPEC = DebSpec(
    name="demo-pkg",
    version="2.0-1",
    depends="libc6",
    conflicts="old-demo",
    provides="demo",
    files={
        "/usr/bin/demo": File("#!/bin/sh\necho demo\n", mode=0o755),
        "/etc/demo.conf": "a=1\n",
        "/var/lib/demo/state": "s\n",
        "/usr/share/demo/link": Symlink("../../bin/demo"),
    },
    postinst="echo configured",
    triggers="interest-noawait /usr/share/demo\n",
)


def dpkg_deb(*args: str | Path) -> str:
    return subprocess.run(
        ["dpkg-deb", *map(str, args)], check=True, capture_output=True, text=True
    ).stdout


def test_deb_fields_files_and_scripts(tmp_path: Path) -> None:
    deb = build_deb(SPEC, tmp_path)
    assert deb.name == "demo-pkg_2.0-1_all.deb"
    info = dpkg_deb("-I", deb)
    for line in (
        "Package: demo-pkg",
        "Version: 2.0-1",
        "Depends: libc6",
        "Conflicts: old-demo",
        "Provides: demo",
    ):
        assert line in info
    assert "postinst" in info and "conffiles" in info and "triggers" in info
    assert dpkg_deb("--ctrl-tarfile", deb)  # readable control archive
    listing = dpkg_deb("-c", deb)
    assert "-rwxr-xr-x root/root" in next(x for x in listing.splitlines() if "usr/bin/demo" in x)
    assert "-rw-r--r-- root/root" in next(x for x in listing.splitlines() if "etc/demo.conf" in x)
    assert "link -> ../../bin/demo" in listing
    control = tmp_path / "ctrl"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    assert (control / "conffiles").read_text() == "/etc/demo.conf\n"
    assert (control / "postinst").read_text().startswith("#!/bin/sh\nset -e\n")


def test_deb_is_reproducible(tmp_path: Path) -> None:
    a = build_deb(SPEC, tmp_path / "a").read_bytes()
    b = build_deb(SPEC, tmp_path / "b").read_bytes()
    assert a == b


def apt_get(root: Path, sources: str, *args: str) -> subprocess.CompletedProcess[str]:
    """apt-get against a scratch state folder, never the host's."""
    for d in (
        "etc/apt/sources.list.d",
        "etc/apt/preferences.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()
    (root / "etc/apt/sources.list.d/test.sources").write_text(sources)
    opts = [
        f"-oDir={root}",
        f"-oDir::State::status={root}/var/lib/dpkg/status",
        f"-oDir::Etc={root}/etc/apt",
        "-oDir::Etc::trustedparts=/nonexistent",
        f"-oDir::Cache={root}/var/cache/apt",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root",
    ]
    return subprocess.run(["apt-get", *opts, *args], capture_output=True, text=True, check=False)


def published(path: Path) -> AptRepo:
    repo = AptRepo(path)
    repo.add(SPEC, DebSpec(name="other", version="1"))
    repo.publish()
    return repo


def test_repository_by_file_uri(tmp_path: Path) -> None:
    repo = published(tmp_path / "repo")
    state = tmp_path / "state"
    assert apt_get(state, repo.deb822_source(), "update").returncode == 0
    proc = apt_get(state, repo.deb822_source(), "install", "--print-uris", "-y", "other")
    assert proc.returncode == 0, proc.stderr
    assert "/pool/main/other_1_all.deb' other_1_all.deb" in proc.stdout


def test_repository_over_http(tmp_path: Path, http_server: Callable[[Path], Server]) -> None:
    repo = published(tmp_path / "repo")
    server = http_server(repo.path)
    proc = apt_get(tmp_path / "state", repo.deb822_source(server.url), "update")
    assert proc.returncode == 0, proc.stderr
    assert server.stats.requests > 0 and server.stats.bytes_sent > 0
    with urllib.request.urlopen(f"{server.url}/dists/stable/InRelease") as r:
        assert b"BEGIN PGP SIGNED MESSAGE" in r.read()


def test_republish_with_a_newer_version(tmp_path: Path) -> None:
    repo = published(tmp_path / "repo")
    repo.add(DebSpec(name="other", version="2"))
    repo.publish()
    state = tmp_path / "state"
    apt_get(state, repo.deb822_source(), "update")
    uris = apt_get(state, repo.deb822_source(), "install", "--print-uris", "-y", "other").stdout
    assert "other_2_all.deb" in uris


@pytest.mark.parametrize("damage", ["unsigned", "other-key", "tampered"])
def test_damaged_repositories_are_refused_by_apt(tmp_path: Path, damage: str) -> None:
    repo = published(tmp_path / "repo")
    if damage == "unsigned":
        repo.strip_signatures()
    elif damage == "other-key":
        repo.sign_with_other_key()
    else:
        repo.tamper_packages()
    proc = apt_get(tmp_path / "state", repo.deb822_source(), "update")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 or "W:" in output or "E:" in output
    expected = {"unsigned": "not signed", "other-key": "NO_PUBKEY", "tampered": "Hash Sum"}
    assert expected[damage] in output


def test_server_failure_mode(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with serve_directory(tmp_path) as server:
        server.stats.fail_with = 500
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{server.url}/f")
