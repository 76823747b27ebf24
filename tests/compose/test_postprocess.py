"""Postprocessing a Debian root filesystem into the committed layout (DESIGN.md, "Trees").

Fast tests work on small hand-made trees; the `slow`/`network` ones bootstrap real bookworm
trees with mmdebstrap once per session (through the host's apt sources) and look at what a
user would see: paths, symlinks, tmpfiles.d lines and what systemd-tmpfiles makes of them,
enabled units, the initramfs, and that `ostree commit` takes the result.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from apt_ostree.aptpkg.sources import read_host_sources, render_sources
from apt_ostree.compose import initramfs
from apt_ostree.compose.postprocess import (
    SYSIMAGE_CONF,
    VAR_CONF,
    PostprocessOptions,
    postprocess,
    prepare_foreign_rootfs,
    tmpfiles_line,
    tmpfiles_quote,
)
from apt_ostree.errors import PostprocessError
from apt_ostree.progress import Progress
from apt_ostree.sandbox import Bind, bwrap_argv, run_in_tree

SUITE = "bookworm"
GUARD = Path(__file__).resolve().parents[2] / "data" / "apt-ostree-guard"
BASE_PACKAGES = "systemd,dbus,openssh-server,apt"
KERNEL_PACKAGES = "systemd-sysv,linux-image-cloud-amd64,dracut,ostree-boot"

# -- helpers --------------------------------------------------------------------------------


def copy_tree(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], check=True)
    return dest


def manifest(root: Path) -> list[tuple[str, str, str, str]]:
    """Everything libostree would commit: path, type, mode, owner, link target or content hash."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                detail = ""
            out.append(
                (str(path.relative_to(root)), oct(st.st_mode), f"{st.st_uid}:{st.st_gid}", detail)
            )
    return out


def conf_lines(root: Path, conf: str) -> list[str]:
    return [line for line in (root / conf).read_text().splitlines() if not line.startswith("#")]


def fake_tree(root: Path) -> Path:
    """The bones of a Debian tree: enough for postprocess with no script, unit or kernel."""
    for d in ("usr/bin", "usr/lib", "etc", "var/lib/dpkg/info", "var/cache", "dev", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "bin").symlink_to("usr/bin")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nfoo:x:1234:1234::/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nfoo:x:1234:\nmail:x:8:\n")
    (root / "var/lib/dpkg/status").write_text("")
    return root


def write_sources(path: Path) -> Path:
    """The host's bookworm entries (bookworm, -updates, -security), as deb822."""
    path.write_text(render_sources(read_host_sources(SUITE)))
    return path


class Bootstraps:
    """mmdebstrap runs in the background, so that the session's two trees build side by side."""

    def __init__(self, work: Path, sources: Path) -> None:
        self.work = work
        self.sources = sources
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, name: str, include: str, **env: str) -> None:
        if name in self.running:
            return
        target = self.work / name / "rootfs"
        target.parent.mkdir()
        argv = ["mmdebstrap", "--mode=root", "--variant=essential", f"--include={include}"]
        argv += [SUITE, str(target), str(self.sources)]
        with open(target.parent / "log", "wb") as log:
            proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=log)
        self.running[name] = (proc, target)

    def wait(self, name: str) -> Path:
        proc, target = self.running[name]
        if proc.wait() != 0:
            tail = (target.parent / "log").read_text(errors="replace")[-2000:]
            pytest.fail(f"mmdebstrap of the {name} tree failed:\n{tail}")
        return target

    def stop(self) -> None:
        for proc, _ in self.running.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- fast: hand-made trees ------------------------------------------------------------------


