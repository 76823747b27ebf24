"""`upgrade --verify`'s container boot (apt_ostree/boot/verify.py) on the real tree of the
minimal example with apt-ostree inside: a good tree passes, and a masked required unit, a
failing required.d check, a failing required unit, a boot that goes to emergency mode and one
that never finishes are each reported by name. The tree is never written to."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_ostree.boot import verify
from apt_ostree.boot.health import Kind
from apt_ostree.errors import CommandError, StateError
from tests.support.sysroots import Recorder
from tests.vm.conftest import ComposedRepo

TIMEOUT = 120.0  # a boot with its checks takes seconds here


@pytest.fixture(scope="module")
def checkout(apt_ostree_repo: ComposedRepo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The commit checked out as root would (owners, modes), with the image's /etc (usr/etc)
    copied to etc, where a deployment has its merged /etc. Never written to: see `tree`."""
    dest = tmp_path_factory.mktemp("verify") / "checkout"
    subprocess.run(
        ["ostree", f"--repo={apt_ostree_repo.path}", "checkout", apt_ostree_repo.checksum, dest],
        check=True,
    )
    subprocess.run(["cp", "-a", dest / "usr/etc", dest / "etc"], check=True)
    return dest


@pytest.fixture
def tree(checkout: Path, tmp_path: Path) -> Path:
    """A hard-linked copy of `checkout` to add files to (never change a file in place)."""
    dest = tmp_path / "tree"
    subprocess.run(["cp", "-al", checkout, dest], check=True)
    return dest


@pytest.fixture
def immutable(tree: Path) -> Iterator[Path]:
    """`tree` made immutable as libostree makes a deployment's root (chattr +i)."""
    subprocess.run(["chattr", "+i", tree], check=True)
    try:
        yield tree
    finally:
        subprocess.run(["chattr", "-i", tree], check=True)


def listing(root: Path) -> list[tuple[str, int, int, int, int, int, int]]:
    """Every path under `root` with its inode, mode, owner, size and times."""
    rows = []
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            rows.append((path, st.st_ino, st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns,
                         st.st_ctime_ns))  # fmt: skip
    return sorted(rows)


def add(tree: Path, path: str, text: str, mode: int = 0o644) -> None:
    """A new file in `tree` (the copy's folders are its own; its files are shared)."""
    target = tree / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def mask(tree: Path, unit: str) -> None:
    (tree / "etc/systemd/system" / unit).symlink_to("/dev/null")


def enable(tree: Path, unit: str, text: str) -> None:
    add(tree, f"etc/systemd/system/{unit}", text)
    (tree / "etc/systemd/system/multi-user.target.wants" / unit).symlink_to(f"../{unit}")


@pytest.mark.network
@pytest.mark.slow
def test_a_good_tree_passes_and_is_not_written_to(immutable: Path) -> None:
    before = listing(immutable)
    progress = Recorder()
    report = verify.verify_tree(immutable, timeout=TIMEOUT, progress=progress)
    assert report.ok, report.reason()
    assert report.reason() == ""
    names = [r.name for r in report.results]
    assert names[:2] == ["boot", "required-units"] and names[-1] == "failed-units"
    assert progress.steps == [f"Verifying {immutable} in a container"]
    assert progress.messages[0] == "booting the tree with systemd-nspawn (userspace only)"
    assert progress.messages[1].startswith("running the health checks")
    assert progress.messages[2].startswith("result: all 2 required checks passed")
    assert listing(immutable) == before


@pytest.mark.network
@pytest.mark.slow
def test_a_masked_required_unit_fails(tree: Path) -> None:
    mask(tree, "systemd-journald.service")
    add(tree, "etc/apt-ostree/required-units", "# the journal\nsystemd-journald.service\n")
    report = verify.verify_tree(tree, timeout=TIMEOUT, progress=Recorder())
    assert not report.ok
    # the unit and its state (health.py may add the exit status of `systemctl is-active`)
    assert report.reason().startswith(
        "required check required-units failed: systemd-journald.service is inactive"
    )


