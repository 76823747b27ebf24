"""apply-live and usroverlay off a booted system: the refusals, and the copy of a commit diff
into a live root (folders stand in for / here; tests/vm/test_live.py does it on a real boot)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from apt_ostree import ostree
from apt_ostree.errors import LiveError
from apt_ostree.origin import Origin
from apt_ostree.run import run
from apt_ostree.system import live, live_state
from apt_ostree.system.results import PackageChange, PackageDiff
from tests.deploy import conftest as deploy
from tests.support.sysroots import cli

# the deploy tests' empty folder sysroot (stateroot "test")
sysroot = deploy.sysroot


def _tree(path: Path) -> list[tuple[str, str]]:
    return sorted(
        (str(p.relative_to(path)), os.readlink(p) if p.is_symlink() else oct(p.stat().st_mode))
        for p in path.rglob("*")
    )


@pytest.mark.parametrize(
    "argv", [["apply-live"], ["apply-live", "--allow-replacement"], ["usroverlay"]]
)
def test_a_folder_sysroot_is_refused_and_left_alone(sysroot: Path, argv: list[str]) -> None:
    before = _tree(sysroot)
    result = cli(*argv, "--sysroot", sysroot, "--unchanged-exit-77")
    assert result.returncode == 1, result.stderr
    assert result.error_line == (
        f"error: {argv[0]} changes the running system: {sysroot} is not a booted OSTree system"
        " (a sysroot in a folder boots nothing)"
    )
    assert _tree(sysroot) == before


def test_usage_errors() -> None:
    both = cli("install", "--apply-live", "--reboot", "x", "--sysroot", "/nonexistent")
    assert both.returncode == 2
    assert "--apply-live and --reboot exclude each other" in both.error_line


# ---- the diff and its copy, on folders ----


def _commit(repo: Path, branch: str, tree: Path) -> str:
    subprocess.run(
        ["ostree", f"--repo={repo}", "commit", "-b", branch, f"--tree=dir={tree}"],
        check=True,
        capture_output=True,
    )
    return ostree.Repo.open(repo).resolve_ref(branch) or ""


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path, ostree.TreeDiff]:
    """Two trees (old: the booted commit, new: the pending one) and their diff from a repo."""
    old, new = tmp_path / "old", tmp_path / "new"
    for d in ("usr/bin", "usr/share/doc/a", "usr/etc", "usr/lib/sysimage/dpkg"):
        (old / d).mkdir(parents=True)
    (old / "usr/bin/a").write_text("a\n")
    (old / "usr/bin/gone").write_text("gone\n")
    (old / "usr/share/doc/a/README").write_text("old\n")
    (old / "usr/etc/a.conf").write_text("default\n")
    (old / "usr/lib/sysimage/dpkg/status").write_text("Package: a\n")
    subprocess.run(["cp", "-a", str(old), str(new)], check=True)
    (new / "usr/bin/gone").unlink()
    (new / "usr/bin/b").write_text("#!/bin/sh\necho b\n")
    (new / "usr/bin/b").chmod(0o755)
    os.symlink("b", new / "usr/bin/b-link")
    (new / "usr/share/doc/b").mkdir()
    (new / "usr/share/doc/b/README").write_text("b\n")
    (new / "usr/share/doc/a/README").write_text("new\n")
    (new / "usr/etc/b.conf").write_text("b default\n")
    (new / "usr/etc/a.conf").write_text("new default\n")
    (new / "usr/lib/sysimage/dpkg/status").write_text("Package: a\n\nPackage: b\n")
    repo = tmp_path / "repo"
    run(["ostree", f"--repo={repo}", "init", "--mode=bare-user"])
    diff = ostree.Repo.open(repo).diff_commits(_commit(repo, "old", old), _commit(repo, "new", new))
    return old, new, diff


def test_the_diff_lists_additions_parents_first_and_changes(
    trees: tuple[Path, Path, ostree.TreeDiff],
) -> None:
    _, _, diff = trees
    assert diff.added == (
        "usr/bin/b",
        "usr/bin/b-link",
        "usr/etc/b.conf",
        "usr/share/doc/b",
        "usr/share/doc/b/README",
    )
    assert diff.modified == (
        "usr/etc/a.conf",
        "usr/lib/sysimage/dpkg/status",
        "usr/share/doc/a/README",
    )
    assert diff.removed == ("usr/bin/gone",)


def test_changed_files_need_allow_replacement(
    trees: tuple[Path, Path, ostree.TreeDiff],
) -> None:
    _, _, diff = trees
    with pytest.raises(LiveError) as e:
        live._check_additions(PackageDiff(), diff)
    assert str(e.value) == (
        "3 files would be replaced or removed (/usr/etc/a.conf, /usr/share/doc/a/README,"
        " /usr/bin/gone); only additions are applied live without --allow-replacement"
    )
    upgraded = PackageDiff(upgraded=(PackageChange("a", "1.0", "2.0", "amd64"),))
    with pytest.raises(LiveError, match=r"packages would change or go: a 1.0 -> 2.0;"):
        live._check_additions(upgraded, diff)


def _live_root(old: Path, tmp_path: Path) -> Path:
    """A running system's root: the old tree, with /etc/a.conf as shipped (so it follows a
    replacement of its default)."""
    root = tmp_path / "live"
    subprocess.run(["cp", "-a", str(old), str(root)], check=True)
    (root / "etc").mkdir()
    (root / "etc/a.conf").write_text("default\n")
    return root


def test_additions_reach_the_live_root_and_etc_by_the_three_way_rule(
    trees: tuple[Path, Path, ostree.TreeDiff], tmp_path: Path
) -> None:
    old, new, diff = trees
    root = _live_root(old, tmp_path)
    (root / "etc/b.conf").write_text("local\n")  # the machine's own: kept
    additions = ostree.TreeDiff(diff.added, diff.modified, diff.removed)
    assert live.etc_changes(additions, new, root, replace=False) == []
    live.apply_tree_diff(additions, new, root, replace=False)
    assert (root / "usr/bin/b").read_text() == "#!/bin/sh\necho b\n"
    assert (root / "usr/bin/b").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "usr/bin/b-link") == "b"
    assert (root / "usr/share/doc/b/README").read_text() == "b\n"
    assert (root / "usr/lib/sysimage/dpkg/status").read_text().endswith("Package: b\n")
    assert (root / "usr/share/doc/a/README").read_text() == "old\n"  # not replaced
    assert (root / "usr/bin/gone").exists()
    assert (root / "etc/b.conf").read_text() == "local\n"
    assert not list(root.rglob(".*.apt-ostree-live"))


def test_allow_replacement_replaces_and_removes(
    trees: tuple[Path, Path, ostree.TreeDiff], tmp_path: Path
) -> None:
    old, new, diff = trees
    root = _live_root(old, tmp_path)
    assert live.etc_changes(diff, new, root, replace=True) == ["/etc/b.conf", "/etc/a.conf"]
    live.apply_tree_diff(diff, new, root, replace=True)
    assert (root / "etc/a.conf").read_text() == "new default\n"
    assert (root / "etc/b.conf").read_text() == "b default\n"
    assert (root / "usr/share/doc/a/README").read_text() == "new\n"
    assert not (root / "usr/bin/gone").exists()
    assert _tree(root / "usr") == _tree(new / "usr")


def test_live_state_belongs_to_one_boot_of_one_deployment(tmp_path: Path) -> None:
    booted = ostree.Deployment(
        "test", "a" * 64, 0, 1, True, False, False, "transient", "", (), tmp_path
    )
    path = tmp_path / "live.json"
    assert live_state.read_state(booted, path) is None
    state = live_state.LiveState(booted.id, booted.checksum, "b" * 64, False)
    live_state.write_state(state, path)
    assert live_state.read_state(booted, path) == state
    assert json.loads(path.read_text())["commit"] == "b" * 64
    other = ostree.Deployment("test", "c" * 64, 0, 0, True, False, False, "none", "", (), tmp_path)
    assert live_state.read_state(other, path) is None
    assert live_state.read_state(None, path) is None


def test_a_hotfix_unlock_is_not_carried_into_new_deployments() -> None:
    text = "[origin]\nrefspec=origin:test/os\nunlocked=hotfix\n\n[other]\nkey=kept\n"
    again = Origin.parse(text).to_text()
    assert "unlocked" not in again and "key=kept" in again
