"""Deployable OSTree commits for client-side tests, made by `apt-ostree compose tree`.

libostree deploys a commit only when it has a kernel at /usr/lib/modules/$kver/vmlinuz
(ostree's "deployments" documentation); compose puts it there, and builds initramfs.img
beside it with the tree's dracut (apt_ostree/compose/initramfs.py). Real kernels and dracut
are covered by the network tests; here two tiny fake packages stand in for them:

- `linux-image-aot` ships /boot/vmlinuz-6.1.0-aot (a few KB of bytes) and
  /usr/lib/modules/6.1.0-aot/, as Debian's linux-image packages do;
- `dracut-aot` ships a /usr/bin/dracut shell script that writes a small text "initramfs" at
  the output path it is given (recording the kernel version and the arguments, so tests can
  check initramfs-args), and the ostree dracut module directory that compose checks for.

`compose_images()` builds a signed apt repository of those and the Debian Essential set, and
composes, into one archive repository servable by plain HTTP (summary included):

| ref | version | packages besides Essential, kernel and dracut |
| --- | --- | --- |
| test/os | 1.0 | hello-aot 1.0, hello-aot-data, legacy-aot |
| test/os | 1.1 | hello-aot 1.1, hello-aot-data, extra-aot (legacy-aot removed) |
| test/other | 2.0 | other-aot |

Every commit is signed with the session's GPG test key, and with a fresh ed25519 key where
libostree supports ed25519 (Debian 12's does not: `Images.ed25519_signed` tells).
`compose_next()` composes a further version into a copy, leaving the shared images alone.
`remove_sysroot()` removes a folder sysroot whose deployments libostree made immutable.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from apt_ostree.run import run
from tests.support.aptrepo import AptRepo, GpgKey, shared_gpg_key
from tests.support.debian import SUITE, fetch_debian_debs
from tests.support.debs import MAINTAINER, DebSpec, Dir, File, Symlink

EPOCH = "1700000000"
APT_OSTREE = [sys.executable, "-m", "apt_ostree.cli.main"]
REF = "test/os"
OTHER_REF = "test/other"
KERNEL_VERSION = "6.1.0-aot"
BASE_PACKAGES = ("linux-image-aot", "dracut-aot")
OS_PACKAGES_1_0 = ("hello-aot", "legacy-aot", *BASE_PACKAGES)
OS_PACKAGES_1_1 = ("hello-aot", "extra-aot", *BASE_PACKAGES)
OTHER_PACKAGES = ("other-aot", *BASE_PACKAGES)

# ---------------------------------------------------------------------------------------------
# the fake kernel and dracut

# dracut's options that take a value (dracut(8)); everything else starting with - is a flag.
_DRACUT = """\
#!/bin/sh
# Fake dracut for apt-ostree's tests: `dracut [OPTIONS] IMAGE [KVER]` writes a small text
# file at IMAGE instead of a real initramfs.
set -e
args="$*"
image=
kver=
while [ $# -gt 0 ]; do
    case "$1" in
    -a|--add|-o|--omit|-d|--drivers|--add-drivers|--force-drivers|--omit-drivers|\\
    -I|--install|-i|--include|--kver|--kernel-cmdline|--filesystems|-k|--kmoddir|\\
    --fwdir|-c|--conf|--confdir|--tmpdir|--compress|--uefi-stub|--kernel-image)
        shift 2 || shift ;;
    -*) shift ;;
    *)
        if [ -z "$image" ]; then image="$1"; elif [ -z "$kver" ]; then kver="$1"; fi
        shift ;;
    esac
