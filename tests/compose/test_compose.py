"""`apt-ostree compose tree` and `compose commit`, run as a user runs them.

Every compose here runs the real pipeline (python3-apt resolution with signature checks,
mmdebstrap, postprocessing, libostree commit) against a local signed apt repository that holds
Debian's real Essential set and packages the tests build. Outcomes are checked with the
`ostree` CLI as an independent reader.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apt_ostree import keys
from apt_ostree.aptpkg.host import native_architecture
from apt_ostree.layering import LayerPlan, PlannedDeb
from apt_ostree.layering.assemble import assemble
from apt_ostree.ostree import Repo
from apt_ostree.progress import Progress
from tests.support import sysroots
from tests.support.aptrepo import AptRepo, make_gpg_key
from tests.support.debian import SUITE, fetch_debian_debs
from tests.support.debs import DebSpec, File, build_deb
from tests.support.httpd import serve_directory
from tests.support.images import copy_repo
from tests.support.sysroots import Result

pytestmark = [pytest.mark.slow]

EPOCH = "1700000000"


def cli(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return sysroots.cli(*args, env={"SOURCE_DATE_EPOCH": EPOCH, **(env or {})})


def ostree(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["ostree", f"--repo={repo}", *args], capture_output=True, text=True, check=True
    ).stdout


def bare_repo(path: Path) -> Path:
    """A bare-user repository: commits 3x faster than archive (no compression); the same
    checksums. For tests that compose several times and serve nothing."""
    subprocess.run(["ostree", "init", f"--repo={path}", "--mode=bare-user"], check=True)
    return path


def metadata(repo: Path, ref: str, key: str) -> object:
    text = ostree(repo, "show", "--print-metadata-key", key, ref).strip()
    return text


def repo_snapshot(repo: Path) -> tuple[tuple[str, ...], str]:
    """The files of a repository and its refs: what a failed compose must leave alone."""
    if not repo.exists():
        return (), ""
    files = tuple(
        sorted(
            str(p.relative_to(repo))
            for p in repo.rglob("*")
            if p.is_file() and "tmp" not in p.relative_to(repo).parts
        )
    )
    refs = ostree(repo, "refs") if (repo / "config").exists() else ""
    return files, refs


# ---------------------------------------------------------------------------------------------
# the test repository


def hello(version: str = "1.0") -> DebSpec:
    return DebSpec(
        name="hello-aot",
        version=version,
        depends="hello-aot-data",
        files={
            "/usr/bin/hello-aot": "#!/bin/sh\necho hello " + version + "\n",
            "/etc/hello-aot.conf": "greeting=hello\n",
            "/var/lib/hello-aot/state": "initial\n",
            "/opt/hello-aot/share/readme": "opt content\n",
        },
    )


TEST_DEBS = [
    hello("1.0"),
    DebSpec(name="hello-aot-data", version="1.0", files={"/usr/share/hello-aot/data": "x\n"}),
    DebSpec(name="want-alt", depends="alt-one | alt-two"),
    DebSpec(name="alt-one"),
    DebSpec(name="alt-two"),
    DebSpec(name="needs-alt-one", depends="alt-one"),
    DebSpec(name="usrlocal-pkg", files={"/usr/local/bin/tool": "#!/bin/sh\n"}),
]


@pytest.fixture(scope="session")
def essential_debs() -> list[Path]:
    return fetch_debian_debs()


@pytest.fixture(scope="module")
def repo_factory(
    tmp_path_factory: pytest.TempPathFactory, essential_debs: list[Path]
) -> Iterator[object]:
    def make(name: str = "aptrepo") -> AptRepo:
        repo = AptRepo(tmp_path_factory.mktemp(name), suite=SUITE)
        repo.add_debs(essential_debs)
        for spec in TEST_DEBS:
            repo.add(spec)
        repo.publish()
        return repo

    yield make


@pytest.fixture(scope="module")
def apt_repo(repo_factory: object) -> AptRepo:
    return repo_factory()  # type: ignore[operator, no-any-return]


@pytest.fixture(scope="module")
def cachedir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def treefile(
    directory: Path,
    repo: AptRepo,
    uri: str | None = None,
    hyphenated: dict[str, object] | None = None,
    **extra: object,
) -> Path:
    data: dict[str, object] = {
        "ref": "test/os",
        "suite": SUITE,
        "variant": "essential",
        "automatic-version-prefix": "1",
        "repos": [
            {
                "uris": uri or repo.file_uri,
                "suites": SUITE,
                "components": "main",
                "signed-by": str(repo.keyring),
            }
        ],
        "packages": ["hello-aot"],
    }
    data.update(extra)
    data.update(hyphenated or {})
    path = directory / "treefile.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def composed(
    tmp_path_factory: pytest.TempPathFactory, apt_repo: AptRepo, cachedir: Path
) -> tuple[Path, Path, Result]:
    work = tmp_path_factory.mktemp("composed")
    tf = treefile(work, apt_repo, postprocess=["#!/bin/sh\necho built > /usr/share/built-by\n"])
    repo = work / "repo"
    result = cli("compose", "tree", tf, "--repo", repo, "--cachedir", cachedir)
    assert result.returncode == 0, result.stderr
    return tf, repo, result


# ---------------------------------------------------------------------------------------------
# a compose


def test_compose_prints_summary_and_moves_ref(composed: tuple[Path, Path, Result]) -> None:
    _, repo, result = composed
    checksum = ostree(repo, "rev-parse", "test/os").strip()
    assert f"Committed {checksum}" in result.stdout
    assert "version:  1.0" in result.stdout
    assert "packages:" in result.stdout and "size:" in result.stdout
    # steps and download progress are shown while it works
    for step in ("Resolving packages", "Downloading packages", "Bootstrapping", "Committing"):
        assert step in result.stderr


def test_commit_metadata(composed: tuple[Path, Path, Result]) -> None:
    _, repo, _ = composed
    assert metadata(repo, "test/os", "version") == "'1.0'"
    packages = metadata(repo, "test/os", "aptostree.packages")
    assert "('hello-aot', '1.0', 'all')" in str(packages)
    assert "('dpkg'," in str(packages)
    inputhash = str(metadata(repo, "test/os", "aptostree.inputhash")).strip("'")
    assert len(inputhash) == 64
    flattened = ostree(repo, "show", "--print-metadata-key", "aptostree.treefile", "test/os")
    assert '"ref":"test/os"' in flattened
    ostree(repo, "fsck")  # raises when ostree finds a problem


def test_tree_layout(composed: tuple[Path, Path, Result]) -> None:
    _, repo, _ = composed
    assert ostree(repo, "cat", "test/os", "/usr/etc/hello-aot.conf") == "greeting=hello\n"
    assert ostree(repo, "cat", "test/os", "/usr/share/built-by") == "built\n"
    assert "Packages: " not in ostree(repo, "ls", "test/os", "/usr/lib/sysimage/dpkg/status")
    assert ostree(repo, "ls", "test/os", "/var").split()[-1] == "/var"  # empty
    tmpfiles = ostree(repo, "cat", "test/os", "/usr/lib/tmpfiles.d/apt-ostree-var.conf")
    assert "/var/lib/hello-aot" in tmpfiles
    root = ostree(repo, "ls", "test/os", "/")
    for link in (
        "/home -> var/home",
        "/root -> var/roothome",
        "/opt -> var/opt",
        "/ostree -> sysroot/ostree",
    ):
        assert link in root
    assert "readme" in ostree(repo, "ls", "-R", "test/os", "/usr/lib/opt")
    assert ostree(repo, "cat", "test/os", "/usr/etc/machine-id") == ""
    # no backups of the last state (status-old, shadow-): they would ship twice per upgrade
    assert "status-old" not in ostree(repo, "ls", "test/os", "/usr/lib/sysimage/dpkg")
    assert "/usr/etc/shadow-" not in ostree(repo, "ls", "test/os", "/usr/etc")
    # apt's marks: what came only as a dependency is automatic, the treefile's packages not
    states = ostree(repo, "cat", "test/os", "/usr/lib/sysimage/apt/extended_states")
    auto = {block.split("\n")[0].removeprefix("Package: ") for block in states.split("\n\n")}
    assert "Package: hello-aot-data\nArchitecture: all\nAuto-Installed: 1\n" in states
    assert "hello-aot" not in auto and "libc6" in auto  # libc6: a dependency of the essentials
    sysimage = ostree(repo, "cat", "test/os", "/usr/lib/tmpfiles.d/apt-ostree-sysimage.conf")
    assert (
        "L /var/lib/apt/extended_states - - - - ../../../usr/lib/sysimage/apt/extended_states"
        in sysimage
    )


# ---------------------------------------------------------------------------------------------
# history, no-change detection, reproducibility


def test_unchanged_recompose_makes_no_commit(
    composed: tuple[Path, Path, Result], cachedir: Path
) -> None:
    tf, repo, _ = composed
    before = repo_snapshot(repo)
    result = cli("compose", "tree", tf, "--repo", repo, "--cachedir", cachedir)
    assert result.returncode == 0, result.stderr
    assert "No changes" in result.stdout
    result = cli(
        "compose", "tree", tf, "--repo", repo, "--cachedir", cachedir, "--unchanged-exit-77"
    )
    assert result.returncode == 77
    assert repo_snapshot(repo) == before


def test_reproducible_in_two_empty_repositories(
    composed: tuple[Path, Path, Result], cachedir: Path, tmp_path: Path
) -> None:
    tf, repo, _ = composed
    other = bare_repo(tmp_path / "other")
    result = cli("compose", "tree", tf, "--repo", other, "--cachedir", cachedir)
    assert result.returncode == 0, result.stderr
    assert ostree(other, "rev-parse", "test/os") == ostree(repo, "rev-parse", "test/os")


def test_new_package_version_makes_child_commit(
    repo_factory: object, cachedir: Path, tmp_path: Path
) -> None:
    apt_repo: AptRepo = repo_factory("evolving")  # type: ignore[operator]
    tf = treefile(tmp_path, apt_repo)
    repo = bare_repo(tmp_path / "repo")
    assert cli("compose", "tree", tf, "--repo", repo, "--cachedir", cachedir).returncode == 0
    first = ostree(repo, "rev-parse", "test/os").strip()
    apt_repo.add(hello("1.1"))
    apt_repo.publish()
    result = cli("compose", "tree", tf, "--repo", repo, "--cachedir", cachedir)
    assert result.returncode == 0, result.stderr
    second = ostree(repo, "rev-parse", "test/os").strip()
    assert second != first
    assert ostree(repo, "rev-parse", "test/os^").strip() == first
    assert metadata(repo, "test/os", "version") == "'1.1'"
    assert "('hello-aot', '1.1', 'all')" in str(metadata(repo, "test/os", "aptostree.packages"))
    forced = cli("compose", "tree", tf, "--repo", repo, "--cachedir", cachedir, "--force-nocache")
    assert forced.returncode == 0 and "Committed" in forced.stdout
    assert metadata(repo, "test/os", "version") == "'1.2'"


# ---------------------------------------------------------------------------------------------
# dry run, lockfiles, excludes


def test_dry_run_prints_set_and_touches_nothing(
    apt_repo: AptRepo, cachedir: Path, tmp_path: Path
) -> None:
    result = cli(
        "compose",
        "tree",
        treefile(tmp_path, apt_repo),
        "--repo",
        tmp_path / "repo",
        "--cachedir",
        cachedir,
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    assert "hello-aot 1.0 all" in result.stdout.splitlines()
    assert any(line.startswith("dpkg ") for line in result.stdout.splitlines())
    assert not (tmp_path / "repo").exists()


def test_lockfile_pins_versions(repo_factory: object, cachedir: Path, tmp_path: Path) -> None:
    apt_repo: AptRepo = repo_factory("locked")  # type: ignore[operator]
    with serve_directory(apt_repo.path) as server:
        tf = treefile(tmp_path, apt_repo, uri=server.url)
        bare_repo(tmp_path / "repo")
        lock = tmp_path / "lock.json"
        result = cli(
            "compose",
            "tree",
            tf,
            "--repo",
            tmp_path / "repo",
            "--cachedir",
            cachedir,
            "--dry-run",
            "--write-lockfile-to",
            lock,
        )
        assert result.returncode == 0, result.stderr
        locked = json.loads(lock.read_text())["packages"]
        assert locked["hello-aot"]["version"] == "1.0"
        apt_repo.add(hello("1.1"))
        apt_repo.publish()
        result = cli(
            "compose",
            "tree",
            tf,
            "--repo",
            tmp_path / "repo",
            "--cachedir",
            cachedir,
            "--lockfile",
            lock,
        )
        assert result.returncode == 0, result.stderr
        assert "('hello-aot', '1.0', 'all')" in str(
            metadata(tmp_path / "repo", "test/os", "aptostree.packages")
        )
        # a lockfile naming a version the repository does not have
        locked["hello-aot"]["version"] = "9.9"
        lock.write_text(json.dumps({"packages": locked}))
        before = repo_snapshot(tmp_path / "repo")
        result = cli(
            "compose",
            "tree",
            tf,
            "--repo",
            tmp_path / "repo",
            "--cachedir",
            cachedir,
            "--lockfile",
            lock,
        )
        assert result.returncode == 1
        assert "hello-aot=9.9" in result.error_line
        assert repo_snapshot(tmp_path / "repo") == before


def test_exclude_picks_the_other_alternative(
    apt_repo: AptRepo, cachedir: Path, tmp_path: Path
) -> None:
    tf = treefile(
        tmp_path, apt_repo, packages=["want-alt"], hyphenated={"exclude-packages": ["alt-one"]}
    )
    result = cli(
        "compose", "tree", tf, "--repo", tmp_path / "r", "--cachedir", cachedir, "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines() if len(line.split()) == 3}
    assert "alt-two" in names and "alt-one" not in names


def test_exclude_of_a_needed_package_names_who_needs_it(
    apt_repo: AptRepo, cachedir: Path, tmp_path: Path
) -> None:
    tf = treefile(
        tmp_path, apt_repo, packages=["needs-alt-one"], hyphenated={"exclude-packages": ["alt-one"]}
    )
    result = cli(
        "compose", "tree", tf, "--repo", tmp_path / "r", "--cachedir", cachedir, "--dry-run"
    )
    assert result.returncode == 1
    assert "alt-one" in result.error_line and "needs-alt-one" in result.error_line


# ---------------------------------------------------------------------------------------------
# bad input: one error line, exit 1, the repository exactly as before


@pytest.fixture
def existing_repo(composed: tuple[Path, Path, Result]) -> Path:
    """The composed repository: each failing compose below must leave it exactly as it is."""
    return composed[1]


def _fails_cleanly(result: Result, repo: Path, before: object, *needles: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    for needle in needles:
        assert needle in result.error_line
    assert "Traceback" not in result.stderr
    assert repo_snapshot(repo) == before


def test_unknown_packages_all_named(
    apt_repo: AptRepo, existing_repo: Path, cachedir: Path, tmp_path: Path
) -> None:
    before = repo_snapshot(existing_repo)
    tf = treefile(tmp_path, apt_repo, packages=["hello-aot", "no-such-a", "no-such-b"])
    result = cli("compose", "tree", tf, "--repo", existing_repo, "--cachedir", cachedir)
    _fails_cleanly(result, existing_repo, before, "no-such-a", "no-such-b")


def test_wrong_signing_key_is_refused(
    apt_repo: AptRepo, existing_repo: Path, cachedir: Path, tmp_path: Path
) -> None:
    before = repo_snapshot(existing_repo)
    data = json.loads(treefile(tmp_path, apt_repo).read_text())
    data["repos"][0]["signed-by"] = str(make_gpg_key("stranger").keyring)  # did not sign it
    tf = tmp_path / "wrongkey.json"
    tf.write_text(json.dumps(data))
    result = cli("compose", "tree", tf, "--repo", existing_repo, "--cachedir", cachedir)
    _fails_cleanly(result, existing_repo, before, "NO_PUBKEY", "is not signed")


def test_unsigned_repository_is_refused(
    repo_factory: object, existing_repo: Path, cachedir: Path, tmp_path: Path
) -> None:
    unsigned: AptRepo = repo_factory("unsigned")  # type: ignore[operator]
    unsigned.strip_signatures()
    before = repo_snapshot(existing_repo)
    result = cli(
        "compose",
        "tree",
        treefile(tmp_path, unsigned),
        "--repo",
        existing_repo,
        "--cachedir",
        cachedir,
    )
    _fails_cleanly(result, existing_repo, before)
    assert "sign" in result.error_line.lower()


def test_unreachable_mirror(
    apt_repo: AptRepo, existing_repo: Path, cachedir: Path, tmp_path: Path
) -> None:
    with serve_directory(apt_repo.path) as server:
        url = server.url
    before = repo_snapshot(existing_repo)  # the server is stopped now
    result = cli(
        "compose",
        "tree",
        treefile(tmp_path, apt_repo, uri=url),
        "--repo",
        existing_repo,
        "--cachedir",
        tmp_path / "fresh-cache",
    )
    _fails_cleanly(result, existing_repo, before, "127.0.0.1")


def test_failing_postprocess_script(
    apt_repo: AptRepo, existing_repo: Path, cachedir: Path, tmp_path: Path
) -> None:
    before = repo_snapshot(existing_repo)
    tf = treefile(tmp_path, apt_repo, postprocess=["#!/bin/sh\necho doomed >&2\nexit 3\n"])
    result = cli("compose", "tree", tf, "--repo", existing_repo, "--cachedir", cachedir)
    _fails_cleanly(result, existing_repo, before, "postprocess")
    assert not list((cachedir / "tmp").iterdir())  # the work folder is gone too


def _mounts_under(pid: int | str, folder: Path) -> list[str]:
    """Mount points under `folder` in the mount namespace of process `pid`."""
    lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    return [m for m in (line.split()[4] for line in lines) if m.startswith(str(folder))]


def _processes_in(namespace: str) -> list[int]:
    """The processes in mount namespace `namespace` (a readlink of /proc/PID/ns/mnt)."""
    found = []
    for link in Path("/proc").glob("[0-9]*/ns/mnt"):
        with contextlib.suppress(OSError):  # gone meanwhile
            if os.readlink(link) == namespace:
                found.append(int(link.parts[2]))
    return found


def _compose_until_mounted(tf: Path, repo: Path, cache: Path) -> subprocess.Popen[str]:
    """`compose tree` started, returned once mmdebstrap has mounted /proc in the tree."""
    proc = subprocess.Popen(
        [*sysroots.APT_OSTREE, "compose", "tree", str(tf), "--repo", str(repo),
         "--cachedir", str(cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(sysroots.ROOT), "SOURCE_DATE_EPOCH": EPOCH},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not _mounts_under(proc.pid, cache / "tmp"):
            assert proc.poll() is None, f"compose ended before mounting: {proc.stderr.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "mmdebstrap mounted nothing in 300 s"
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_sigterm_during_bootstrap_leaves_nothing_behind(
    apt_repo: AptRepo, existing_repo: Path, tmp_path: Path
) -> None:
    """SIGTERM while mmdebstrap has its /proc mounted in the tree: compose stops with one
    error line, its mounts, processes and work folder go, the repository is as before."""
    before = repo_snapshot(existing_repo)
    cache = tmp_path / "cache"
    proc = _compose_until_mounted(treefile(tmp_path, apt_repo), existing_repo, cache)
    namespace = os.readlink(f"/proc/{proc.pid}/ns/mnt")
    assert namespace != os.readlink("/proc/self/ns/mnt")  # compose made its own
    try:
        proc.terminate()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "error: terminated", stderr
    assert "Traceback" not in stderr
    assert _mounts_under("self", cache) == []
    assert _processes_in(namespace) == []  # mmdebstrap and its children stopped too
    assert list((cache / "tmp").iterdir()) == []
    assert repo_snapshot(existing_repo) == before


def test_sigkilled_compose_leaves_no_mount_and_the_next_removes_its_folder(
    apt_repo: AptRepo, existing_repo: Path, tmp_path: Path
) -> None:
    """SIGKILL gives compose no chance to clean up: its tools' mounts still never reach the
    host (they were in compose's own mount namespace), and the next compose removes the
    folder it left."""
    cache = tmp_path / "cache"
    tf = treefile(tmp_path, apt_repo)
    proc = _compose_until_mounted(tf, existing_repo, cache)
    namespace = os.readlink(f"/proc/{proc.pid}/ns/mnt")
    proc.kill()
    proc.wait()
    assert _mounts_under("self", cache) == []
    # mmdebstrap, orphaned, goes on in the dead compose's namespace: stop what we started
    deadline = time.monotonic() + 60
    while orphans := _processes_in(namespace):
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.monotonic() < deadline, orphans
        time.sleep(0.2)
    [left] = list((cache / "tmp").iterdir())
    result = cli("compose", "tree", tf, "--repo", existing_repo, "--cachedir", cache, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"removed {left}, left by a compose that was killed" in result.stderr
    assert list((cache / "tmp").iterdir()) == []


def test_usr_local_content_is_refused(
    apt_repo: AptRepo, existing_repo: Path, cachedir: Path, tmp_path: Path
) -> None:
    before = repo_snapshot(existing_repo)
    tf = treefile(tmp_path, apt_repo, packages=["usrlocal-pkg"])
    result = cli("compose", "tree", tf, "--repo", existing_repo, "--cachedir", cachedir)
    _fails_cleanly(result, existing_repo, before, "/usr/local")


def test_malformed_treefile(existing_repo: Path, tmp_path: Path) -> None:
    before = repo_snapshot(existing_repo)
    tf = tmp_path / "bad.yaml"
    tf.write_text("ref: test/os\npackages: hello\n")
    result = cli("compose", "tree", tf, "--repo", existing_repo)
    _fails_cleanly(result, existing_repo, before, "bad.yaml", "packages")


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = cli("compose", "tree", "--repo", tmp_path)
    assert result.returncode == 2
    assert result.error_line.startswith("error: ")


# ---------------------------------------------------------------------------------------------
# a Debian vendor's keys: packages-ARCH, add-commit-metadata, mutate-os-release, path filters

NATIVE = native_architecture()
OTHER_ARCH = "arm64" if NATIVE != "arm64" else "amd64"


def vendor_treefile(directory: Path, repo: AptRepo, **hyphenated: object) -> Path:
    return treefile(
        directory,
        repo,
        packages=[],
        hyphenated={
            f"packages-{NATIVE}": ["hello-aot"],
            f"packages-{OTHER_ARCH}": ["no-such-package-aot"],  # never resolved here
            "automatic-version-prefix": "12.2024",
            "mutate-os-release": "12",
            "add-commit-metadata": {
                "com.example.build": 42,
                "com.example.supported": True,
                "com.example.channel": "treefile",
            },
            "documentation": False,
            "install-langs": ["de", "pt_BR"],
            **hyphenated,
        },
    )


@pytest.fixture(scope="module")
def vendor_composed(
    tmp_path_factory: pytest.TempPathFactory, apt_repo: AptRepo, cachedir: Path
) -> tuple[Path, Path]:
    """The vendor treefile composed into a bare repository (assemble layers onto it)."""
    work = tmp_path_factory.mktemp("vendor")
    repo = work / "repo"
    subprocess.run(["ostree", "init", f"--repo={repo}", "--mode=bare"], check=True)
    result = cli(
        "compose", "tree", vendor_treefile(work, apt_repo), "--repo", repo,
        "--cachedir", cachedir, "--add-metadata-string", "com.example.channel=cli",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mutate-os-release: 12 -> 12.2024.0" in result.stderr
    return work, repo


def tree_files(repo: Path, rev: str, path: str) -> dict[str, str]:
    """Path -> type (`-` file, `d` folder, `l` symlink) of everything under `path`."""
    found = {}
    for line in ostree(repo, "ls", "-R", rev, path).splitlines():
        fields = line.split()
        found[fields[4]] = fields[0][0]
    return found


def test_vendor_keys_in_the_composed_tree(vendor_composed: tuple[Path, Path]) -> None:
    _, repo = vendor_composed
    assert metadata(repo, "test/os", "version") == "'12.2024.0'"
    assert metadata(repo, "test/os", "com.example.build") == "int64 42"
    assert metadata(repo, "test/os", "com.example.supported") == "true"
    assert metadata(repo, "test/os", "com.example.channel") == "'cli'"  # the command line wins
    packages = str(metadata(repo, "test/os", "aptostree.packages"))
    assert "('hello-aot', '1.0', 'all')" in packages
    os_release = ostree(repo, "cat", "test/os", "/usr/lib/os-release")
    assert 'PRETTY_NAME="Debian GNU/Linux 12.2024.0 (bookworm)"\n' in os_release
    assert 'VERSION="12.2024.0 (bookworm)"\n' in os_release
    assert 'VERSION_ID="12"\n' in os_release
    assert os_release.endswith("OSTREE_VERSION='12.2024.0'\n")
    assert "/usr/etc/os-release -> ../usr/lib/os-release" in ostree(
        repo, "ls", "test/os", "/usr/etc"
    )


def test_documentation_and_languages_are_filtered(vendor_composed: tuple[Path, Path]) -> None:
    _, repo = vendor_composed
    docs = tree_files(repo, "test/os", "/usr/share/doc")
    assert "/usr/share/doc/dpkg/copyright" in docs
    assert not [p for p in docs if "changelog" in p]
    folders = [p for p, kind in docs.items() if kind == "d" and p.count("/") == 4]
    assert len(folders) > 20
    assert [f for f in folders if f + "/copyright" not in docs] == []  # Debian Policy 12.5
    assert [p for p, kind in docs.items() if kind == "-" and not p.endswith("/copyright")] == []
    assert [
        p for p, kind in tree_files(repo, "test/os", "/usr/share/man").items() if kind == "-"
    ] == []
    locale = tree_files(repo, "test/os", "/usr/share/locale")
    for kept in ("de", "pt_BR", "pt"):
        assert f"/usr/share/locale/{kept}/LC_MESSAGES/dpkg.mo" in locale
    assert not [
        p for p in locale if p.startswith(("/usr/share/locale/fr/", "/usr/share/locale/nl/"))
    ]
    # the rules stay in the image: what a client layers later is filtered the same way
    rules = ostree(repo, "cat", "test/os", "/usr/etc/dpkg/dpkg.cfg.d/99mmdebstrap")
    assert "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n" in rules


def test_layered_packages_follow_the_images_path_filters(
    vendor_composed: tuple[Path, Path], tmp_path: Path
) -> None:
    """A package a client layers is unpacked by dpkg with the image's /etc, whose
    dpkg.cfg.d has the treefile's filters: its changelog and French translation stay out."""
    _, composed_repo = vendor_composed
    repo = copy_repo(composed_repo, tmp_path / "repo")
    base = ostree(repo, "rev-parse", "test/os").strip()
    spec = DebSpec(
        name="docs-aot",
        files={
            "/usr/bin/docs-aot": File("#!/bin/sh\n", 0o755),
            "/usr/share/doc/docs-aot/copyright": "licence\n",
            "/usr/share/doc/docs-aot/changelog.gz": "changes\n",
            "/usr/share/man/man1/docs-aot.1.gz": "manual\n",
            "/usr/share/locale/de/LC_MESSAGES/docs-aot.mo": "de\n",
            "/usr/share/locale/fr/LC_MESSAGES/docs-aot.mo": "fr\n",
        },
    )
    deb = PlannedDeb(spec.name, spec.version, spec.architecture, build_deb(spec, tmp_path))
    (repo / "tmp").mkdir(exist_ok=True)
    layered = assemble(
        Repo.open(repo),
        base,
        LayerPlan(install=(deb,)),
        workdir=Path(tempfile.mkdtemp(dir=repo / "tmp")),
        metadata={keys.CLIENTLAYER: True, keys.BASE_CHECKSUM: base},
        progress=Progress(),
    )
    added = {line.split()[1] for line in ostree(repo, "diff", base, layered).splitlines()}
    assert {
        "/usr/bin/docs-aot",
        "/usr/share/doc/docs-aot/copyright",
        "/usr/share/locale/de/LC_MESSAGES/docs-aot.mo",
    } <= added
    for dropped in ("changelog.gz", "docs-aot.1.gz", "fr/LC_MESSAGES"):
        assert not [p for p in added if dropped in p], added


def test_mutate_os_release_without_its_base_fails_cleanly(
    vendor_composed: tuple[Path, Path], apt_repo: AptRepo, cachedir: Path, tmp_path: Path
) -> None:
    _, repo = vendor_composed
    before = repo_snapshot(repo)
    tf = vendor_treefile(tmp_path, apt_repo, **{"mutate-os-release": "13"})
    result = cli("compose", "tree", tf, "--repo", repo, "--cachedir", cachedir)
    _fails_cleanly(result, repo, before, "mutate-os-release", "'13'", 'VERSION="12 (bookworm)"')
    # a treefile error: one line with its position, before anything is made
    dup = tmp_path / "dup.yaml"
    dup.write_text("ref: test/os\npackages: [hello-aot]\npackages: [dpkg]\n")
    result = cli("compose", "tree", dup, "--repo", repo, "--cachedir", cachedir)
    _fails_cleanly(result, repo, before, f"{dup}:3:1: duplicate key 'packages' (first at line 2)")


# ---------------------------------------------------------------------------------------------
# compose commit: a tree made by another tool


def test_compose_commit_folder_and_tarball(apt_repo: AptRepo, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    sources = tmp_path / "test.sources"
    # mmdebstrap wants copy:// for a folder outside the chroot
    sources.write_text(apt_repo.deb822_source(f"copy://{apt_repo.path}"))
    subprocess.run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=essential",
            "--quiet",
            "--include=hello-aot",
            SUITE,
            str(rootfs),
            str(sources),
        ],
        check=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH},
    )
    repo = tmp_path / "repo"
    subprocess.run(["ostree", "init", f"--repo={repo}", "--mode=archive"], check=True)
    result = cli(
        "compose",
        "commit",
        "--repo",
        repo,
        "--branch",
        "foreign/os",
        "--add-metadata-string",
        "version=7",
        rootfs,
    )
    assert result.returncode == 0, result.stderr
    assert metadata(repo, "foreign/os", "version") == "'7'"
    assert "hello-aot" in str(metadata(repo, "foreign/os", "aptostree.packages"))
    assert ostree(repo, "cat", "foreign/os", "/usr/etc/hello-aot.conf") == "greeting=hello\n"
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    result = cli("compose", "commit", "--repo", repo, "--branch", "foreign/os", tarball)
    assert result.returncode == 0, result.stderr
    assert ostree(repo, "rev-parse", "foreign/os^").strip()  # second commit has a parent
    # no repository: nothing made, one clear line
    result = cli("compose", "commit", "--repo", tmp_path / "nope", "--branch", "x", rootfs)
    assert result.returncode == 1 and "nope" in result.error_line
    assert not (tmp_path / "nope").exists()
