"""Package diffs from commit metadata: Debian version ordering, Multi-Arch, rendering, JSON."""

from __future__ import annotations

import json

import pytest

from apt_ostree.cli.render import NO_CHANGES, render_diff, render_package_list
from apt_ostree.pkgdiff import diff_packages
from apt_ostree.system.results import PackageChange, PackageDiff, diff_to_wire


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("1.0~rc1", "1.0"),
        ("1.0", "1.0+b1"),
        ("1.0~rc1", "1.0~rc2"),
        ("1.0~~", "1.0~"),
        ("9.9", "1:0.1"),
        ("1:2.0", "2:1.0"),
        ("1.0-1", "1.0-1+deb12u1"),
        ("1.0-9", "1.0-10"),
        ("2.36-9+deb12u3", "2.36-9+deb12u10"),
        ("1.0", "1.0a"),
    ],
)
def test_debian_version_ordering(old: str, new: str) -> None:
    up = diff_packages([("pkg", old, "amd64")], [("pkg", new, "amd64")])
    assert up == PackageDiff(upgraded=(PackageChange("pkg", old, new, "amd64"),))
    down = diff_packages([("pkg", new, "amd64")], [("pkg", old, "amd64")])
    assert down == PackageDiff(downgraded=(PackageChange("pkg", new, old, "amd64"),))


def test_equal_versions_spelled_differently_are_no_change() -> None:
    diff = diff_packages([("pkg", "1.0", "all")], [("pkg", "1.0-0", "all")])
    assert diff.is_empty()
    assert diff_packages([("pkg", "0:1.0", "all")], [("pkg", "1.0", "all")]).is_empty()


def test_every_kind_sorted() -> None:
    old = [
        ("zlib1g", "1:1.2.13.dfsg-1", "amd64"),
        ("hello", "1.0", "amd64"),
        ("gone", "3.0", "all"),
        ("agone", "0.1", "all"),
        ("same", "1", "all"),
        ("older", "2.0", "amd64"),
    ]
    new = [
        ("same", "1", "all"),
        ("older", "2.0~beta", "amd64"),
        ("hello", "1.1", "amd64"),
        ("zlib1g", "1:1.3", "amd64"),
        ("new", "2.0", "amd64"),
        ("anew", "1", "all"),
    ]
    diff = diff_packages(old, new)
    assert [c.name for c in diff.upgraded] == ["hello", "zlib1g"]
    assert diff.downgraded == (PackageChange("older", "2.0", "2.0~beta", "amd64"),)
    assert [c.name for c in diff.removed] == ["agone", "gone"]
    assert diff.removed[1] == PackageChange("gone", "3.0", None, "all")
    assert [c.name for c in diff.added] == ["anew", "new"]
    assert diff.added[1] == PackageChange("new", None, "2.0", "amd64")
    assert render_diff(diff) == [
        "Upgraded:",
        "  hello 1.0 -> 1.1",
        "  zlib1g 1:1.2.13.dfsg-1 -> 1:1.3",
        "Downgraded:",
        "  older 2.0 -> 2.0~beta",
        "Removed:",
        "  agone-0.1",
        "  gone-3.0",
        "Added:",
        "  anew-1",
        "  new-2.0",
    ]


def test_multiarch_same_name_is_two_packages() -> None:
    old = [("libc6", "2.36-9", "amd64"), ("libc6", "2.36-9", "i386"), ("tool", "1", "amd64")]
    new = [("libc6", "2.36-9+deb12u1", "amd64"), ("libc6", "2.36-9", "i386"), ("tool", "1", "i386")]
    diff = diff_packages(old, new)
    assert diff.upgraded == (PackageChange("libc6", "2.36-9", "2.36-9+deb12u1", "amd64"),)
    # an architecture switch is one package removed and another added
    assert diff.removed == (PackageChange("tool", "1", None, "amd64"),)
    assert diff.added == (PackageChange("tool", None, "1", "i386"),)
    assert diff.downgraded == ()
    assert render_diff(diff) == [
        "Upgraded:",
        "  libc6 2.36-9 -> 2.36-9+deb12u1",
        "Removed:",
        "  tool:amd64-1",
        "Added:",
        "  tool:i386-1",
    ]


def test_multiarch_both_upgraded_sorted_by_architecture() -> None:
    old = [("libc6", "2.36-9", "i386"), ("libc6", "2.36-9", "amd64")]
    new = [("libc6", "2.36-10", "i386"), ("libc6", "2.36-10", "amd64")]
    diff = diff_packages(old, new)
    assert [c.architecture for c in diff.upgraded] == ["amd64", "i386"]
    assert render_diff(diff)[1:] == [
        "  libc6:amd64 2.36-9 -> 2.36-10",
        "  libc6:i386 2.36-9 -> 2.36-10",
    ]


def test_empty_diff() -> None:
    pkgs = [("hello", "1.0", "amd64"), ("base-files", "12.4+deb12u5", "amd64")]
    diff = diff_packages(pkgs, list(reversed(pkgs)))
    assert diff.is_empty()
    assert diff == PackageDiff()
    assert render_diff(diff) == [NO_CHANGES] == ["No package changes."]
    assert diff_to_wire(diff) == {"added": [], "removed": [], "upgraded": [], "downgraded": []}
    assert diff_packages([], []).is_empty()


def test_inputs_are_any_iterable() -> None:
    diff = diff_packages(iter([("a", "1", "all")]), (p for p in [("a", "2", "all")]))
    assert diff.upgraded == (PackageChange("a", "1", "2", "all"),)


def test_json_shape() -> None:
    old = [("hello", "1.0", "amd64"), ("gone", "1", "all"), ("down", "2", "all")]
    new = [("hello", "1.1", "amd64"), ("new", "2", "all"), ("down", "1", "all")]
    data = diff_to_wire(diff_packages(old, new))
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "added": [
            {"name": "new", "architecture": "all", "old-version": None, "new-version": "2"},
        ],
        "removed": [
            {"name": "gone", "architecture": "all", "old-version": "1", "new-version": None},
        ],
        "upgraded": [
            {"name": "hello", "architecture": "amd64", "old-version": "1.0", "new-version": "1.1"},
        ],
        "downgraded": [
            {"name": "down", "architecture": "all", "old-version": "2", "new-version": "1"},
        ],
    }
    assert list(data) == ["added", "removed", "upgraded", "downgraded"]


def test_render_package_list_sorted() -> None:
    pkgs = [
        ("libc6", "2.36-9", "i386"),
        ("hello-aot", "1.0", "amd64"),
        ("libc6", "2.36-9", "amd64"),
        ("base-files", "12.4", "amd64"),
    ]
    assert render_package_list(pkgs) == [
        "base-files 12.4 amd64",
        "hello-aot 1.0 amd64",
        "libc6 2.36-9 amd64",
        "libc6 2.36-9 i386",
    ]
    assert render_package_list([]) == []