done
[ -n "$image" ] || { echo "dracut (fake): no image path" >&2; exit 1; }
[ -d "/usr/lib/modules/$kver" ] || { echo "dracut (fake): no modules for '$kver'" >&2; exit 1; }
printf 'fake initramfs\\nkver=%s\\nargs=%s\\n' "$kver" "$args" > "$image"
"""


def kernel_deb(kver: str = KERNEL_VERSION, version: str = "6.1.0-1") -> DebSpec:
    """A linux-image package laid out as Debian's: /boot/vmlinuz-$kver and its modules."""
    vmlinuz = (f"fake vmlinuz {kver}\n".encode() * 256)[:4096]
    return DebSpec(
        name="linux-image-aot",
        version=version,
        architecture="all",
        section="kernel",
        files={
            f"/boot/vmlinuz-{kver}": File(vmlinuz, 0o600),
            f"/boot/config-{kver}": f"# fake config {kver}\n",
            f"/boot/System.map-{kver}": "0000000000000000 T _text\n",
            f"/usr/lib/modules/{kver}/modules.order": "",
            f"/usr/lib/modules/{kver}/modules.builtin": "kernel/fs/ext4/ext4.ko\n",
        },
    )


def dracut_deb(version: str = "1.0") -> DebSpec:
    """/usr/bin/dracut (the fake) and ostree's dracut module directory."""
    return DebSpec(
        name="dracut-aot",
        version=version,
        files={
            "/usr/bin/dracut": File(_DRACUT, 0o755),
            "/usr/lib/dracut/modules.d/98ostree": Dir(),
            "/usr/lib/dracut/modules.d/98ostree/module-setup.sh": "# fake\n",
        },
    )


# hello-aot's changelog entries by version (`db diff --changelogs`)
HELLO_CHANGES = {"1.0": "First release.", "1.1": "Greets in version 1.1."}


def hello_changelog(version: str) -> bytes:
    """Debian's changelog.Debian.gz of hello-aot `version`: its entries up to it, newest
    first (gzip without a timestamp, so the .deb stays reproducible)."""
    entries = [
        f"hello-aot ({v}) unstable; urgency=medium\n\n  * {text}\n\n"
        f" -- {MAINTAINER}  Tue, 14 Nov 2023 22:13:20 +0000\n"
        for v, text in reversed(HELLO_CHANGES.items())
        if version_key(v) <= version_key(version)
    ]
    return gzip.compress("\n".join(entries).encode(), mtime=0)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def hello_deb(version: str = "1.0") -> DebSpec:
    """hello-aot; its doc folder is a link to hello-aot-doc/, as dh_installdocs --link-doc
    makes them."""
    return DebSpec(
        name="hello-aot",
        version=version,
        depends="hello-aot-data",
        files={
            "/usr/bin/hello-aot": File(f"#!/bin/sh\necho hello {version}\n", 0o755),
            "/etc/hello-aot.conf": "greeting=hello\n",  # /usr/etc/hello-aot.conf in the commit
            "/usr/share/doc/hello-aot": Symlink("hello-aot-doc"),
            "/usr/share/doc/hello-aot-doc/changelog.Debian.gz": hello_changelog(version),
        },
    )


def simple_deb(name: str, version: str = "1.0") -> DebSpec:
    return DebSpec(
        name=name,
        version=version,
        files={f"/usr/share/{name}/version": f"{version}\n"},
    )


FIRST_DEBS = (
    kernel_deb(),
    dracut_deb(),
    hello_deb("1.0"),
    simple_deb("hello-aot-data"),
    simple_deb("legacy-aot"),
    simple_deb("other-aot", "2.0"),
)
SECOND_DEBS = (hello_deb("1.1"), simple_deb("extra-aot"))

# ---------------------------------------------------------------------------------------------
# keys


@dataclass(frozen=True)
class Ed25519Key:
    public: str  # base64 of the 32-byte public key (ostree's verification-key format)
    secret_file: Path  # base64 of seed + public key (64 bytes), as `ostree sign` reads it


@functools.cache
def ostree_has_ed25519() -> bool:
    """Whether libostree was built with ed25519 signing (the "sign-ed25519" feature).

    Debian 12's libostree 2022.7 was not: there, `ostree sign` and compose's --sign-ed25519
    fail with "Requested signature type is not implemented".
    """
    return "sign-ed25519" in run(["ostree", "--version"]).stdout