def test_bwrap_argv_is_isolated() -> None:
    argv = bwrap_argv(
        Path("/t"), ["dracut", "-f"], binds=(Bind(Path("/h/s"), "/run/s", readonly=True),)
    )
    assert argv[:3] == ["bwrap", "--bind", "/t"] and argv[3] == "/"
    assert argv[-3:] == ["--", "dracut", "-f"]
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--clearenv"):
        assert flag in argv
    joined = " ".join(argv)
    assert "--proc /proc --dev /dev --tmpfs /tmp --tmpfs /run" in joined
    assert "--ro-bind /h/s /run/s" in joined
    assert "--setenv SYSTEMD_OFFLINE 1" in joined and "--setenv LC_ALL C.UTF-8" in joined
    assert "--unshare-net" not in bwrap_argv(Path("/t"), ["x"], network=True)


def test_tmpfiles_quoting() -> None:
    assert tmpfiles_quote("/var/lib/x") == "/var/lib/x"
    assert tmpfiles_quote("/var/a b") == '"/var/a b"'
    assert tmpfiles_quote('/var/q"\\') == '"/var/q\\"\\\\"'
    assert tmpfiles_quote("/var/50%") == "/var/50%%"
    assert tmpfiles_line("L", "/var/l", argument="../x%y") == "L /var/l - - - - ../x%%y"


def test_var_becomes_lines_and_factory_files(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "root")
    state = root / "var/lib/foo"
    state.mkdir()
    os.chown(state, 1234, 8)
    state.chmod(0o2750)
    (state / "data file").write_text("kept")
    (state / "data file").chmod(0o600)
    (state / "link").symlink_to("data file")
    os.mkfifo(state / "fifo")
    (root / "var/log/apt").mkdir(parents=True)
    (root / "var/log/apt/history.log").write_text("per machine")
    postprocess(root, PostprocessOptions(), Progress())
    lines = conf_lines(root, VAR_CONF)
    assert "d /var/lib/foo 2750 foo mail - -" in lines
    assert 'C "/var/lib/foo/data file" - - - - -' in lines
    assert "L /var/lib/foo/link - - - - data file" in lines
    assert "d /var/log/apt 0755 root root - -" in lines
    assert not any("fifo" in line or "history.log" in line for line in lines)
    assert lines == sorted(lines, key=lambda line: shlex.split(line)[1])
    factory = root / "usr/share/factory/var/lib/foo/data file"
    assert factory.read_text() == "kept" and stat.S_IMODE(factory.stat().st_mode) == 0o600
    assert stat.S_IMODE((factory.parent).stat().st_mode) == 0o2750
    assert list((root / "var").iterdir()) == []
    assert "L /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg" in conf_lines(root, SYSIMAGE_CONF)


