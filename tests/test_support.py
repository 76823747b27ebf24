"""The test fixtures themselves, checked with the real tools: dpkg-deb, apt-get, gpg, HTTP."""

from __future__ import annotations

import gzip
import http.client
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from apt_ostree.run import command_env
from tests.support import vm
from tests.support.aptrepo import AptRepo, GpgKey
from tests.support.debs import DebSpec, Dir, File, Symlink, build_deb
from tests.support.httpd import Server, serve_directory

SPEC = DebSpec(
    name="demo-pkg",
    version="1:2.0-1",
    depends=("libc6 (>= 2.36)", "demo-data | demo-data-alt"),
    pre_depends="dpkg (>= 1.19)",
    conflicts="old-demo",
    provides="demo",
    replaces="old-demo",
    breaks="old-demo (<< 2)",
    recommends="demo-doc",
    essential=True,
    description="demo package\nThe long text.\n\nSecond paragraph.",
    files={
        "/usr/bin/demo": File("#!/bin/sh\necho demo\n", mode=0o755),
        "/etc/demo.conf": "a=1\n",
        "/etc/demo.d/link.conf": Symlink("../demo.conf"),
        "/var/lib/demo/state": b"\x00binary\n",
        "/var/cache/demo": Dir(),
        "/usr/share/demo/link": Symlink("../../bin/demo"),
    },
    postinst="echo configured",
    prerm="#!/bin/bash\necho bye",
    triggers="interest-noawait /usr/share/demo",
    extra_control={"Multi-Arch": "foreign"},
)


def dpkg_deb(*args: str | Path) -> str:
    return subprocess.run(
        ["dpkg-deb", *map(str, args)], check=True, capture_output=True, text=True
    ).stdout


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def request(
    server: Server, method: str, path: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# debs


def test_deb_control_fields(tmp_path: Path) -> None:
    deb = build_deb(SPEC, tmp_path)
    assert deb.name == "demo-pkg_2.0-1_all.deb"  # no epoch in the file name, as in the pool
    control = dpkg_deb("-f", deb)
    for line in (
        "Package: demo-pkg",
        "Version: 1:2.0-1",
        "Architecture: all",
        "Essential: yes",
        "Pre-Depends: dpkg (>= 1.19)",
        "Depends: libc6 (>= 2.36), demo-data | demo-data-alt",
        "Recommends: demo-doc",
        "Conflicts: old-demo",
        "Breaks: old-demo (<< 2)",
        "Replaces: old-demo",
        "Provides: demo",
        "Multi-Arch: foreign",
        "Description: demo package\n The long text.\n .\n Second paragraph.\n",
    ):
        assert line in control
    assert int(dpkg_deb("-f", deb, "Installed-Size")) >= 4


def test_deb_files_are_root_owned_with_modes(tmp_path: Path) -> None:
    with umask(0o077):  # modes come from the spec, not from the umask
        deb = build_deb(SPEC, tmp_path)
    listing = {line.split()[-1] if "->" not in line else line.split()[-3]: line.split()[:2]
               for line in dpkg_deb("-c", deb).splitlines()}  # fmt: skip
    assert {owner for _, owner in listing.values()} == {"root/root"}
    assert listing["./usr/bin/demo"][0] == "-rwxr-xr-x"
    assert listing["./etc/demo.conf"][0] == "-rw-r--r--"
    assert listing["./var/cache/demo/"][0] == "drwxr-xr-x"
    assert listing["./usr/share/demo/"][0] == "drwxr-xr-x"
    assert listing["./usr/share/demo/link"][0].startswith("l")
    assert "./usr/share/demo/link -> ../../bin/demo" in dpkg_deb("-c", deb)


def test_deb_conffiles_scripts_and_triggers(tmp_path: Path) -> None:
    with umask(0o077):
        deb = build_deb(SPEC, tmp_path)
    ctrl = subprocess.run(["dpkg-deb", "--ctrl-tarfile", deb], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(ctrl.stdout)) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        text = {n: tar.extractfile(m).read().decode() for n, m in members.items()}  # type: ignore[union-attr]
    assert sorted(members) == ["conffiles", "control", "postinst", "prerm", "triggers"]
    assert {n: m.mode for n, m in members.items()} == {
        "conffiles": 0o644,
        "control": 0o644,
        "postinst": 0o755,
        "prerm": 0o755,
        "triggers": 0o644,
    }
    assert {m.uname for m in members.values()} == {"root"}
    assert text["conffiles"] == "/etc/demo.conf\n"  # the symlink under /etc is no conffile
    assert text["postinst"] == "#!/bin/sh\nset -e\necho configured\n"
    assert text["prerm"] == "#!/bin/bash\necho bye\n"
    assert text["triggers"] == "interest-noawait /usr/share/demo\n"


def test_deb_debconf_templates_and_config(tmp_path: Path) -> None:
    spec = DebSpec(
        name="asks",
        templates="Template: asks/colour\nType: string\nDescription: Colour?",
        config=". /usr/share/debconf/confmodule\ndb_input high asks/colour || true",
    )
    deb = build_deb(spec, tmp_path)
    assert dpkg_deb("--info", deb, "templates").startswith("Template: asks/colour\nType: string\n")
    assert dpkg_deb("--info", deb, "config").startswith("#!/bin/sh\nset -e\n. /usr/share/debconf")
    ctrl = subprocess.run(["dpkg-deb", "--ctrl-tarfile", deb], check=True, capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(ctrl.stdout)) as tar:
        modes = {m.name.removeprefix("./"): m.mode for m in tar.getmembers() if m.isfile()}
    assert modes == {"config": 0o755, "control": 0o644, "templates": 0o644}


def test_deb_explicit_conffiles(tmp_path: Path) -> None:
    spec = DebSpec(name="c", files={"/etc/a": "a", "/etc/b": "b"}, conffiles=("/etc/b",))
    assert dpkg_deb("--info", build_deb(spec, tmp_path), "conffiles") == "/etc/b\n"


def test_deb_is_byte_identical(tmp_path: Path) -> None:
    with umask(0o022):
        a = build_deb(SPEC, tmp_path / "a").read_bytes()
    with umask(0o077):
        b = build_deb(SPEC, tmp_path / "b").read_bytes()
    assert a == b
    assert a != build_deb(DebSpec(name="demo-pkg", version="1:2.0-1"), tmp_path / "c").read_bytes()


def test_deb_builder_fixture(deb_builder: Callable[[DebSpec], Path], tmp_path: Path) -> None:
    deb = deb_builder(DebSpec(name="fx", version="3", architecture="amd64"))
    assert deb == tmp_path / "debs" / "fx_3_amd64.deb"
    assert dpkg_deb("-f", deb, "Architecture") == "amd64\n"


def test_bad_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="absolute path"):
        build_deb(DebSpec(name="bad", files={"usr/bin/x": "x"}), tmp_path)


