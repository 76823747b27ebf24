"""Layered commits made by `assemble` on the composed test image (test/os 1.0).

Each test layers real .debs onto a bare copy of the image (the sysroot's repository mode)
and checks what `ostree` itself reports: the diff against the base, files, metadata, fsck,
and that a failure leaves no commit, no mount and no process behind.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apt_ostree import keys, ostree
from apt_ostree.compose import postprocess
from apt_ostree.errors import LayeringError
from apt_ostree.layering import LayerPlan, PlannedDeb
from apt_ostree.layering.assemble import (
    AssembleOptions,
    _var_skeleton,
    assemble,
    failure_message,
    file_owners,
    last_script,
)
from apt_ostree.progress import Progress
from apt_ostree.run import run
from tests.support.debian import fetch_debian_debs
from tests.support.debs import DebSpec, File, build_deb
from tests.support.images import Images, copy_repo

STATUS = "/usr/lib/sysimage/dpkg/status"


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def bare_base(
    images: Images,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str]:
    """test/os 1.0 in a bare repository, as in a sysroot (pulled once per module)."""
    path = tmp_path_factory.mktemp("bare") / "repo"
    checksum = images.checksum("1.0")
    run(["ostree", "init", "--mode=bare", f"--repo={path}"])
    run(["ostree", f"--repo={path}", "pull-local", images.repo, checksum])
    return path, checksum


@dataclass
class Repo:
    path: Path
    base: str
    repo: ostree.Repo
    debs: Path

    def ostree(self, *args: str) -> str:
        return run(["ostree", f"--repo={self.path}", *args]).stdout

    def commits(self) -> set[str]:
        return {p.name for p in (self.path / "objects").glob("*/*.commit")}

    def deb(self, spec: DebSpec) -> PlannedDeb:
        path = build_deb(spec, self.debs)
        return PlannedDeb(spec.name, spec.version, spec.architecture, path)

    def layer(
        self,
        *specs: DebSpec,
        remove: Sequence[str] = (),
        extra: Sequence[PlannedDeb] = (),
        metadata: dict[str, Any] | None = None,
        timeout: float = 600.0,
    ) -> str:
        plan = LayerPlan(install=(*extra, *map(self.deb, specs)), remove=tuple(remove))
        workdir = Path(tempfile.mkdtemp(prefix="apt-ostree-test-", dir=self.path / "tmp"))
        try:
            return assemble(
                self.repo,
                self.base,
                plan,
                workdir=workdir,
                metadata=metadata or {keys.CLIENTLAYER: True, keys.BASE_CHECKSUM: self.base},
                progress=Progress(),
                options=AssembleOptions(script_timeout=timeout),
            )
        finally:
            leftovers = sorted(p.name for p in workdir.iterdir())
            os.rmdir(workdir)
            assert not leftovers, f"assemble left {leftovers} in its workdir"

    def diff(self, checksum: str) -> dict[str, str]:
        lines = self.ostree("diff", self.base, checksum).splitlines()
        return {line.split()[1]: line.split()[0] for line in lines}

    def cat(self, checksum: str, path: str) -> str:
        return self.ostree("cat", checksum, path)

    def status(self, checksum: str) -> dict[str, str]:
        """Package -> Status of the commit's dpkg database."""
        found = {}
        for stanza in self.cat(checksum, STATUS).split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line[:40])
            if "Package" in fields:
                found[fields["Package"]] = fields.get("Status", "")
        return found


@pytest.fixture
def repo(bare_base: tuple[Path, str], tmp_path: Path) -> Iterator[Repo]:
    """A copy of the bare base repository for one test (hard links: cheap)."""
    path = copy_repo(bare_base[0], tmp_path / "repo")
    yield Repo(path, bare_base[1], ostree.Repo.open(path), tmp_path / "debs")
    mounts = run(["findmnt", "-rn", "-o", "TARGET"]).stdout.split()
    assert not [m for m in mounts if m.startswith(str(tmp_path))], "left mounted"


def assert_untouched(repo: Repo, commits: set[str]) -> None:
    """A failed layering: no new commit, no ref, and the repository checks out."""
    assert repo.commits() == commits
    assert repo.ostree("refs").split() == []
    repo.ostree("fsck")


# ---------------------------------------------------------------------------------------------
# packages

APP = DebSpec(
    name="app-aot",
    depends="libapp-aot",
    files={
        "/usr/bin/app-aot": File("#!/bin/sh\necho app\n", 0o755),
        "/etc/app-aot.conf": "colour=blue\n",
    },
)
LIBAPP = DebSpec(name="libapp-aot", files={"/usr/lib/libapp-aot.so.1": "library\n"})