def make_ed25519_key(directory: Path) -> Ed25519Key:
    """A fresh ed25519 keypair in ostree's formats."""
    try:
        seed, public = _ed25519_cryptography()
    except ImportError:
        seed, public = _ed25519_openssl(directory)
    secret_file = directory / "ed25519.secret"
    secret_file.write_text(base64.b64encode(seed + public).decode() + "\n")
    secret_file.chmod(0o600)
    (directory / "ed25519.public").write_text(base64.b64encode(public).decode() + "\n")
    return Ed25519Key(base64.b64encode(public).decode(), secret_file)


def _ed25519_cryptography() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    seed = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return seed, key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)


def _ed25519_openssl(directory: Path) -> tuple[bytes, bytes]:
    """As ostree's tests/libtest.sh does: the raw keys are the last 32 bytes of the DER forms."""
    pem = directory / "ed25519.pem"
    run(["openssl", "genpkey", "-algorithm", "ed25519", "-outform", "PEM", "-out", pem])
    private = subprocess.run(
        ["openssl", "pkey", "-in", pem, "-outform", "DER"], capture_output=True, check=True
    ).stdout
    public = subprocess.run(
        ["openssl", "pkey", "-in", pem, "-outform", "DER", "-pubout"],
        capture_output=True,
        check=True,
    ).stdout
    return private[-32:], public[-32:]


# ---------------------------------------------------------------------------------------------
# composing


@dataclass(frozen=True)
class Images:
    repo: Path  # archive repository with a summary: serve it with tests.support.httpd
    ref: str
    other_ref: str
    versions: dict[str, str] = field(hash=False)  # version -> checksum, of both refs
    gpg_key: GpgKey  # signs every commit (and the apt repository); .keyring for gpg-verify
    ed25519_public: str
    ed25519_secret_file: Path
    ed25519_signed: bool  # False where libostree lacks ed25519 (see ostree_has_ed25519)
    apt: AptRepo = field(hash=False)
    treefile: Path  # the treefile of test/os 1.1
    cachedir: Path
    kernel_version: str = KERNEL_VERSION

    def checksum(self, version: str) -> str:
        return self.versions[version]


def ostree(repo: Path, *args: str | Path) -> str:
    return run(["ostree", f"--repo={repo}", *map(str, args)]).stdout


def write_treefile(
    path: Path,
    apt: AptRepo,
    packages: Sequence[str],
    *,
    ref: str = REF,
    version_prefix: str = "1",
    **extra: object,
) -> Path:
    data: dict[str, object] = {
        "ref": ref,
        "suite": SUITE,
        "variant": "essential",
        "automatic-version-prefix": version_prefix,
        "repos": [
            {
                "uris": apt.file_uri,
                "suites": SUITE,
                "components": "main",
                "signed-by": str(apt.keyring),
            }
        ],
        "packages": list(packages),
    }
    data.update(extra)
    path.write_text(json.dumps(data, indent=2))
    return path


def compose(
    treefile: Path,
    repo: Path,
    cachedir: Path,
    *,
    gpg_key: GpgKey,
    ed25519_secret_file: Path | None,
) -> str:
    """`apt-ostree compose tree`, GPG-signed, and ed25519-signed when a key file is given;
    the new commit's checksum."""
    ed25519 = ["--sign-ed25519", str(ed25519_secret_file)] if ed25519_secret_file else []
    proc = subprocess.run(
        [
            *APT_OSTREE,
            "compose",
            "tree",
            str(treefile),
            "--repo",
            str(repo),
            "--cachedir",
            str(cachedir),
            "--gpg-sign",
            gpg_key.fingerprint,
            "--gpg-homedir",
            str(gpg_key.homedir),
            *ed25519,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH},
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"compose of {treefile} failed:\n{proc.stderr}")
    ref = json.loads(treefile.read_text())["ref"]
    return ostree(repo, "rev-parse", ref).strip()


def commit_version(repo: Path, checksum: str) -> str:
    return ostree(repo, "show", "--print-metadata-key=version", checksum).strip().strip("'")


def update_summary(repo: Path) -> None:
    ostree(repo, "summary", "-u")