# ---------------------------------------------------------------------------------------------
# apt repositories, checked by apt itself in a scratch root


class ScratchApt:
    """apt-get/apt-cache with all state in `root` and nothing read from the host's /etc/apt."""

    def __init__(self, root: Path, sources: str) -> None:
        self.root = root
        for d in (
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "var/lib/dpkg",
            "var/cache/apt/archives/partial",
        ):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").touch()
        (root / "etc/apt/sources.list.d/test.sources").write_text(sources)
        # APT_CONFIG is read before /etc/apt/apt.conf.d, so Dir moves every later lookup here.
        self.config = root / "apt.conf"
        self.config.write_text(
            f'Dir "{root}/";\n'
            f'Dir::State::status "{root}/var/lib/dpkg/status";\n'
            'APT::Architecture "amd64";\nAPT::Architectures { "amd64"; };\n'
            'APT::Sandbox::User "root";\nDebug::NoLocking "true";\n'
            'Acquire::Languages "none";\nAcquire::Retries "0";\n'
        )

    @property
    def archives(self) -> Path:
        return self.root / "var/cache/apt/archives"

    def __call__(self, *args: str, tool: str = "apt-get") -> subprocess.CompletedProcess[str]:
        env = command_env({"APT_CONFIG": str(self.config)})
        return subprocess.run([tool, *args], capture_output=True, text=True, env=env, check=False)

    def update(self) -> str:
        proc = self("update")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "W:" not in proc.stderr, proc.stderr
        return proc.stdout

    def candidate(self, package: str) -> str:
        policy = self("policy", package, tool="apt-cache").stdout
        return next(line.split()[1] for line in policy.splitlines() if "Candidate:" in line)