def script_deb(name: str, *, preinst: str = "", postinst: str = "") -> DebSpec:
    files = {f"/usr/share/{name}/marker": "x\n"}
    return DebSpec(name=name, files=files, preinst=preinst, postinst=postinst)


# ---------------------------------------------------------------------------------------------
# layering that works


@pytest.mark.slow
def test_layers_a_package_and_its_dependency(repo: Repo) -> None:
    metadata = {
        keys.CLIENTLAYER: True,
        keys.BASE_CHECKSUM: repo.base,
        keys.REQUESTED_PACKAGES: ["app-aot"],
        keys.VERSION: "1.0",
    }
    start = time.monotonic()
    checksum = repo.layer(APP, LIBAPP, metadata=metadata)
    print(f"layering 2 small packages: {time.monotonic() - start:.2f} s")

    diff = repo.diff(checksum)
    layer_files = {"/usr/bin/app-aot", "/usr/etc/app-aot.conf", "/usr/lib/libapp-aot.so.1"}
    assert {p: diff[p] for p in layer_files} == dict.fromkeys(layer_files, "A")
    assert diff[STATUS] == "M"
    others = set(diff) - layer_files - {STATUS}
    assert others and all(p.startswith("/usr/lib/sysimage/dpkg/info/") for p in others), others
    assert all(diff[p] == "A" for p in others)

    assert repo.cat(checksum, "/usr/bin/app-aot") == "#!/bin/sh\necho app\n"
    assert "-00755 0 0" in repo.ostree("ls", checksum, "/usr/bin/app-aot")
    status = repo.status(checksum)
    assert status["app-aot"] == status["libapp-aot"] == "install ok installed"
    assert status["hello-aot"] == "install ok installed"

    info = repo.repo.read_commit(checksum)
    assert info.parent is None
    assert info.timestamp == repo.repo.read_commit(repo.base).timestamp
    assert info.metadata[keys.CLIENTLAYER] is True
    assert info.metadata[keys.BASE_CHECKSUM] == repo.base
    assert info.metadata[keys.REQUESTED_PACKAGES] == ["app-aot"]
    assert info.metadata[keys.VERSION] == "1.0"
    packages = {name: version for name, version, _ in info.metadata[keys.PACKAGES]}
    assert packages["app-aot"] == "1.0" and "hello-aot" in packages
    assert repo.ostree("ls", checksum, "/var").split()[-1] == "/var"  # still empty
    assert repo.ostree("refs").split() == []  # no ref moved
    repo.ostree("fsck")


@pytest.mark.slow
def test_var_and_opt_content_is_translated(repo: Repo) -> None:
    state = DebSpec(
        name="state-aot",
        files={
            "/var/lib/state-aot/db": "initial\n",
            "/var/log/state-aot/old.log": "machine state\n",
            "/opt/state-aot/share/readme": "opt\n",
        },
    )
    checksum = repo.layer(state)

    conf = repo.cat(checksum, "/usr/lib/tmpfiles.d/apt-ostree-layer-var.conf").splitlines()
    assert "d /var/lib/state-aot 0755 root root - -" in conf
    assert "C /var/lib/state-aot/db - - - - -" in conf
    assert "L /var/opt/state-aot - - - - ../../usr/lib/opt/state-aot" in conf
    assert "d /var/log/state-aot 0755 root root - -" in conf
    assert not [line for line in conf if "old.log" in line]  # /var/log keeps folders only
    assert not [line for line in conf if line.split()[1:2] in (["/var/lib"], ["/var/opt"])]
    assert repo.cat(checksum, "/usr/share/factory/var/lib/state-aot/db") == "initial\n"
    assert repo.cat(checksum, "/usr/lib/opt/state-aot/share/readme") == "opt\n"
    assert repo.ostree("ls", checksum, "/var").split()[-1] == "/var"
    diff = repo.diff(checksum)
    assert not [p for p in diff if p.startswith("/var")]
    assert "/usr/lib/sysimage/dpkg/status-old" not in diff  # dpkg's backup is dropped


@pytest.mark.slow
def test_usr_local_is_refused(repo: Repo) -> None:
    commits = repo.commits()
    local = DebSpec(name="local-aot", files={"/usr/local/bin/local-aot": "x\n"})
    with pytest.raises(LayeringError, match=r"/usr/local/bin/local-aot \(from package local-aot\)"):
        repo.layer(local)
    assert_untouched(repo, commits)


@pytest.mark.slow
def test_files_outside_usr_are_refused(repo: Repo) -> None:
    kernel = DebSpec(name="boot-aot", files={"/boot/vmlinuz-9.9": "kernel\n"})
    with pytest.raises(LayeringError, match=r"outside /usr.*/boot/vmlinuz-9.9 .*boot-aot"):
        repo.layer(kernel)