def compose_images(
    workdir: Path, *, essential_debs: Sequence[Path] | None = None, cachedir: Path | None = None
) -> Images:
    """Build the apt repository and compose test/os 1.0, 1.1 and test/other 2.0 into workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    cachedir = cachedir or workdir / "cache"
    gpg_key = shared_gpg_key()
    ed25519 = make_ed25519_key(workdir)
    apt = AptRepo(workdir / "aptrepo", suite=SUITE, key=gpg_key)
    apt.add_debs(essential_debs if essential_debs is not None else fetch_debian_debs())
    apt.add(*FIRST_DEBS)
    apt.publish()
    repo = workdir / "repo"
    versions: dict[str, str] = {}
    ed25519_file = ed25519.secret_file if ostree_has_ed25519() else None

    def one(name: str, packages: Sequence[str], *, ref: str = REF, prefix: str = "1") -> None:
        tf = write_treefile(workdir / f"{name}.json", apt, packages, ref=ref, version_prefix=prefix)
        checksum = compose(tf, repo, cachedir, gpg_key=gpg_key, ed25519_secret_file=ed25519_file)
        versions[commit_version(repo, checksum)] = checksum

    one("os-1.0", OS_PACKAGES_1_0)
    one("other-2.0", OTHER_PACKAGES, ref=OTHER_REF, prefix="2")
    apt.add(*SECOND_DEBS)
    apt.publish()
    one("os-1.1", OS_PACKAGES_1_1)
    update_summary(repo)
    return Images(
        repo=repo,
        ref=REF,
        other_ref=OTHER_REF,
        versions=versions,
        gpg_key=gpg_key,
        ed25519_public=ed25519.public,
        ed25519_secret_file=ed25519.secret_file,
        ed25519_signed=ed25519_file is not None,
        apt=apt,
        treefile=workdir / "os-1.1.json",
        cachedir=cachedir,
    )


@dataclass(frozen=True)
class NextImage:
    repo: Path  # the copy, with the new commit and an updated summary
    apt: AptRepo  # the copy of the apt repository the commit was composed from
    treefile: Path
    checksum: str
    version: str


def copy_repo(source: Path, dest: Path) -> Path:
    """A copy of an OSTree repository that shares its (never rewritten) object files."""
    run(["cp", "-a", "-l", str(source), str(dest)])
    return dest


def compose_next(
    images: Images,
    workdir: Path,
    *,
    add: Sequence[DebSpec] = (),
    packages: Sequence[str] = OS_PACKAGES_1_1,
    ref: str = REF,
    version_prefix: str = "1",
    **treefile_extra: object,
) -> NextImage:
    """Compose one more commit of `ref` (version 1.2 by default) into a copy of the images.

    The OSTree repository and the apt repository are copied into `workdir` (hard links: cheap,
    and libostree never writes an object file in place), the `add` packages go into the copy
    of the apt repository, and `packages` (plus any treefile keys) are composed from it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    repo = copy_repo(images.repo, workdir / "repo")
    apt = AptRepo(workdir / "aptrepo", suite=SUITE, key=images.gpg_key)
    apt.add_debs(images.apt.debs())
    apt.add(*add)
    apt.publish()
    tf = write_treefile(
        workdir / "treefile.json",
        apt,
        packages,
        ref=ref,
        version_prefix=version_prefix,
        **treefile_extra,
    )
    checksum = compose(
        tf,
        repo,
        images.cachedir,
        gpg_key=images.gpg_key,
        ed25519_secret_file=images.ed25519_secret_file if images.ed25519_signed else None,
    )
    update_summary(repo)
    return NextImage(repo, apt, tf, checksum, commit_version(repo, checksum))


# ---------------------------------------------------------------------------------------------
# folder sysroots


def make_immutable_removable(path: Path) -> None:
    """Clear the immutable flag libostree sets on each deployment root (ostree-sysroot-deploy.c)."""
    for deployment in path.glob("ostree/deploy/*/deploy/*"):
        if deployment.is_dir() and not deployment.is_symlink():
            subprocess.run(["chattr", "-i", str(deployment)], capture_output=True, check=False)


def remove_sysroot(path: Path) -> None:
    """Remove a folder sysroot made by `ostree admin init-fs`, deployments included."""
    if not path.exists():
        return
    make_immutable_removable(path)
    shutil.rmtree(path)