OTHER = DebSpec(name="other", version="1", depends="other-lib")
LIB = DebSpec(name="other-lib", version="1", architecture="amd64", files={"/usr/lib/x": "x"})


def published(path: Path, **kwargs: object) -> AptRepo:
    repo = AptRepo(path, **kwargs)  # type: ignore[arg-type]
    repo.add(OTHER, LIB, DebSpec(name="arm-only", architecture="arm64"))
    repo.publish()
    return repo


def test_repository_layout_and_release_fields(tmp_path: Path) -> None:
    repo = published(tmp_path / "repo", suite="bookworm", architectures=("amd64", "arm64"))
    release = (repo.dist / "Release").read_text()
    for line in (
        "Suite: bookworm",
        "Codename: bookworm",
        "Components: main",
        "Architectures: amd64 arm64",
        "Date: Tue, 14 Nov 2023 22:14:20 GMT",
    ):
        assert line in release
    assert " main/binary-amd64/Packages.gz\n" in release.split("SHA256:")[1]
    amd64 = (repo.dist / "main/binary-amd64/Packages").read_text()
    arm64 = (repo.dist / "main/binary-arm64/Packages").read_text()
    assert "Package: other\n" in amd64 and "Package: other\n" in arm64  # Architecture: all
    assert "Package: other-lib\n" in amd64 and "Package: other-lib\n" not in arm64
    assert "Package: arm-only\n" in arm64 and "Package: arm-only\n" not in amd64
    assert gzip.decompress((repo.dist / "main/binary-amd64/Packages.gz").read_bytes()) == (
        amd64.encode()
    )
    assert "Filename: pool/main/other_1_all.deb" in amd64
    inrelease = (repo.dist / "InRelease").read_text()
    assert inrelease.startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    assert (repo.dist / "Release.gpg").read_text().startswith("-----BEGIN PGP SIGNATURE-----")


def test_publishing_is_deterministic(tmp_path: Path) -> None:
    a, b = published(tmp_path / "a"), published(tmp_path / "b")
    for name in ("Release", "main/binary-amd64/Packages", "main/binary-amd64/Packages.gz"):
        assert (a.dist / name).read_bytes() == (b.dist / name).read_bytes(), name