@pytest.mark.slow
def test_removes_a_base_package(repo: Repo) -> None:
    assert "legacy-aot" in repo.status(repo.base)
    checksum = repo.layer(remove=["legacy-aot"])
    diff = repo.diff(checksum)
    assert diff["/usr/share/legacy-aot"] == "D"
    assert "legacy-aot" not in repo.status(checksum)
    assert not [p for p, kind in diff.items() if kind == "D" and "legacy-aot" not in p]


@pytest.mark.slow
def test_sandbox_is_offline_and_denies_services(repo: Repo, tmp_path: Path) -> None:
    canary = tmp_path / "host-canary"
    canary.write_text("host\n")
    probe = script_deb(
        "probe-aot",
        postinst=f"""\
out=/usr/share/probe-aot/probe
echo "frontend=$DEBIAN_FRONTEND offline=$SYSTEMD_OFFLINE dpkg_root=${{DPKG_ROOT:-empty}}" > $out
/usr/sbin/policy-rc.d x start && echo "policy=allows" >> $out || echo "policy=$?" >> $out
echo "interfaces=$(tail -n +3 /proc/net/dev | wc -l)" >> $out
test -e {canary} && echo host=visible >> $out || echo host=hidden >> $out
test -L /var/lib/dpkg && echo "dpkgdb=$(readlink /var/lib/dpkg)" >> $out
echo "$$" > /var/tmp/throwaway
""",
    )
    checksum = repo.layer(probe)
    assert repo.cat(checksum, "/usr/share/probe-aot/probe").splitlines() == [
        "frontend=noninteractive offline=1 dpkg_root=empty",  # dpkg exports it empty
        "policy=101",
        "interfaces=1",  # lo only: no network
        "host=hidden",
        "dpkgdb=../../usr/lib/sysimage/dpkg",
    ]
    diff = repo.diff(checksum)
    assert "/usr/sbin/policy-rc.d" not in diff
    assert not [p for p in diff if p.startswith(("/etc", "/var", "/usr/etc"))]


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.network
def test_postinst_creates_a_system_user(repo: Repo) -> None:
    """adduser is not in the Essential set: Debian's adduser and passwd are layered too."""
    base = {name for name, _, _ in repo.repo.read_commit(repo.base).metadata[keys.PACKAGES]}
    closure = fetch_debian_debs(["adduser"])
    extra = [
        PlannedDeb(name, version, arch, path)
        for path in closure
        for name, version, arch in [path.name.removesuffix(".deb").split("_")]
        if name not in base
    ]
    assert {"adduser", "passwd"} <= {deb.name for deb in extra}
    user = DebSpec(
        name="user-aot",
        depends="adduser",
        files={"/usr/share/user-aot/marker": "x\n"},
        postinst="adduser --system --group --no-create-home --home /nonexistent aotuser\n",
    )
    checksum = repo.layer(user, extra=extra)
    passwd = repo.cat(checksum, "/usr/etc/passwd")
    group = repo.cat(checksum, "/usr/etc/group")
    assert [line for line in passwd.splitlines() if line.startswith("aotuser:")]
    assert [line for line in group.splitlines() if line.startswith("aotuser:")]
    assert "aotuser:" in repo.cat(checksum, "/usr/etc/shadow")
    diff = repo.diff(checksum)
    assert "/usr/etc/passwd-" not in diff and "/usr/etc/shadow-" not in diff  # backups dropped
    repo.ostree("fsck")


# ---------------------------------------------------------------------------------------------
# layering that fails


@pytest.mark.slow
def test_failing_postinst_names_package_and_script(repo: Repo) -> None:
    commits = repo.commits()
    failing = script_deb("failing-aot", postinst="echo configuring >&2\nexit 3\n")
    with pytest.raises(LayeringError) as error:
        repo.layer(APP, LIBAPP, failing)
    assert str(error.value) == "postinst of failing-aot failed: exit status 3"
    assert_untouched(repo, commits)


@pytest.mark.slow
def test_failing_preinst_names_package_and_script(repo: Repo) -> None:
    commits = repo.commits()
    failing = script_deb("early-aot", preinst="exit 7\n")
    with pytest.raises(LayeringError, match=r"^preinst of early-aot failed: exit status 7$"):
        repo.layer(failing)
    assert_untouched(repo, commits)


@pytest.mark.slow
def test_postinst_removing_everything_is_damage(repo: Repo, tmp_path: Path) -> None:
    canary = tmp_path / "host-canary"
    canary.write_text("host\n")
    commits = repo.commits()
    wreck = script_deb("wreck-aot", postinst="rm -rf --no-preserve-root / 2>/dev/null\nexit 0\n")
    with pytest.raises(LayeringError, match=r"^postinst of wreck-aot damaged the tree: removed /"):
        repo.layer(wreck)
    assert canary.read_text() == "host\n"
    assert_untouched(repo, commits)
    assert repo.cat(repo.base, "/usr/bin/hello-aot").startswith("#!/bin/sh")