@pytest.mark.network
@pytest.mark.slow
def test_a_failing_required_check_fails(tree: Path) -> None:
    add(
        tree,
        "etc/apt-ostree/health.d/required.d/50-space",
        "#!/bin/sh\necho 'no space'\nexit 1\n",
        0o755,
    )
    add(tree, "etc/apt-ostree/health.d/wanted.d/50-fine", "#!/bin/sh\nexit 0\n", 0o755)
    progress = Recorder()
    report = verify.verify_tree(tree, timeout=TIMEOUT, progress=progress)
    assert not report.ok
    # the check's name and its last line of output (health.py words the exit status)
    assert report.reason().startswith("required check 50-space failed: no space")
    assert [r.name for r in report.failures()] == ["50-space"]
    assert progress.messages[-1] == f"result: {report.reason()}"


@pytest.mark.network
@pytest.mark.slow
def test_a_required_unit_that_fails_to_start_fails(tree: Path) -> None:
    enable(tree, "broken.service", "[Service]\nExecStart=/bin/false\n")
    enable(tree, "other.service", "[Service]\nExecStart=/bin/false\n")  # not required
    add(tree, "etc/apt-ostree/required-units", "broken.service\n")
    report = verify.verify_tree(tree, timeout=TIMEOUT, progress=Recorder())
    assert report.reason().startswith(
        "required check required-units failed: broken.service is failed"
    )
    wanted = report.failures(Kind.WANTED)
    assert [r.name for r in wanted] == ["failed-units"]
    assert "other.service failed" in wanted[0].output


@pytest.mark.network
@pytest.mark.slow
def test_a_boot_into_emergency_mode_fails(tree: Path) -> None:
    (tree / "etc/fstab").unlink()  # shared with the checkout: replaced, not changed
    add(tree, "etc/fstab", "tmpfs /mnt/data tmpfs no_such_option 0 0\n")
    report = verify.verify_tree(tree, timeout=TIMEOUT, progress=Recorder())
    assert report.reason() == (
        "required check boot failed: the boot did not reach multi-user.target"
        " (it is inactive; failed units: var-mnt-data.mount)"
    )


@pytest.mark.network
@pytest.mark.slow
def test_a_boot_that_does_not_finish_in_time_fails_and_leaves_nothing_running(
    tree: Path,
) -> None:
    enable(tree, "hang.service", "[Unit]\nBefore=multi-user.target\n[Service]\nType=oneshot\n"
           "ExecStart=/bin/sleep 7177\nTimeoutStartSec=infinity\n")  # fmt: skip
    report = verify.verify_tree(tree, timeout=15, progress=Recorder())
    assert report.reason().startswith(
        "required check boot failed: the boot and checks did not finish within 15 s"
    )
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"7177" in _read(p)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile
        return b""


# ---- the tool's own errors: no boot needed ----


def test_a_tree_without_systemd_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    with pytest.raises(
        StateError, match="has no usr/lib/systemd/systemd: the tree cannot be booted"
    ):
        verify.verify_tree(tmp_path, timeout=TIMEOUT, progress=Recorder())


def test_a_checkout_without_etc_is_refused(tmp_path: Path) -> None:
    add(tmp_path, "usr/lib/systemd/systemd", "", 0o755)
    with pytest.raises(StateError, match="has no etc: verify a deployment's root"):
        verify.verify_tree(tmp_path, timeout=TIMEOUT, progress=Recorder())


def test_without_nspawn_the_error_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "NSPAWN", "systemd-nspawn-not-here")
    with pytest.raises(
        CommandError, match=r"is not installed \(Debian package systemd-container\)"
    ):
        verify.verify_tree(tmp_path, timeout=TIMEOUT, progress=Recorder())


def test_the_unit_is_injected_for_every_end_of_a_boot(tmp_path: Path) -> None:
    units, io = verify.write_injection(tmp_path)
    for target in ("multi-user.target", "emergency.target", "rescue.target"):
        link = units / f"{target}.wants" / verify.UNIT
        assert link.resolve() == units / verify.UNIT
    assert "SuccessAction=poweroff-force" in (units / verify.UNIT).read_text()
    assert (io / "check").is_file()


@pytest.mark.parametrize("keep_unit", [True, False])
def test_the_tree_is_booted_behind_an_overlay(tmp_path: Path, keep_unit: bool) -> None:
    argv = verify.nspawn_argv(tmp_path, tmp_path / "u", tmp_path / "io", machine="m",
                              keep_unit=keep_unit)  # fmt: skip
    assert shutil.which(argv[0]) is not None
    assert {"--boot", "--volatile=overlay", "--tmpfs=/var", "--register=no"} <= set(argv)
    assert f"--bind-ro={tmp_path / 'u'}:/run/systemd/system" in argv
    assert ("--keep-unit" in argv) is keep_unit