def test_keyring_verifies_the_signatures(tmp_path: Path, gpg_test_key: GpgKey) -> None:
    repo = published(tmp_path / "repo")
    assert repo.keyring == gpg_test_key.keyring
    assert repo.keyring.read_bytes()[:1] in (b"\x98", b"\x99")  # binary, not armored
    verify = subprocess.run(
        ["gpgv", "--keyring", repo.keyring, repo.dist / "Release.gpg", repo.dist / "Release"],
        capture_output=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert (
        subprocess.run(["gpgv", "--keyring", repo.keyring, repo.dist / "InRelease"]).returncode == 0
    )


def test_repository_by_file_uri(tmp_path: Path) -> None:
    repo = published(tmp_path / "repo")
    apt = ScratchApt(tmp_path / "state", repo.deb822_source())
    apt.update()
    assert apt.candidate("other") == "1"
    proc = apt("install", "--print-uris", "-y", "other")
    assert proc.returncode == 0, proc.stderr
    assert (
        f"'file:{repo.path}/pool/main/other-lib_1_amd64.deb' other-lib_1_amd64.deb" in proc.stdout
    )


def test_flat_repository(tmp_path: Path) -> None:
    repo = published(tmp_path / "flat", flat=True)
    assert (repo.path / "InRelease").exists() and (repo.path / "other_1_all.deb").exists()
    assert "Suites: ./\n" in repo.deb822_source() and "Components" not in repo.deb822_source()
    apt = ScratchApt(tmp_path / "state", repo.deb822_source())
    apt.update()
    assert apt.candidate("other-lib") == "1"


def test_repository_over_http(tmp_path: Path, http_server: Callable[[Path], Server]) -> None:
    repo = published(tmp_path / "repo")
    server = http_server(repo.path)
    apt = ScratchApt(tmp_path / "state", repo.deb822_source(server.url))
    apt.update()
    assert "/dists/stable/InRelease" in server.stats.paths
    server.reset_stats()
    proc = apt("install", "--download-only", "-y", "other")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = apt.archives / "other_1_all.deb"
    assert got.read_bytes() == (repo.pool / "other_1_all.deb").read_bytes()
    sizes = sum(
        (repo.pool / n).stat().st_size for n in ("other_1_all.deb", "other-lib_1_amd64.deb")
    )
    assert server.stats.bytes_for(".deb") == server.stats.bytes_sent == sizes
    assert server.stats.requests == 2


def test_unchanged_repository_is_not_fetched_again(
    tmp_path: Path, http_server: Callable[[Path], Server]
) -> None:
    repo = published(tmp_path / "repo")
    server = http_server(repo.path)
    apt = ScratchApt(tmp_path / "state", repo.deb822_source(server.url))
    apt.update()
    server.reset_stats()
    apt.update()
    assert [(h.path, h.status) for h in server.stats.hits] == [("/dists/stable/InRelease", 304)]
    assert server.stats.bytes_sent == 0


def test_republish_within_the_same_second_is_seen(
    tmp_path: Path, http_server: Callable[[Path], Server]
) -> None:
    repo = published(tmp_path / "repo")
    server = http_server(repo.path)
    last_modified = request(server, "GET", "/dists/stable/InRelease")[1]["Last-Modified"]
    over_file = ScratchApt(tmp_path / "file", repo.deb822_source())
    over_http = ScratchApt(tmp_path / "http", repo.deb822_source(server.url))
    for apt in (over_file, over_http):
        apt.update()
        assert apt.candidate("other") == "1"
    repo.add(DebSpec(name="other", version="2"))
    repo.publish()
    since = {"If-Modified-Since": last_modified}
    assert request(server, "GET", "/dists/stable/InRelease", **since)[0] == 200
    for apt in (over_file, over_http):
        apt.update()
        assert apt.candidate("other") == "2"
    assert repo.remove("other", "2") == [repo.pool / "other_2_all.deb"]
    repo.publish()
    over_http.update()
    assert over_http.candidate("other") == "1"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("unsigned", "is not signed"),
        ("other-key", "NO_PUBKEY"),
        ("tampered", "Hash Sum mismatch"),
    ],
)
def test_damaged_repositories_are_refused_by_apt(
    tmp_path: Path, damage: str, expected: str
) -> None:
    repo = published(tmp_path / "repo")
    if damage == "unsigned":
        repo.strip_signatures()
    elif damage == "other-key":
        other = repo.sign_with_other_key()
        assert other.fingerprint != repo.key.fingerprint
    else:
        repo.tamper_packages()
    apt = ScratchApt(tmp_path / "state", repo.deb822_source())
    proc = apt("update")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert expected in proc.stdout + proc.stderr
    assert apt("policy", "other", tool="apt-cache").stdout.strip() == ""  # nothing was trusted


def test_tampered_deb_is_refused_at_download(
    tmp_path: Path, http_server: Callable[[Path], Server]
) -> None:
    repo = published(tmp_path / "repo")
    repo.tamper_deb("other_1_all.deb")
    apt = ScratchApt(tmp_path / "state", repo.deb822_source(http_server(repo.path).url))
    apt.update()
    proc = apt("install", "--download-only", "-y", "other")
    assert proc.returncode != 0
    assert "Hash Sum mismatch" in proc.stderr
    assert not (apt.archives / "other_1_all.deb").exists()


def test_apt_repo_fixture(apt_repo: AptRepo, tmp_path: Path) -> None:
    apt = ScratchApt(tmp_path / "state", apt_repo.deb822_source())
    apt.update()  # empty, but signed and valid
    apt_repo.add(DebSpec(name="late"))
    apt_repo.publish()
    apt.update()
    assert apt.candidate("late") == "1.0"


# ---------------------------------------------------------------------------------------------
# the HTTP server


@pytest.fixture
def served(tmp_path: Path, http_server: Callable[[Path], Server]) -> Server:
    (tmp_path / "www").mkdir()
    (tmp_path / "www/f").write_bytes(bytes(range(100)))
    os.utime(tmp_path / "www/f", (1_700_000_000, 1_700_000_000))
    return http_server(tmp_path / "www")