def test_special_files_are_removed_everywhere(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "root")
    (root / "usr/lib/x").mkdir()
    os.mkfifo(root / "usr/lib/x/fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "usr/lib/x/sock"))
    os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    postprocess(root, PostprocessOptions(), Progress())
    assert list((root / "usr/lib/x").iterdir()) == []
    assert list((root / "dev").iterdir()) == []


def test_usr_local_files_are_refused_naming_the_package(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "root")
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/tool").write_text("#!/bin/sh\n")
    (root / "var/lib/dpkg/info/vendor-tool.list").write_text("/usr/local/bin/tool\n")
    with pytest.raises(PostprocessError, match=r"/usr/local/bin/tool \(from package vendor-tool\)"):
        postprocess(root, PostprocessOptions(), Progress())


def test_opt_content_moves_to_usr_lib_opt(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "root")
    (root / "opt/vendor/bin").mkdir(parents=True)
    (root / "opt/vendor/bin/tool").write_text("tool")
    postprocess(root, PostprocessOptions(), Progress())
    assert (root / "usr/lib/opt/vendor/bin/tool").read_text() == "tool"
    assert os.readlink(root / "opt") == "var/opt"
    assert "L /var/opt/vendor - - - - ../../usr/lib/opt/vendor" in conf_lines(root, VAR_CONF)


def test_paths_leading_out_of_the_tree_are_refused(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "precious").write_text("keep")
    root = fake_tree(tmp_path / "root")
    (root / "etc/evil").symlink_to(host)  # absolute: inside the tree it means /…/host
    with pytest.raises(PostprocessError, match="leads out of the tree"):
        postprocess(root, PostprocessOptions(remove_files=("etc/evil/*",)), Progress())
    src = tmp_path / "file"
    src.write_text("x")
    with pytest.raises(PostprocessError, match="leads out of the tree"):
        postprocess(root, PostprocessOptions(add_files=((src, "/etc/evil/new"),)), Progress())
    assert sorted(p.name for p in host.iterdir()) == ["precious"]


def test_tree_directories_linking_out_are_refused(tmp_path: Path) -> None:
    host = tmp_path / "host-log"
    host.mkdir()
    (host / "syslog").write_text("keep")
    root = fake_tree(tmp_path / "root")
    (root / "var/log").symlink_to(host)
    with pytest.raises(PostprocessError, match="/var/log is a symlink out of the tree"):
        postprocess(root, PostprocessOptions(), Progress())
    assert (host / "syslog").read_text() == "keep"


def test_machine_id_is_empty_or_absent(tmp_path: Path) -> None:
    for compat in (True, False):
        root = fake_tree(tmp_path / f"root-{compat}")
        (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        postprocess(root, PostprocessOptions(machineid_compat=compat), Progress())
        machine_id = root / "usr/etc/machine-id"
        assert machine_id.exists() is compat
        assert not compat or machine_id.read_bytes() == b""


def test_kernel_without_dracut_names_what_is_missing(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "root")
    (root / "boot").mkdir()
    (root / "boot/vmlinuz-6.1.0-test").write_bytes(b"kernel")
    (root / "usr/lib/modules/6.1.0-test").mkdir(parents=True)
    with pytest.raises(PostprocessError, match="no dracut.*'dracut' package"):
        postprocess(root, PostprocessOptions(), Progress())
    (root / "usr/bin/dracut").write_text("#!/bin/sh\n")
    with pytest.raises(PostprocessError, match="ostree module.*'ostree-boot' package"):
        postprocess(root, PostprocessOptions(), Progress())


# -- slow: real bookworm trees --------------------------------------------------------------


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sources(tmp_path_factory.mktemp("sources") / "bookworm.sources")


@pytest.fixture(scope="session")
def bootstraps(tmp_path_factory: pytest.TempPathFactory, sources: Path) -> Iterator[Bootstraps]:
    runs = Bootstraps(tmp_path_factory.mktemp("bootstrap"), sources)
    yield runs
    runs.stop()


def start_kernel_tree(bootstraps: Bootstraps) -> None:
    # INITRD=No: the kernel's postinst builds no initramfs of its own into /boot
    bootstraps.start("kernel", KERNEL_PACKAGES, INITRD="No")


@pytest.fixture(scope="session")
def base_tree(request: pytest.FixtureRequest, bootstraps: Bootstraps) -> Path:
    """A bootstrapped bookworm tree (systemd, dbus, openssh-server, apt); copy it, never change
    it."""
    if any("kernel_tree" in getattr(item, "fixturenames", ()) for item in request.session.items):
        start_kernel_tree(bootstraps)  # wanted later in this session: build it meanwhile
    bootstraps.start("base", BASE_PACKAGES)
    return bootstraps.wait("base")


@dataclass(frozen=True)
class Composed:
    root: Path  # the postprocessed tree; tests only read it
    options: PostprocessOptions


SCRIPT_SEES_INPUTS = """#!/bin/sh
set -e
# add-files and remove-files came first; the network is not there (only lo)
grep -q 'welcome to the image' /etc/motd
test ! -e /usr/share/doc/bash
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /usr/share/netdevs
echo from-script > /usr/share/script-was-here
mkdir -p /var/lib/from-script
echo state > /var/lib/from-script/state
echo hello from the script
"""


def composed_options(files: Path) -> PostprocessOptions:
    files.mkdir(exist_ok=True)
    (files / "motd").write_text("welcome to the image\n")
    (files / "tool").write_text("#!/bin/sh\necho tool\n")
    (files / "tool").chmod(0o755)
    return PostprocessOptions(
        units=("systemd-networkd.service",),
        default_target="multi-user.target",
        add_files=(
            (files / "motd", "/etc/motd"),
            (files / "tool", "/opt/vendor/bin/tool"),
            (GUARD, "/usr/lib/apt-ostree/apt-ostree-guard"),  # as apt-ostree's .deb ships it
        ),
        remove_files=("/usr/share/doc/bash", "usr/share/man/man1/ls.*"),
        postprocess_scripts=(SCRIPT_SEES_INPUTS, "#!/bin/bash\necho second >> /usr/share/order\n"),
    )


class Recorder(Progress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


@pytest.fixture(scope="session")
def composed(tmp_path_factory: pytest.TempPathFactory, base_tree: Path) -> Composed:
    work = tmp_path_factory.mktemp("composed")
    root = copy_tree(base_tree, work / "rootfs")
    options = composed_options(work / "files")
    progress = Recorder()
    postprocess(root, options, progress)
    assert "    | hello from the script" in progress.lines
    return Composed(root, options)


@pytest.mark.slow
@pytest.mark.network
def test_top_level_layout(composed: Composed) -> None:
    root = composed.root
    links = {p.name: os.readlink(p) for p in root.iterdir() if p.is_symlink()}
    assert links == {
        "bin": "usr/bin",
        "lib": "usr/lib",
        "lib64": "usr/lib64",
        "sbin": "usr/sbin",
        "home": "var/home",
        "root": "var/roothome",
        "srv": "var/srv",
        "mnt": "var/mnt",
        "opt": "var/opt",
        "media": "run/media",
        "ostree": "sysroot/ostree",
    }
    assert os.readlink(root / "usr/local") == "../var/usrlocal"
    for empty in ("boot", "dev", "efi", "proc", "run", "sys", "sysroot", "tmp", "var"):
        assert (root / empty).is_dir() and list((root / empty).iterdir()) == [], empty
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert not (root / "etc").exists() and (root / "usr/etc/passwd").is_file()


@pytest.mark.slow
@pytest.mark.network
def test_package_state_lives_in_usr(composed: Composed) -> None:
    sysimage = composed.root / "usr/lib/sysimage"
    assert "Package: systemd\n" in (sysimage / "dpkg/status").read_text()
    assert (sysimage / "debconf/config.dat").is_file()
    assert (sysimage / "apt/extended_states").is_file()
    assert conf_lines(composed.root, SYSIMAGE_CONF) == [
        "L /var/cache/debconf - - - - ../../usr/lib/sysimage/debconf",
        "L /var/lib/apt/extended_states - - - - ../../../usr/lib/sysimage/apt/extended_states",
        "L /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg",
    ]


@pytest.mark.slow
@pytest.mark.network
def test_apt_and_dpkg_are_guarded_and_still_run(composed: Composed, tmp_path: Path) -> None:
    root = composed.root
    for name in ("apt", "apt-get", "dpkg"):
        assert os.readlink(root / "usr/bin" / name) == "/usr/lib/apt-ostree/apt-ostree-guard"
        assert (root / "usr/bin" / f"{name}.distrib").is_file()
    diversions = (root / "usr/lib/sysimage/dpkg/diversions").read_text().splitlines()
    assert diversions[:3] == ["/usr/bin/apt", "/usr/bin/apt.distrib", ":"]
    assert "/usr/bin/dpkg.distrib" in diversions
    # not booted: through the guard to the real programs, in the tree itself
    tree = copy_tree(root, tmp_path / "tree")
    os.rename(tree / "usr/etc", tree / "etc")
    out = run_in_tree(tree, ["sh", "-c", "dpkg --print-architecture && apt-get --version"])
    assert out.stdout.startswith(("amd64\n", "arm64\n")) and "apt " in out.stdout


@pytest.mark.slow
@pytest.mark.network
def test_per_machine_state_is_dropped(composed: Composed) -> None:
    etc = composed.root / "usr/etc"
    assert (etc / "machine-id").read_bytes() == b""
    assert not list((etc / "ssh").glob("ssh_host_*"))
    # mmdebstrap's copies of the build host's files
    assert not (etc / "hostname").exists() and not (etc / "resolv.conf").exists()
    keygen = composed.root / "usr/lib/systemd/system/ssh.service.wants"
    assert os.readlink(keygen / "apt-ostree-ssh-keygen.service").startswith("../")
    factory = composed.root / "usr/share/factory/var"
    assert not (factory / "log").exists() and not (factory / "cache").exists()
    lines = conf_lines(composed.root, VAR_CONF)
    assert not [line for line in lines if "random-seed" in line or "machine-id" in line]
    dropped = ("C /var/log/", "C /var/cache/", "C /var/lib/apt/lists/", "L /var/log/")
    assert not [line for line in lines if line.startswith(dropped)]


@pytest.mark.slow
@pytest.mark.network
def test_var_lines(composed: Composed) -> None:
    lines = conf_lines(composed.root, VAR_CONF)
    for expected in (
        "d /var/lib/from-script 0755 root root - -",
        "C /var/lib/from-script/state - - - - -",
        "d /var/roothome 0700 root root - -",
        "C /var/roothome/.bashrc - - - - -",
        "d /var/home 0755 root root - -",
        "d /var/usrlocal/bin 0755 root root - -",
        "d /var/mail 2775 root mail - -",
        "L /var/opt/vendor - - - - ../../usr/lib/opt/vendor",
        "d /var/local 2775 root staff - -",
    ):
        assert expected in lines
    paths = [line.split()[1] for line in lines]
    assert paths == sorted(paths) and len(paths) == len(set(paths))
    # left to the packages' own tmpfiles.d (systemd's var.conf, journal.conf ...)
    assert "/var/log/journal" not in paths and "/var/lib" not in paths
    assert (composed.root / "usr/share/factory/var/lib/from-script/state").read_text() == "state\n"


@pytest.mark.slow
@pytest.mark.network
def test_user_steps(composed: Composed) -> None:
    root = composed.root
    assert (root / "usr/etc/motd").read_text() == "welcome to the image\n"
    tool = root / "usr/lib/opt/vendor/bin/tool"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755
    assert not (root / "usr/share/doc/bash").exists()
    assert not list((root / "usr/share/man/man1").glob("ls.*"))
    assert (root / "usr/share/script-was-here").read_text() == "from-script\n"
    assert (root / "usr/share/netdevs").read_text().split() == ["lo"]
    assert (root / "usr/share/order").read_text() == "second\n"
    system = root / "usr/etc/systemd/system"
    wants = system / "multi-user.target.wants/systemd-networkd.service"
    assert os.readlink(wants).endswith("/systemd-networkd.service")
    assert os.readlink(system / "default.target").endswith("/multi-user.target")


@pytest.mark.slow
@pytest.mark.network
def test_systemd_tmpfiles_recreates_var(composed: Composed, tmp_path: Path) -> None:
    booted = copy_tree(composed.root, tmp_path / "booted")
    os.rename(booted / "usr/etc", booted / "etc")  # what libostree's deploy does
    proc = subprocess.run(
        ["systemd-tmpfiles", f"--root={booted}", "--create"], capture_output=True, text=True
    )
    assert "apt-ostree" not in proc.stderr, proc.stderr
    dpkg = booted / "var/lib/dpkg"
    assert dpkg.is_symlink() and dpkg.resolve() == (booted / "usr/lib/sysimage/dpkg").resolve()
    assert (booted / "var/lib/apt/extended_states").is_file()
    assert (booted / "var/lib/from-script/state").read_text() == "state\n"
    assert stat.S_IMODE((booted / "var/roothome").stat().st_mode) == 0o700
    assert (booted / "var/roothome/.bashrc").is_file()
    assert (booted / "home").is_dir() and (booted / "var/usrlocal/bin").is_dir()
    assert (booted / "var/opt/vendor/bin/tool").is_file()
    mail = (booted / "var/mail").stat()
    assert stat.S_IMODE(mail.st_mode) == 0o2775


@pytest.mark.slow
@pytest.mark.network
def test_ostree_commits_it(composed: Composed, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["ostree", "init", f"--repo={repo}", "--mode=bare"], check=True)
    subprocess.run(
        ["ostree", "commit", f"--repo={repo}", "-b", "test", f"--tree=dir={composed.root}"],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["ostree", "ls", f"--repo={repo}", "test", "/usr/lib/sysimage/dpkg/status", "/home"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "/home -> var/home" in listing


@pytest.mark.slow
@pytest.mark.network
def test_same_input_same_tree(composed: Composed, base_tree: Path, tmp_path: Path) -> None:
    again = copy_tree(base_tree, tmp_path / "again")
    postprocess(again, composed.options, Progress())
    assert manifest(again) == manifest(composed.root)


@pytest.mark.slow
@pytest.mark.network
def test_foreign_rootfs_converted_before_is_unchanged(composed: Composed, tmp_path: Path) -> None:
    tree = copy_tree(composed.root, tmp_path / "foreign")
    prepare_foreign_rootfs(tree)
    assert manifest(tree) == manifest(composed.root)


@pytest.mark.slow
@pytest.mark.network
def test_failing_script_gives_one_clear_error(base_tree: Path, tmp_path: Path) -> None:
    root = copy_tree(base_tree, tmp_path / "rootfs")
    scripts = ("#!/bin/sh\ntrue\n", "#!/bin/sh\necho working\necho 'cannot frob' >&2\nexit 3\n")
    with pytest.raises(PostprocessError) as info:
        postprocess(root, PostprocessOptions(postprocess_scripts=scripts), Progress())
    message = str(info.value)
    assert message.startswith("postprocess script 2 failed (exit 3)")
    assert "cannot frob" in message and "\n" not in message


@pytest.mark.slow
@pytest.mark.network
def test_usr_local_content_from_a_script_is_refused(base_tree: Path, tmp_path: Path) -> None:
    root = copy_tree(base_tree, tmp_path / "rootfs")
    script = "#!/bin/sh\necho x > /usr/local/bin/mytool\n"
    with pytest.raises(PostprocessError, match="under /usr/local.*/usr/local/bin/mytool"):
        postprocess(root, PostprocessOptions(postprocess_scripts=(script,)), Progress())


# -- slow: the kernel path for real ---------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_tree(bootstraps: Bootstraps) -> Iterator[Path]:
    """A tree with linux-image-cloud-amd64, dracut and ostree-boot (the test changes it)."""
    start_kernel_tree(bootstraps)
    target = bootstraps.wait("kernel")
    yield target
    shutil.rmtree(target, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.network
def test_kernel_and_initramfs(kernel_tree: Path, tmp_path: Path) -> None:
    assert list((kernel_tree / "boot").glob("vmlinuz-*"))
    assert not list((kernel_tree / "boot").glob("initrd.img-*"))
    postprocess(kernel_tree, PostprocessOptions(), Progress())
    (moduledir,) = (kernel_tree / "usr/lib/modules").iterdir()
    assert (moduledir / "vmlinuz").stat().st_size > 1_000_000
    image = moduledir / "initramfs.img"
    assert stat.S_IMODE(image.stat().st_mode) == 0o644
    assert list((kernel_tree / "boot").iterdir()) == []
    assert not (kernel_tree / "vmlinuz").is_symlink()
    inside = f"/{image.relative_to(kernel_tree)}"
    modules = run_in_tree(kernel_tree, ["lsinitrd", "--mod", inside], readonly=True).stdout.split()
    assert "ostree" in modules
    # a tree converted before keeps its initramfs (nothing is rebuilt)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    prepare_foreign_rootfs(kernel_tree)
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
    assert initramfs.find_kernel(kernel_tree) is not None