@pytest.mark.slow
def test_postinst_deleting_a_base_file_is_damage(repo: Repo) -> None:
    sneaky = script_deb("sneaky-aot", postinst="rm /usr/bin/hello-aot\n")
    with pytest.raises(
        LayeringError,
        match=r"^postinst of sneaky-aot damaged the tree: removed /usr/bin/hello-aot$",
    ):
        repo.layer(sneaky)


@pytest.mark.slow
def test_hanging_postinst_is_stopped(repo: Repo) -> None:
    commits = repo.commits()
    hang = script_deb("hang-aot", postinst="sleep 1000\n")
    start = time.monotonic()
    with pytest.raises(LayeringError, match=r"^postinst of hang-aot did not finish within 3 s"):
        repo.layer(hang, timeout=3)
    assert time.monotonic() - start < 30
    assert_untouched(repo, commits)
    assert not sleepers(), "the hanging script is still running"


def sleepers() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes() == b"sleep\x001000\x00":
                found.append(int(proc.name))
        except OSError:
            continue
    return found


# ---------------------------------------------------------------------------------------------
# reading dpkg's output (no tree needed)

DPKG_FAILED = """\
Setting up libapp-aot (1.0) ...
D000002: fork/exec /usr/lib/sysimage/dpkg/info/failing-aot.postinst ( configure )
configuring
dpkg: error processing package failing-aot (--configure):
 installed failing-aot package post-installation script subprocess returned error exit status 3
Errors were encountered while processing:
 failing-aot
"""


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (DPKG_FAILED, "postinst of failing-aot failed: exit status 3"),
        (
            "dpkg: error processing archive /run/x.deb (--unpack):\n"
            " new x package pre-installation script subprocess returned error exit status 7\n",
            "preinst of x failed: exit status 7",
        ),
        (
            "dpkg: error processing package y (--purge):\n"
            " installed y package pre-removal script subprocess was killed by signal (Killed)\n",
            "prerm of y failed: killed by signal (Killed)",
        ),
        (
            "dpkg: error processing archive /run/a.deb (--unpack):\n"
            " trying to overwrite '/usr/bin/x', which is also in package b 1.0\n",
            "dpkg: error processing archive /run/a.deb (--unpack): trying to overwrite "
            "'/usr/bin/x', which is also in package b 1.0",
        ),
    ],
)
def test_failure_message(output: str, message: str) -> None:
    assert failure_message(output, 1) == message


def test_last_script() -> None:
    assert last_script(DPKG_FAILED) == ("postinst", "failing-aot")
    unpack = (
        "Preparing to unpack .../early-aot_all.deb ...\n"
        "D000002: fork/exec /usr/lib/sysimage/dpkg/tmp.ci/preinst ( install )\n"
    )
    assert last_script(unpack) == ("preinst", "early-aot")
    assert last_script("Selecting previously unselected package x.\n") is None


def test_file_owners_follow_the_commit_layout(tmp_path: Path) -> None:
    info = tmp_path / "usr/lib/sysimage/dpkg/info"
    info.mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (info / "a.list").write_text("/.\n/etc\n/etc/a.conf\n/bin\n/bin/a\n/usr/share/a\n")
    (info / "b:amd64.list").write_text("/usr\n/usr/share\n/usr/share/a\n")
    owners = file_owners(tmp_path)
    assert owners["usr/etc/a.conf"] == {"a"}
    assert owners["usr/bin/a"] == {"a"}
    assert owners["usr/share/a"] == {"a", "b"}
    assert "." not in owners


def test_var_skeleton_makes_parents_and_never_follows_links(tmp_path: Path) -> None:
    """The sandbox's /var as systemd-tmpfiles makes it: an `L` line before its parent's `d`
    line still gets its parent (debconf's database link came before `d /var/cache`), and
    nothing is made through a link (an `L` line may point at the host's /run)."""
    lower, var, host = tmp_path / "lower", tmp_path / "var", tmp_path / "host"
    var.mkdir()
    host.mkdir()
    conf = lower / postprocess.SYSIMAGE_CONF
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "L /var/cache/debconf - - - - ../../usr/lib/sysimage/debconf\n"
        f"L /var/run - - - - {host}\n"
        "d /var/run/escape/deeper 0755 root root - -\n"
        "d /var/cache 0755 root root - -\n"
        "d /var/log/apt 0755 root root - -\n"
    )
    _var_skeleton(lower, var)
    assert os.readlink(var / "cache/debconf") == "../../usr/lib/sysimage/debconf"
    assert (var / "log/apt").is_dir()
    assert list(host.iterdir()) == []