def test_http_get_head_and_ranges(served: Server) -> None:
    status, headers, body = request(served, "GET", "/f")
    assert (status, body, headers["Accept-Ranges"]) == (200, bytes(range(100)), "bytes")
    status, headers, body = request(served, "HEAD", "/f")
    assert (status, headers["Content-Length"], body) == (200, "100", b"")
    status, headers, body = request(served, "GET", "/f", Range="bytes=10-19")
    assert (status, headers["Content-Range"], body) == (
        206,
        "bytes 10-19/100",
        bytes(range(10, 20)),
    )
    assert request(served, "GET", "/f", Range="bytes=95-")[2] == bytes(range(95, 100))
    assert request(served, "GET", "/f", Range="bytes=-3")[2] == bytes(range(97, 100))
    assert request(served, "GET", "/f", Range="bytes=100-")[0] == 416
    stale = request(served, "GET", "/f", Range="bytes=0-1", **{"If-Range": '"nope"'})
    assert stale[0] == 200
    assert request(served, "GET", "/missing")[0] == 404
    assert served.stats.requests == 8
    assert served.stats.bytes_sent == 100 + 10 + 5 + 3 + 100
    assert [h.status for h in served.stats.hits] == [200, 200, 206, 206, 206, 416, 200, 404]


def test_http_conditional_requests(served: Server) -> None:
    _, headers, _ = request(served, "GET", "/f")
    assert headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert request(served, "GET", "/f", **{"If-Modified-Since": headers["Last-Modified"]})[0] == 304
    assert request(served, "GET", "/f", **{"If-None-Match": headers["ETag"]})[0] == 304
    path = served.directory / "f"
    path.write_bytes(b"new")  # rewritten within the same second as a copy a client holds
    os.utime(path, (time.time(), time.time()))
    now = request(served, "GET", "/f")[1]["Last-Modified"]
    assert request(served, "GET", "/f", **{"If-Modified-Since": now})[0] == 200
    assert request(served, "GET", "/f", **{"If-None-Match": headers["ETag"]})[0] == 200


def test_http_failure_modes(served: Server) -> None:
    served.fail(500)
    assert request(served, "GET", "/f")[0] == 500
    served.fail(404)
    assert request(served, "HEAD", "/f")[0] == 404
    served.fail(None)
    assert request(served, "GET", "/f")[0] == 200
    kept = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
    kept.request("GET", "/f")
    kept.getresponse().read()  # a keep-alive connection, open when the server stops
    served.stop()
    with pytest.raises(ConnectionError):
        request(served, "GET", "/f")
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        kept.request("GET", "/f")
        kept.getresponse()


def test_http_throttle(served: Server) -> None:
    served.throttle(1000)
    start = time.monotonic()
    assert request(served, "GET", "/f")[2] == bytes(range(100))
    assert time.monotonic() - start >= 0.09


def test_serve_directory_stops(tmp_path: Path) -> None:
    with serve_directory(tmp_path) as server:
        assert request(server, "GET", "/")[0] == 200  # a listing
    assert server.stopped
    with pytest.raises(ConnectionError):
        request(server, "GET", "/")


def _wait_with(guest: vm.VM, console: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """wait_ready() when the first half of the wait sees nothing: what the harness did."""
    guest.workdir.mkdir(parents=True, exist_ok=True)
    guest.console.write_text(console)
    calls: list[str] = []

    def read_until(pattern: object, timeout: float) -> None:
        calls.append(f"read {timeout:g}")
        if len(calls) == 1:
            raise vm.GuestError("silence")

    monkeypatch.setattr(guest, "_read_until", read_until)
    monkeypatch.setattr(guest, "stop", lambda: calls.append("stop"))
    monkeypatch.setattr(guest, "start", lambda: calls.append("start"))
    guest.wait_ready(300)
    return calls


def test_vm_power_cycles_only_a_restart_stuck_in_firmware(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = "[  101.6] systemd-shutdown[1]: Rebooting.\n[  101.6] reboot: machine restart\n"
    guest = vm.VM(tmp_path / "disk.raw", tmp_path / "a")
    assert _wait_with(guest, stuck, monkeypatch) == ["read 150", "stop", "start", "read 300"]
    assert "machine restart" in (guest.workdir / "power-cycles.log").read_text()
    slow = "[   12.1] systemd[1]: Starting something...\n"
    other = vm.VM(tmp_path / "disk.raw", tmp_path / "b")
    assert _wait_with(other, slow, monkeypatch) == ["read 150", "read 150"]
