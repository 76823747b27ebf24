"""The apt-ostree .deb on a Debian 13 host: trixie's Python 3.13, python3-apt 3 and libostree
2025.2 run the CLI on a folder sysroot (the session's test images, served over loopback):
init with GPG verification, status, upgrade, db diff, layering a package from a signed apt
repository, rollback; ed25519, which Debian 13's libostree is built without, is one clear
error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy import conftest as deploy
from tests.support.aptrepo import AptRepo, GpgKey
from tests.support.debs import DebSpec
from tests.support.httpd import Server
from tests.support.roots import Root, build_checkout_deb, debian13_root
from tests.support.sysroots import Served

pytestmark = [pytest.mark.slow, pytest.mark.network]

served = deploy.served
LAYERED = DebSpec("hello-trixie", files={"/usr/bin/hello-trixie": "#!/bin/sh\necho trixie\n"})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    yield debian13_root(build_checkout_deb(tmp_path_factory.mktemp("deb")))


class Host:
    """apt-ostree as the trixie root runs it, on a folder sysroot of the host's tmp."""

    def __init__(self, root: Root, sysroot: Path, shared: list[Path]) -> None:
        self.root, self.sysroot, self.shared = root, sysroot, shared

    def __call__(self, *args: str | Path, rc: int = 0) -> str:
        proc = self.root.run("apt-ostree", *args, binds=self.shared, check=False)
        assert proc.returncode == rc, f"{args}: {proc.stdout}{proc.stderr}"
        return proc.stdout + proc.stderr

    def status(self) -> list[dict[str, object]]:
        doc = json.loads(self("status", "--sysroot", self.sysroot, "--json"))
        deployments: list[dict[str, object]] = doc["deployments"]
        return deployments


def test_a_debian13_host_runs_the_client_verbs(
    root: Root,
    served: Served,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    gpg_test_key: GpgKey,
    http_server: Callable[[Path], Server],
) -> None:
    versions = root.run("python3", "-c", "import sys, apt_pkg; print(sys.version, apt_pkg.VERSION)")
    assert versions.stdout.startswith("3.13") and " 3." in versions.stdout
    assert "Version: '2025." in root.run("ostree", "--version").stdout
    keyring = served.images.gpg_key.keyring
    host = Host(root, tmp_path / "sysroot", [tmp_path_factory.getbasetemp(), keyring.parent])
    served.set_ref("1.0")
    sysroot = ["--sysroot", str(host.sysroot)]
    host("init", *sysroot, "--os", "test", "--remote", f"origin={served.url}",
         "--gpg-import", served.images.gpg_key.keyring, "test/os")  # fmt: skip
    assert [d["version"] for d in host.status()] == ["1.0"]
    assert "origin:test/os [default]" in host("status", *sysroot)

    served.set_ref("1.1")
    assert "hello-aot 1.0 -> 1.1" in host("upgrade", *sysroot)
    assert [d["version"] for d in host.status()] == ["1.1", "1.0"]
    assert "hello-aot 1.0 -> 1.1" in host("db", "diff", *sysroot, "1", "0")

    # layering: the deployment's apt sources name a signed repository on the host
    apt = AptRepo(tmp_path / "apt", key=gpg_test_key)
    apt.add(LAYERED)
    apt.publish()
    url = http_server(apt.path).url + "/"
    default = host.status()[0]["checksum"]
    [deployment] = [p for p in host.sysroot.glob(f"ostree/deploy/test/deploy/{default}.*")
                    if p.is_dir()]  # fmt: skip
    for old in (deployment / "etc/apt/sources.list.d").iterdir():
        old.unlink()
    (deployment / "etc/apt/keyrings").mkdir(exist_ok=True)
    (deployment / "etc/apt/keyrings/test.gpg").write_bytes(apt.keyring.read_bytes())
    (deployment / "etc/apt/sources.list.d/test.sources").write_text(
        apt.deb822_source(url, signed_by=Path("/etc/apt/keyrings/test.gpg"))
    )
    assert f"{LAYERED.name}-{LAYERED.version}" in host("install", *sysroot, LAYERED.name)
    [new, *_] = host.status()
    assert new["requested-packages"] == [LAYERED.name] and new["version"] == "1.1"

    assert "to be first deployment" in host("rollback", *sysroot)
    assert host.status()[0]["requested-packages"] == []

    # Debian 13's libostree has no ed25519 (built without libsodium): one line, nothing made
    out = host("init", "--sysroot", tmp_path / "signed", "--os", "test", "--remote",
               f"origin={served.url}", "--ed25519-key", "AAAA", "test/os", rc=1)  # fmt: skip
    [error] = [line for line in out.splitlines() if line.startswith("error:")]
    assert "ed25519" in error, out
    assert not (tmp_path / "signed").exists()
