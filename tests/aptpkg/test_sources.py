"""Host apt sources as stock Debian machines have them: one-line and deb822 files, with and
without Signed-By, and releases the host does not name (a folder stands in for the host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from apt_ostree.aptpkg.sources import HostApt, RepoEntry, read_host_sources, read_sources
from apt_ostree.errors import PackageError

MIRROR = "http://mirror.invalid/debian"
SECURITY = "http://mirror.invalid/debian-security"

# a Debian 12 installed with the standard installer: one-line entries, no signed-by, the
# keys in trusted.gpg.d; with the comments and disabled lines it writes
INSTALLER_SOURCES = f"""#deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_]/ bookworm main

deb {MIRROR} bookworm main non-free-firmware
deb-src {MIRROR} bookworm main non-free-firmware

deb {SECURITY} bookworm-security main non-free-firmware  # security updates
# bookworm-updates, to get updates before a point release is made;
deb {MIRROR} bookworm-updates main non-free-firmware
deb [arch=amd64 signed-by=/usr/share/keyrings/vendor.gpg] http://vendor.invalid/apt stable main
"""


def _host(tmp_path: Path, sources: str = INSTALLER_SOURCES, *, keys: bool = True) -> HostApt:
    apt = tmp_path / "etc/apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "trusted.gpg.d").mkdir()
    (apt / "sources.list").write_text(sources)
    if keys:
        for name in ("debian-archive-bookworm-stable.asc", "debian-archive-trixie-stable.asc"):
            (apt / "trusted.gpg.d" / name).write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    return HostApt(tmp_path, codename="bookworm")


def test_one_line_sources_with_comments_and_options(tmp_path: Path) -> None:
    host = _host(tmp_path)
    entries = read_sources(*host.sources)
    assert [(e.uris[0], e.suites, e.components) for e in entries] == [
        (MIRROR, ("bookworm",), ("main", "non-free-firmware")),
        (SECURITY, ("bookworm-security",), ("main", "non-free-firmware")),
        (MIRROR, ("bookworm-updates",), ("main", "non-free-firmware")),
        ("http://vendor.invalid/apt", ("stable",), ("main",)),
    ]
    assert entries[-1].signed_by == "/usr/share/keyrings/vendor.gpg"
    assert entries[1].where == f"{tmp_path}/etc/apt/sources.list:6"


def test_without_signed_by_the_keys_apt_trusts_are_used(tmp_path: Path) -> None:
    host = _host(tmp_path)
    entries = read_host_sources("bookworm", host)
    assert [e.suites for e in entries] == [("bookworm",), ("bookworm-security",),
                                          ("bookworm-updates",)]  # fmt: skip
    keys = tmp_path / "etc/apt/trusted.gpg.d"
    expected = f"{keys}/debian-archive-bookworm-stable.asc {keys}/debian-archive-trixie-stable.asc"
    assert {e.signed_by for e in entries} == {expected}


def test_without_trusted_keys_debian_s_keyring_serves_debian_s_archive(tmp_path: Path) -> None:
    host = _host(tmp_path, keys=False)
    with pytest.raises(PackageError) as e:
        read_host_sources("bookworm", host)
    # one line naming the file and line, and what to do
    assert str(e.value).startswith(f"{tmp_path}/etc/apt/sources.list:3: {MIRROR} bookworm has")
    assert "no Signed-By" in str(e.value) and "signed-by=KEYRING" in str(e.value)
    assert "\n" not in str(e.value)
    keyring = tmp_path / "usr/share/keyrings/debian-archive-keyring.gpg"
    keyring.parent.mkdir(parents=True)
    keyring.write_bytes(b"")
    assert {e.signed_by for e in read_host_sources("bookworm", host)} == {str(keyring)}


def test_deb822_sources_and_disabled_stanzas(tmp_path: Path) -> None:
    host = _host(tmp_path, "")
    (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(
        f"Types: deb\n# a comment inside the stanza\nURIs: {MIRROR}\n"
        "Suites: trixie trixie-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        f"Types: deb\nURIs: {SECURITY}\nSuites: trixie-security\nComponents: main\n"
        "Enabled: no\n"
    )
    [entry] = read_host_sources("trixie", host)
    assert entry == RepoEntry((MIRROR,), ("trixie", "trixie-updates"), ("main",),
                              "/usr/share/keyrings/debian-archive-keyring.gpg")  # fmt: skip
    assert entry.where.endswith("debian.sources (stanza 1)")


@pytest.mark.parametrize("suite", ["trixie", "forky"])
def test_a_release_the_host_does_not_name_is_found_on_its_mirror(
    tmp_path: Path, suite: str
) -> None:
    entries = read_host_sources(suite, _host(tmp_path))
    assert [(e.uris[0], e.suites) for e in entries] == [
        (MIRROR, (suite,)),
        (SECURITY, (f"{suite}-security",)),
        (MIRROR, (f"{suite}-updates",)),
    ]
    assert all(e.signed_by for e in entries)
    # testing has no -updates suite: a companion carried over may be missing on the mirror
    assert [e.optional for e in entries] == [False, True, True]


def test_a_suite_of_no_debian_release_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="no entry for suite 'jammy'.*'repos' list"):
        read_host_sources("jammy", _host(tmp_path))
