"""Resolution of layering requests on a base tree, against a real signed apt repository.

The base tree is a folder in the commit layout holding only what resolution reads: the dpkg
status of its "base" packages (the same packages the test repository publishes), the image's
apt sources in usr/etc pointing at the repository, and the keyring they name.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from apt_ostree.errors import PackageError
from apt_ostree.layering import LayerPlan, LayerRequest
from apt_ostree.layering.resolve import (
    LISTS_MAX_AGE,
    plan_layer,
    refresh,
    search,
    tree_architecture,
)
from apt_ostree.progress import Progress
from tests.support.aptrepo import AptRepo
from tests.support.debs import DebSpec, build_deb, control_text
from tests.support.httpd import Server

BASE = (
    DebSpec("libbase", "1.0", description="base library"),
    DebSpec("basetool", "1.0", depends="libbase", description="a tool of the base"),
    DebSpec("lonely", "1.0", description="nothing needs it"),
)
REPO = (
    *BASE,
    DebSpec("libbase", "2.0", description="base library"),
    DebSpec("app", "1.0", depends="libapp", description="an application\nIt frobnicates."),
    DebSpec("libapp", "1.0", depends="libbase (>= 1.0)", description="app's library"),
    DebSpec("newapp", "1.0", depends="libbase (>= 2.0)", description="needs a newer libbase"),
    DebSpec("rival", "1.0", conflicts="lonely", description="cannot live with lonely"),
    DebSpec("jealous", "1.0", description="broken by the base"),
    DebSpec("suggester", "1.0", recommends="extra", description="recommends extra"),
    DebSpec("extra", "1.0", description="recommended"),
)
KEYRING = "/usr/share/keyrings/test-archive.gpg"


def write_base(root: Path, packages: tuple[DebSpec, ...], sources: str, keyring: Path) -> Path:
    status = root / "usr/lib/sysimage/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "\n".join(control_text(p) + "Status: install ok installed\n" for p in packages)
    )
    (root / "usr/lib/sysimage/dpkg/arch").write_text("amd64\n")
    parts = root / "usr/etc/apt/sources.list.d"
    parts.mkdir(parents=True)
    (parts / "test.sources").write_text(sources)
    (root / KEYRING.lstrip("/")).parent.mkdir(parents=True)
    shutil.copyfile(keyring, root / KEYRING.lstrip("/"))
    return root


@pytest.fixture
def repo(apt_repo: AptRepo) -> AptRepo:
    apt_repo.add(*REPO)
    apt_repo.publish()
    return apt_repo


def base_tree(tmp_path: Path, repo: AptRepo, uri: str | None = None) -> Path:
    sources = repo.deb822_source(uri, signed_by=Path(KEYRING))
    # jealous's rival in the base: a base package whose Breaks hits a layered one
    breaker = DebSpec("breaker", "1.0", breaks="jealous")
    return write_base(tmp_path / "base", (*BASE, breaker), sources, repo.keyring)


@pytest.fixture
def base(tmp_path: Path, repo: AptRepo) -> Path:
    return base_tree(tmp_path, repo)


@pytest.fixture
def plan(base: Path, tmp_path: Path) -> Callable[..., LayerPlan]:
    def plan(allow_inactive: bool = False, refresh: bool = True, **request: object) -> LayerPlan:
        return plan_layer(
            base,
            LayerRequest(**request),  # type: ignore[arg-type]
            cachedir=tmp_path / "cache",
            progress=Progress(),
            allow_inactive=allow_inactive,
            refresh=refresh,
        )

    return plan


def names(plan: LayerPlan) -> list[tuple[str, str]]:
    return [(d.name, d.version) for d in plan.install]


def test_install_with_its_missing_dependency(plan: Callable[..., LayerPlan]) -> None:
    result = plan(packages=("app",))
    # libbase is in the base: never planned, even though the repository has a newer one
    assert names(result) == [("app", "1.0"), ("libapp", "1.0")]
    assert result.remove == () and result.inactive == ()
    for deb in result.install:
        assert deb.path.is_file() and deb.path.name == f"{deb.name}_1.0_all.deb"
        assert deb.path.is_relative_to(deb.path.parents[1]) and deb.path.parent.name == "archives"


def test_package_in_the_base_needs_allow_inactive(plan: Callable[..., LayerPlan]) -> None:
    with pytest.raises(PackageError, match=r"basetool.*--allow-inactive"):
        plan(packages=("basetool", "app"))
    result = plan(packages=("basetool", "app"), allow_inactive=True)
    assert result.inactive == ("basetool",)
    assert names(result) == [("app", "1.0"), ("libapp", "1.0")]


def test_unknown_packages_are_all_named(plan: Callable[..., LayerPlan]) -> None:
    with pytest.raises(PackageError) as e:
        plan(packages=("no-such-a", "app", "no-such-b"))
    assert "no-such-a" in str(e.value) and "no-such-b" in str(e.value)
    assert "\n" not in str(e.value)


def test_needing_a_newer_base_package_names_it(plan: Callable[..., LayerPlan]) -> None:
    with pytest.raises(PackageError) as e:
        plan(packages=("newapp",))
    message = str(e.value)
    assert "newapp 1.0 depends on libbase (>= 2.0), but the base has libbase 1.0" in message
    assert "override replace" in message


def test_conflict_with_a_base_package_names_both(plan: Callable[..., LayerPlan]) -> None:
    with pytest.raises(PackageError, match=r"rival 1.0 conflicts with base package lonely 1.0"):
        plan(packages=("rival",))


def test_base_package_breaking_a_layered_one_is_named(plan: Callable[..., LayerPlan]) -> None:
    with pytest.raises(PackageError, match=r"base package breaker 1.0 breaks jealous 1.0"):
        plan(packages=("jealous",))


def test_conflict_resolved_by_removing_the_base_package(plan: Callable[..., LayerPlan]) -> None:
    result = plan(packages=("rival",), remove=("lonely",))
    assert names(result) == [("rival", "1.0")]
    assert result.remove == ("lonely",)


def test_override_remove(plan: Callable[..., LayerPlan]) -> None:
    result = plan(remove=("lonely",))
    assert result.remove == ("lonely",) and result.install == ()


def test_override_remove_of_a_needed_package_names_who_needs_it(
    plan: Callable[..., LayerPlan],
) -> None:
    with pytest.raises(PackageError) as e:
        plan(remove=("libbase",))
    assert "base package basetool 1.0 depends on libbase" in str(e.value)
    assert "libbase is removed by override remove" in str(e.value)
    with pytest.raises(PackageError, match=r"libapp 1.0 depends on libbase"):
        plan(packages=("app",), remove=("libbase", "basetool"))


def test_override_remove_of_a_package_not_in_the_base(plan: Callable[..., LayerPlan]) -> None:
    with pytest.raises(PackageError, match=r"^app is not a base package; nope is not a base"):
        plan(remove=("app", "nope"))


def test_override_replace(plan: Callable[..., LayerPlan]) -> None:
    result = plan(replace=("libbase=2.0",))
    assert names(result) == [("libbase", "2.0")]
    # and then newapp's need is met
    assert names(plan(packages=("newapp",), replace=("libbase=2.0",))) == [
        ("libbase", "2.0"),
        ("newapp", "1.0"),
    ]


def test_override_replace_with_an_unavailable_version(plan: Callable[..., LayerPlan]) -> None:
    with pytest.raises(PackageError, match=r"libbase 3.0 is not available .*2.0"):
        plan(replace=("libbase=3.0",))
    with pytest.raises(PackageError, match=r"^app is not a base package"):
        plan(replace=("app=1.0",))


def test_local_deb_with_a_dependency_from_the_repository(
    plan: Callable[..., LayerPlan], tmp_path: Path
) -> None:
    deb = build_deb(DebSpec("localtool", "0.1", depends="libapp"), tmp_path / "mine")
    result = plan(local_debs=(deb,))
    assert names(result) == [("libapp", "1.0"), ("localtool", "0.1")]
    assert result.install[1].path == deb
    assert result.install[0].path.parent.name == "archives"


def test_local_replacement_of_a_base_package(
    plan: Callable[..., LayerPlan], tmp_path: Path
) -> None:
    deb = build_deb(DebSpec("lonely", "1.1+local"), tmp_path / "mine")
    result = plan(replace_local=(deb,))
    assert [(d.name, d.version, d.path) for d in result.install] == [("lonely", "1.1+local", deb)]
    other = build_deb(DebSpec("stranger", "1.0"), tmp_path / "mine")
    with pytest.raises(PackageError, match=r"^stranger is not a base package"):
        plan(replace_local=(other,))


def test_local_deb_of_another_architecture(plan: Callable[..., LayerPlan], tmp_path: Path) -> None:
    deb = build_deb(DebSpec("armtool", "0.1", architecture="arm64"), tmp_path / "mine")
    with pytest.raises(PackageError, match=r"built for arm64, the tree's architectures are amd64"):
        plan(local_debs=(deb,))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_local_deb(plan: Callable[..., LayerPlan], tmp_path: Path, damage: str) -> None:
    deb = build_deb(DebSpec("localtool", "0.1", files={"/usr/share/x": "x" * 5000}), tmp_path)
    data = deb.read_bytes()
    deb.write_bytes(b"not a deb at all" if damage == "garbage" else data[: len(data) - 200])
    with pytest.raises(PackageError) as e:
        plan(local_debs=(deb,))
    assert str(e.value).startswith(f"{deb} is not a valid .deb package")
    assert "\n" not in str(e.value)


def test_unsigned_repository_is_refused(
    plan: Callable[..., LayerPlan], repo: AptRepo, tmp_path: Path
) -> None:
    repo.strip_signatures()
    with pytest.raises(PackageError, match=r"not signed") as e:
        plan(packages=("app",))
    assert "\n" not in str(e.value)


def test_wrong_key_is_refused(plan: Callable[..., LayerPlan], repo: AptRepo) -> None:
    repo.sign_with_other_key()
    with pytest.raises(PackageError, match=r"NO_PUBKEY"):
        plan(packages=("app",))


def test_recommends_per_request(plan: Callable[..., LayerPlan]) -> None:
    assert names(plan(packages=("suggester",))) == [("suggester", "1.0")]
    assert names(plan(packages=("suggester",), recommends=True)) == [
        ("extra", "1.0"),
        ("suggester", "1.0"),
    ]


def test_search(base: Path, tmp_path: Path) -> None:
    found = search(base, ["app"], cachedir=tmp_path / "cache", progress=Progress())
    assert ("app", "1.0", "an application") in found
    assert ("libapp", "1.0", "app's library") in found
    assert ("newapp", "1.0", "needs a newer libbase") in found  # its name matches
    assert [
        n
        for n, _, _ in search(
            base, ["FROBNICATES"], cachedir=tmp_path / "cache", progress=Progress()
        )
    ] == ["app"]
    assert search(base, ["app", "library"], cachedir=tmp_path / "cache", progress=Progress()) == [
        ("libapp", "1.0", "app's library")
    ]


def test_refresh_sees_new_packages(base: Path, repo: AptRepo, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert search(base, ["^fresh$"], cachedir=cache, progress=Progress()) == []
    repo.add(DebSpec("fresh", "1.0", description="new"))
    repo.publish()
    assert search(base, ["^fresh$"], cachedir=cache, progress=Progress()) == []  # cached lists
    refresh(base, cachedir=cache, progress=Progress())
    assert search(base, ["^fresh$"], cachedir=cache, progress=Progress()) == [
        ("fresh", "1.0", "new")
    ]


def test_cached_lists_and_debs_are_reused(
    repo: AptRepo, http_server: Callable[[Path], Server], tmp_path: Path
) -> None:
    server = http_server(repo.path)
    base = base_tree(tmp_path, repo, uri=server.url)
    cache = tmp_path / "cache"
    request = LayerRequest(packages=("app",))
    with pytest.raises(PackageError, match=r"no package indices in the cache"):
        plan_layer(base, request, cachedir=cache, progress=Progress(), refresh=False)
    first = plan_layer(base, request, cachedir=cache, progress=Progress())
    assert any(p.endswith(".deb") for p in server.stats.paths)
    mtimes = [os.stat(d.path).st_mtime_ns for d in first.install]
    server.reset_stats()
    again = plan_layer(base, request, cachedir=cache, progress=Progress(), refresh=False)
    assert again == first
    assert server.stats.requests == 0
    assert [os.stat(d.path).st_mtime_ns for d in again.install] == mtimes
    # a refresh asks for the indices again, but downloads no .deb
    plan_layer(base, request, cachedir=cache, progress=Progress(), refresh=True)
    assert server.stats.requests > 0
    assert not any(p.endswith(".deb") for p in server.stats.paths)


def test_lists_fetched_when_stale_or_missing_a_package(
    repo: AptRepo, http_server: Callable[[Path], Server], tmp_path: Path
) -> None:
    server = http_server(repo.path)
    base = base_tree(tmp_path, repo, uri=server.url)
    cache = tmp_path / "cache"

    def plan(*packages: str) -> LayerPlan:
        server.reset_stats()
        return plan_layer(base, LayerRequest(packages=packages), cachedir=cache,
                          progress=Progress())  # fmt: skip

    plan("app")
    assert server.stats.requests > 0  # no lists yet: fetched
    plan("app")
    assert server.stats.requests == 0  # fresh lists: used as they are
    # a package published since the lists were fetched: found after a refresh
    repo.add(DebSpec("fresh", "1.0", description="new"))
    repo.publish()
    assert names(plan("fresh")) == [("fresh", "1.0")]
    assert any("Release" in p for p in server.stats.paths)
    # lists older than the limit are fetched again before resolving
    (stamp,) = cache.glob("apt/*/var/lib/apt/apt-ostree-updated")
    old = time.time() - LISTS_MAX_AGE - 60
    os.utime(stamp, (old, old))
    plan("app")
    assert any("Release" in p for p in server.stats.paths)
    assert stamp.stat().st_mtime > old


def test_offline_plan_with_a_local_deb(plan: Callable[..., LayerPlan], tmp_path: Path) -> None:
    plan(packages=("app",))
    deb = build_deb(DebSpec("localtool", "0.1", depends="app"), tmp_path / "mine")
    result = plan(local_debs=(deb,), refresh=False)
    assert names(result) == [("app", "1.0"), ("libapp", "1.0"), ("localtool", "0.1")]


def test_merged_etc_sources_win_over_usr_etc(base: Path, plan: Callable[..., LayerPlan]) -> None:
    (base / "etc/apt").mkdir(parents=True)  # a deployment's /etc without any source
    with pytest.raises(PackageError, match=r"package not found: app"):
        plan(packages=("app",))


def test_one_line_sources_and_trusted_keyrings_of_the_tree(
    base: Path, repo: AptRepo, plan: Callable[..., LayerPlan]
) -> None:
    """A sources.list without Signed-By trusts the tree's trusted.gpg.d (never the host's)."""
    etc = base / "usr/etc/apt"
    (etc / "sources.list.d/test.sources").unlink()
    (etc / "sources.list").write_text(f"deb {repo.file_uri} stable main\n")
    with pytest.raises(PackageError, match=r"NO_PUBKEY.*is not signed"):
        plan(packages=("app",))
    (etc / "trusted.gpg.d").mkdir()
    shutil.copyfile(repo.keyring, etc / "trusted.gpg.d/test.gpg")
    assert names(plan(packages=("app",))) == [("app", "1.0"), ("libapp", "1.0")]


def test_missing_keyring_is_named(base: Path, plan: Callable[..., LayerPlan]) -> None:
    (base / KEYRING.lstrip("/")).unlink()
    with pytest.raises(PackageError, match=KEYRING):
        plan(packages=("app",))


def test_architecture_of_a_tree(tmp_path: Path) -> None:
    root = tmp_path / "t"
    status = root / "usr/lib/sysimage/dpkg/status"
    status.parent.mkdir(parents=True)
    stanzas = [DebSpec("a", architecture="arm64"), DebSpec("b"), DebSpec("c", architecture="arm64")]
    status.write_text(
        "\n".join(control_text(s) + "Status: install ok installed\n" for s in stanzas)
    )
    assert tree_architecture(root) == "arm64"
    (root / "usr/lib/sysimage/dpkg/arch").write_text("riscv64\ni386\n")
    assert tree_architecture(root) == "riscv64"
