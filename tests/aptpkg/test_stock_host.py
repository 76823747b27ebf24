"""`compose tree` on a host whose apt sources are as Debian's installer writes them: one-line
entries with comments and no Signed-By, the archive keys in /etc/apt/trusted.gpg.d. bubblewrap
puts such an /etc/apt over this machine's for the compose only (its mirror is the one the host
uses); nothing of the host changes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apt_ostree.aptpkg.host import host_codename
from apt_ostree.aptpkg.sources import read_host_sources
from tests.support.debian import CACHE
from tests.support.sysroots import ROOT

pytestmark = [pytest.mark.network, pytest.mark.slow]

MINIMAL = ROOT / "examples" / "minimal.yaml"


def _stock_etc_apt(folder: Path, *, keys: bool) -> Path:
    """The host's Debian mirror as one-line entries without signed-by, and (with `keys`)
    Debian's archive keys in trusted.gpg.d, as a stock installation has them."""
    codename = host_codename()
    lines = ["# written by the test, as Debian's installer writes it", ""]
    for e in read_host_sources(codename):
        lines += [f"deb {e.uris[0]} {s} {' '.join(e.components)}  # {s}" for s in e.suites]
    (folder / "sources.list.d").mkdir(parents=True)
    (folder / "sources.list").write_text("\n".join(lines) + "\n")
    trusted = folder / "trusted.gpg.d"
    trusted.mkdir()
    if keys:
        # what debian-archive-keyring puts there: each release's keys, one file each
        for key in Path("/usr/share/keyrings").glob("debian-archive-*.gpg"):
            if key.name not in ("debian-archive-keyring.gpg", "debian-archive-removed-keys.gpg"):
                shutil.copyfile(key, trusted / key.name)
    for name in ("apt.conf.d", "preferences.d", "auth.conf.d", "keyrings"):
        source = Path("/etc/apt") / name
        if source.is_dir():
            shutil.copytree(source, folder / name)
    return folder


def _compose(etc_apt: Path, tmp_path: Path, *extra_binds: str) -> subprocess.CompletedProcess[str]:
    argv = ["bwrap", "--dev-bind", "/", "/", "--bind", str(etc_apt), "/etc/apt", *extra_binds,
            "--", sys.executable, "-m", "apt_ostree.cli.main", "compose", "tree", str(MINIMAL),
            "--repo", str(tmp_path / "repo"), "--cachedir", str(CACHE / "compose-stock"),
            "--dry-run"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)


def test_compose_with_one_line_sources_and_trusted_gpg_d(tmp_path: Path) -> None:
    result = _compose(_stock_etc_apt(tmp_path / "apt", keys=True), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "linux-image-cloud-amd64" in result.stdout and "dracut" in result.stdout


def test_no_key_for_a_source_is_one_line_naming_it(tmp_path: Path) -> None:
    etc_apt = _stock_etc_apt(tmp_path / "apt", keys=False)
    empty = tmp_path / "no-keyrings"
    empty.mkdir()
    result = _compose(etc_apt, tmp_path, "--bind", str(empty), "/usr/share/keyrings")
    assert result.returncode == 1, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: /etc/apt/sources.list:3: "), error
    assert "has no Signed-By and apt trusts no keys" in error
    assert not (tmp_path / "repo").exists()
