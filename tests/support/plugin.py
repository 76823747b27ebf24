"""pytest fixtures every test may use: .deb builder, signed apt repository, loopback HTTP; and
the split of the suite between pytest-xdist's two workers.

tools/test runs `pytest -n 2 --dist loadgroup`: every test is in one of two groups (by its
path), and each group runs whole on one worker, in the usual order. VM_GROUP holds the tests
of the image with apt-ostree inside (tests/vm/conftest.py's `apt_ostree_repo`), most of which
boot it under qemu (one vCPU: about one core); HOST_GROUP everything else, the BIOS GRUB boot
of the Debian 12 example (`bookworm_example`) included. Measured 2026-12-04 from a clean clone:
host 1927 s, vm 1671 s with the GRUB tests (about 190 s) on the host's side, before a guest's
reboot stopped waiting up to a minute for its timer. With the Secure Boot and trial boots
(2026-12-07, about 15 min of guests) the GRUB boot of the Debian 12 example runs on the
host's side again. A session fixture is made once per worker, so each expensive one is used
by one group only: nothing is composed twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

from tests.support.aptrepo import AptRepo, GpgKey, shared_gpg_key
from tests.support.debian import BOOKWORM_EXAMPLE, EXAMPLES, compose_from_archive
from tests.support.debs import EPOCH, DebSpec, build_deb
from tests.support.httpd import Server, serve_directory
from tests.support.images import Images, compose_images

VM_GROUP = "vm"
HOST_GROUP = "host"
VM_GROUP_TESTS = (
    "tests/vm/test_boot.py",
    "tests/vm/test_image.py",
    "tests/vm/test_live.py",
    "tests/vm/test_secureboot.py",
    "tests/vm/test_trial.py",
    # the same image's tree in systemd-nspawn: on the worker that composed it (each worker
    # signs the image's apt repository with a key of its own, so the other would compose again)
    "tests/boot/test_verify.py",
)


def xdist_group(nodeid: str) -> str:
    return VM_GROUP if nodeid.startswith(VM_GROUP_TESTS) else HOST_GROUP


class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no types
    """xdist's scheduling by scope, the scope of a test being its `xdist_group`: each of the two
    groups goes whole to one worker. (Not xdist's own loadgroup: that one marks the groups by
    rewriting Item._nodeid, which pytest 9 no longer reads.)"""

    def _split_scope(self, nodeid: str) -> str:
        return xdist_group(nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> GroupScheduling | None:
    """`--dist loadgroup` schedules by `xdist_group`; other modes are xdist's own."""
    return GroupScheduling(config, log) if config.getvalue("dist") == "loadgroup" else None


_GROUP_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up each group's time (setup, call and teardown of its tests): with one worker
    per group, the longer sum is about the suite's wall time."""
    group = xdist_group(report.nodeid)
    _GROUP_SECONDS[group] = _GROUP_SECONDS.get(group, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _GROUP_SECONDS:
        times = ", ".join(f"{g} {s:.0f} s" for g, s in sorted(_GROUP_SECONDS.items()))
        terminalreporter.write_line(f"time of the tests by xdist group: {times}")


@pytest.fixture(scope="session")
def gpg_test_key() -> GpgKey:
    """The session's repository signing key (the default key of every AptRepo)."""
    return shared_gpg_key()


@pytest.fixture
def deb_builder(tmp_path: Path) -> Callable[[DebSpec], Path]:
    """Build a DebSpec into tmp_path/debs and return the .deb's path."""
    out = tmp_path / "debs"
    return lambda spec: build_deb(spec, out)


@pytest.fixture
def apt_repo(tmp_path: Path, gpg_test_key: GpgKey) -> AptRepo:
    """An empty, published, signed repository (suite "stable", component "main", amd64)."""
    repo = AptRepo(tmp_path / "aptrepo", key=gpg_test_key)
    repo.publish()
    return repo


@pytest.fixture
def http_server() -> Iterator[Callable[[Path], Server]]:
    """Start a loopback HTTP server for a folder; every server is stopped at teardown."""
    with ExitStack() as stack:
        yield lambda directory: stack.enter_context(serve_directory(directory))


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    """test/os 1.0 and 1.1 and test/other 2.0, signed, in an archive repository with a
    summary (see tests/support/images.py). Composed once per session (about 2 minutes)."""
    return compose_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def minimal_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/minimal.yaml (Debian 13) composed from the Debian archive into a fresh archive
    repository (so its first version, 13.0), once per session: tests/compose/
    test_compose_debian.py checks the tree and runs the client's verbs on it. Read it, never
    compose into it."""
    return _compose_example(tmp_path_factory, EXAMPLES / "minimal.yaml")


@pytest.fixture(scope="session")
def bookworm_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/minimal-bookworm.yaml (Debian 12) composed as `minimal_example`:
    tests/vm/test_grub.py makes a GRUB image of it and boots it (on the VM group's worker).
    Read it, never compose into it."""
    return _compose_example(tmp_path_factory, BOOKWORM_EXAMPLE)


def _compose_example(tmp_path_factory: pytest.TempPathFactory, treefile: Path) -> Path:
    repo = tmp_path_factory.mktemp(treefile.stem) / "repo"
    compose_from_archive(treefile, repo, env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    return repo
