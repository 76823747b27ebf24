"""`apt-ostree compose image`: a bootable GPT disk image from a composed commit.

The layout is one that boots with Debian 12's libostree 2022.7:

| # | partition | type | content |
| - | --- | --- | --- |
| 1 | BIOS boot, 1 MiB | `ef02` | GRUB's core image (`--bootloader grub`) |
| 2 | ESP, FAT | `ef00` | systemd-boot, rEFInd's ext4 driver; grub-efi: shim, GRUB; grub: empty |
| 3 | /boot, ext4, label `boot` | XBOOTLDR | BLS entries (grub: syslinux.cfg, grub-efi: grub.cfg) |
| 4 | root, ext4, label `root` | Linux x86-64 root | the sysroot: `ostree/repo`, `ostree/deploy` |

/boot is its own ext4 partition because libostree swaps `/boot/loader` as a symlink, which
FAT cannot hold; libostree 2022.7 then writes entry paths relative to that partition, which is
what systemd-boot (XBOOTLDR, read through rEFInd's ext4 driver) and GRUB both want. How GRUB
follows libostree's deployments under BIOS: see `grub.py`; under UEFI through Debian's signed
shim and GRUB (Secure Boot): see `efi.py`.

Nothing is mounted and no loop device is used: the sysroot is deployed by libostree into a
scratch folder, each ext4 filesystem is written from a folder straight into its partition of the
image file (`mke2fs -d` with `-E offset=`; hard links are kept, so the deployment's files still
share their inodes with the sysroot repository), the ESP is formatted at its offset
(`mkfs.fat --offset`) and filled with mtools (`-i IMAGE@@OFFSET`), GRUB's boot code is written
at its offsets (`grub.write_boot_code`). So a failure leaves nothing behind but the scratch
folder and the partial output, both removed here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from apt_ostree import ostree
from apt_ostree.boot import grubenv
from apt_ostree.compose import efi, grub
from apt_ostree.errors import CommandError, ImageError, UsageError
from apt_ostree.origin import Origin, Refspec
from apt_ostree.progress import Progress, human_size
from apt_ostree.run import run
from apt_ostree.sandbox import Bind, run_in_tree

MIB = 1024 * 1024
SECTOR = 512

# GPT partition type GUIDs (UEFI spec; the Discoverable Partitions Specification of systemd)
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
XBOOTLDR_TYPE = "BC13C2FF-59E6-4262-A352-B275FD6F7172"
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"

BOOT_LABEL = "boot"
ROOT_LABEL = "root"
ESP_LABEL = "ESP"

SYSTEMD_BOOT_EFI = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
# rEFInd's read-only ext4 driver: systemd-boot loads every \EFI\systemd\drivers\*x64.efi
REFIND_EXT4_DRIVER = "usr/share/refind/refind/drivers_x64/ext4_x64.efi"
DEFAULT_CACHEDIR = Path("/var/cache/apt-ostree/image")


class Bootloader(StrEnum):
    SYSTEMD_BOOT = "systemd-boot"
    GRUB = "grub"
    GRUB_EFI = "grub-efi"


class ImageFormat(StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


@dataclass(frozen=True)
class UpdateRemote:
    """The remote the booted machine upgrades from (written into the image's sysroot repo)."""

    name: str
    url: str
    gpg_keyring: Path | None = None  # None: no signature checks (--no-gpg-verify)


@dataclass(frozen=True)
class ImageOptions:
    repo: Path
    ref: str
    output: Path
    format: ImageFormat = ImageFormat.RAW
    size: int = 4096 * MIB
    boot_size: int = 512 * MIB
    esp_size: int = 256 * MIB
    kargs: tuple[str, ...] = ()
    remote: UpdateRemote | None = None
    bootloader: Bootloader = Bootloader.SYSTEMD_BOOT
    osname: str = "debian"
    # machine-local files written into the deployment's /etc (path under /etc -> content),
    # for provisioning (a network config, a unit): they are /etc edits, kept by upgrades
    etc_files: Mapping[str, bytes] = field(default_factory=dict)
    cachedir: Path = DEFAULT_CACHEDIR
    # grub-efi, and every piece of the boot chain checked to be signed (kernels included)
    secure_boot: bool = False


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type_guid: str
    name: str

    @property
    def end_sector(self) -> int:
        return (self.start + self.size) // SECTOR - 1


@dataclass(frozen=True)
class ImageResult:
    output: Path
    checksum: str
    version: str | None
    file_size: int  # bytes the output takes on disk
    kargs: tuple[str, ...]


def parse_size(text: str) -> int:
    """`4G`, `4096M`, `512MiB`, `1.5G` or plain bytes -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"--size: expected a size such as 4G or 4096M, got {text!r}")
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * 1024**power)


def layout(opts: ImageOptions) -> list[Partition]:
    """Partitions aligned to 1 MiB; the root takes the rest up to GPT's backup header."""
    parts: list[Partition] = []
    start = MIB
    for number, (size, guid, name) in enumerate(
        [
            (MIB, BIOS_BOOT_TYPE, "bios"),
            (opts.esp_size, ESP_TYPE, "esp"),
            (opts.boot_size, XBOOTLDR_TYPE, "boot"),
        ],
        start=1,
    ):
        parts.append(Partition(number, start, size, guid, name))
        start += size
    root_size = opts.size - start - MIB  # leave the last MiB to the backup GPT
    if root_size < 256 * MIB:
        raise UsageError(f"--size {human_size(opts.size)} leaves no room for the root filesystem")
    parts.append(Partition(4, start, root_size, ROOT_X86_64_TYPE, "root"))
    return parts


def default_kargs(extra: Sequence[str]) -> tuple[str, ...]:
    """The root by label (no UUIDs to track), and the serial console last: it is /dev/console."""
    return (f"root=LABEL={ROOT_LABEL}", "rw", "console=tty0", "console=ttyS0,115200", *extra)


def fstab_text(existing: str) -> str:
    """The deployment's /etc/fstab: /boot mounted (the guest's libostree writes entries there)."""
    lines = [
        line for line in existing.splitlines() if line.strip() and "UNCONFIGURED FSTAB" not in line
    ]
    if not any(len(line.split()) > 1 and line.split()[1] == "/boot" for line in lines):
        lines.append(f"LABEL={BOOT_LABEL} /boot ext4 defaults 0 2")
    return "\n".join(lines) + "\n"


def build_image(opts: ImageOptions, progress: Progress) -> ImageResult:
    """Build `opts.output`; on any failure the output and every scratch file are removed."""
    _check(opts)
    parts = layout(opts)
    with _scratch() as scratch:
        raw = scratch / "disk.raw" if opts.format is ImageFormat.QCOW2 else _partial(opts.output)
        try:
            result = _build(opts, parts, scratch, raw, progress)
        except BaseException:
            raw.unlink(missing_ok=True)
            raise
    return result


def _partial(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial")


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="apt-ostree-image-"))
    try:
        yield path
    finally:
        ostree.remove_sysroot(path / "sysroot")
        shutil.rmtree(path, ignore_errors=True)


def _check(opts: ImageOptions) -> None:
    if opts.output.exists():
        raise UsageError(f"{opts.output} exists already")
    if not opts.output.parent.is_dir():
        raise UsageError(f"{opts.output.parent} is not a folder")
    if not (opts.repo / "config").is_file():
        raise UsageError(f"{opts.repo} is not an OSTree repository")
    if ostree.Repo.open(opts.repo).resolve_ref(opts.ref) is None:
        raise UsageError(f"{opts.ref}: no such ref in {opts.repo}")
    if opts.bootloader is Bootloader.GRUB and (why := grub.check_available()) is not None:
        raise UsageError(why)
    if opts.secure_boot and opts.bootloader is not Bootloader.GRUB_EFI:
        raise UsageError(f"--secure-boot needs --bootloader grub-efi, not {opts.bootloader}")
    for path in opts.etc_files:
        if path.startswith("/") or ".." in Path(path).parts:
            raise UsageError(f"etc file {path!r}: expected a path relative to /etc")


def _build(
    opts: ImageOptions, parts: list[Partition], scratch: Path, raw: Path, progress: Progress
) -> ImageResult:
    systemd_boot = opts.bootloader is Bootloader.SYSTEMD_BOOT
    grub_efi = opts.bootloader is Bootloader.GRUB_EFI
    driver = ext4_driver(opts.cachedir, progress) if systemd_boot else None
    kargs = default_kargs(opts.kargs)
    sysroot = scratch / "sysroot"
    checksum = _pull(opts, sysroot, progress)
    tree = scratch / "tree"
    ostree.Repo.open(sysroot / "ostree" / "repo").checkout_hardlinked(checksum, tree)
    esp_files = _grub_efi_files(opts, tree, scratch, progress) if grub_efi else None
    _deploy(opts, sysroot, tree, checksum, kargs, progress)
    ostree.remove_sysroot(tree)
    boot = scratch / "boot"
    (sysroot / "boot").rename(boot)
    (sysroot / "boot").mkdir()
    if opts.bootloader is Bootloader.GRUB:
        grub.install_files(boot)
    elif esp_files is not None:
        esp_files = [*esp_files, _seed_grub_efi_boot(boot, scratch)]
    _check_fits(sysroot, parts[3], "the sysroot")
    _check_fits(boot, parts[2], "/boot")
    write_disk(raw, opts.size, parts, sysroot, boot, driver, progress, esp_files=esp_files)
    if opts.format is ImageFormat.QCOW2:
        with progress.step("Converting to qcow2"):
            partial = _partial(opts.output)
            try:
                run(["qemu-img", "convert", "-O", "qcow2", raw, partial], what="qemu-img convert")
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            raw = partial
    raw.rename(opts.output)
    info = ostree.Repo.open(opts.repo).read_commit(checksum)
    used = os.stat(opts.output).st_blocks * 512
    return ImageResult(opts.output, checksum, info.version, used, kargs)


def _grub_efi_files(
    opts: ImageOptions, tree: Path, scratch: Path, progress: Progress
) -> list[tuple[Path, str]]:
    """For grub-efi, before anything is deployed: the commit's kernels signed (--secure-boot),
    its GRUB generator and libostree there, and the signed binaries for the ESP
    (source, ESP path)."""
    kernels = efi.check_kernels_signed(tree) if opts.secure_boot else []
    efi.check_generator(tree)
    if not (tree / "usr/bin/ostree").exists():
        raise ImageError("--bootloader grub-efi: the commit has no /usr/bin/ostree to deploy it")
    files = efi.collect(tree, scratch / "efi", opts.cachedir, progress)
    if opts.secure_boot:
        with progress.step("Checking the Secure Boot chain's signatures"):
            efi.check_signed(files)
            for f in files:
                progress.message(f"    {f.binary.what}: signed ({f.origin})")
            for kernel in kernels:
                progress.message(f"    kernel: signed (/{kernel.relative_to(tree)})")
    else:
        for f in files:
            progress.message(f"    {f.binary.what}: {f.origin}")
    return [(f.source, f"EFI/BOOT/{f.binary.esp_name}") for f in files]


def _seed_grub_efi_boot(boot: Path, scratch: Path) -> tuple[Path, str]:
    """/boot's GRUB environment block (the generated config saves to it, and GRUB's save_env
    only rewrites a file that exists at its full size), and the ESP's fixed grub.cfg."""
    if not (boot / "loader" / "grub.cfg").is_file():
        raise ImageError(
            "the image's libostree wrote no /boot/loader/grub.cfg"
            f" (sysroot.bootloader=grub2, {efi.GENERATOR_ENV}=/{efi.GENERATOR})"
        )
    (boot / "grub").mkdir(exist_ok=True)
    grubenv.write(boot / efi.GRUBENV, {})
    cfg = scratch / "esp-grub.cfg"
    cfg.write_text(efi.ESP_GRUB_CFG.format(label=BOOT_LABEL))
    return cfg, efi.ESP_GRUB_CFG_PATH


def write_disk(
    raw: Path,
    size: int,
    parts: Sequence[Partition],
    root: Path,
    boot: Path,
    driver: Path | None,
    progress: Progress,
    *,
    esp_files: Sequence[tuple[Path, str]] | None = None,
) -> None:
    """Write the GPT disk `raw`: partitions of `layout()`; the ESP with `esp_files` (grub-efi:
    (source, path on the ESP)), or with systemd-boot and its ext4 `driver`, or else GRUB's
    boot code and an empty ESP; the folders `boot` and `root` as the XBOOTLDR and root ext4
    filesystems."""
    with progress.step("Partitioning"):
        _partition(raw, size, parts)
    if esp_files is not None:
        with progress.step("Writing the EFI system partition (shim, GRUB)"):
            _format_esp(raw, parts[1])
            _copy_to_esp(raw, parts[1], esp_files)
    elif driver is not None:
        with progress.step("Writing the EFI system partition (systemd-boot)"):
            _format_esp(raw, parts[1])
            _fill_esp(raw, parts[1], driver)
    else:
        with progress.step("Writing GRUB (BIOS boot partition and MBR)"):
            grub.write_boot_code(raw, parts[0].start, parts[0].size, grub.make_core(BOOT_LABEL))
        with progress.step("Writing the EFI system partition (empty)"):
            # formatted all the same: systemd's gpt-auto generator mounts it on /efi
            _format_esp(raw, parts[1])
    with progress.step("Writing /boot (ext4, XBOOTLDR)"):
        _mkfs_ext4(raw, parts[2], BOOT_LABEL, boot)
    with progress.step("Writing the root filesystem (ext4)"):
        _mkfs_ext4(raw, parts[3], ROOT_LABEL, root)


def _pull(opts: ImageOptions, path: Path, progress: Progress) -> str:
    """The sysroot of the image: its layout, remote and objects, and the repository's
    bootloader setting; the commit's checksum."""
    with progress.step(f"Pulling {opts.ref} into a scratch sysroot"):
        sysroot = ostree.Sysroot.initialize(path, opts.osname)
        if opts.bootloader is Bootloader.GRUB:
            # libostree then rewrites /boot/loader/syslinux.cfg at every deployment write
            sysroot.repo.set_config("sysroot", "bootloader", "syslinux")
            grub.seed_boot(path / "boot")
        elif opts.bootloader is Bootloader.GRUB_EFI:
            # libostree then runs $OSTREE_GRUB2_EXEC for /boot/loader.N/grub.cfg (efi.py)
            sysroot.repo.set_config("sysroot", "bootloader", "grub2")
        remote = opts.remote
        if remote is not None:
            sysroot.repo.add_remote(
                remote.name,
                remote.url,
                gpg_verify=remote.gpg_keyring is not None,
                gpg_keyring=remote.gpg_keyring,
            )
        return sysroot.repo.pull_local(opts.repo, opts.ref, remote=remote.name if remote else None)


def _deploy(
    opts: ImageOptions, path: Path, tree: Path, checksum: str, kargs: Sequence[str],
    progress: Progress,
) -> None:  # fmt: skip
    """The deployment of `checksum` (checked out at `tree`) in the sysroot at `path`, made by
    the image's own libostree (`deploy_with_tree`), so that what it writes (boot entries, and
    on releases that have them composefs images) is what the image's release does, not this
    build host's."""
    remote = opts.remote
    origin = Origin(Refspec(remote.name if remote else None, opts.ref)).to_text()
    env: dict[str, str] = {}
    if opts.bootloader is Bootloader.GRUB_EFI:
        env[efi.GENERATOR_ENV] = f"/{efi.GENERATOR}"
    with progress.step(f"Deploying {checksum[:12]}"):
        if (tree / "usr/bin/ostree").exists():
            version = deploy_with_tree(tree, path, opts.osname, checksum, origin, kargs, env=env)
            progress.message(f"    deployed with the image's own libostree {version}")
        else:  # an image without the ostree command: this host's libostree deploys it
            sysroot = ostree.Sysroot(path)
            with sysroot.locked():
                sysroot.deploy(opts.osname, checksum, origin, merge=None, kargs=kargs, stage=False)
            progress.message("    deployed with this host's libostree (the image has no ostree)")
    deployment = ostree.Sysroot(path).deployments()[0]
    _write_etc(deployment.path / "etc", opts.etc_files)


def deploy_with_tree(
    tree: Path,
    sysroot: Path,
    osname: str,
    checksum: str,
    origin: str,
    kargs: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
) -> str:
    """`ostree admin deploy` of `checksum` into `sysroot`, run from the commit's own tree (a
    hardlinked checkout, bound read-only) in bubblewrap, as bootc installs from the image it
    runs, with `env` added to its environment. Returns the tree's libostree version."""
    (tree / "etc").mkdir(exist_ok=True)  # a mount point in the checkout's folder, no object
    origin_file = sysroot / "ostree" / "apt-ostree-image.origin"
    origin_file.write_text(origin)
    binds = (Bind(tree / "usr/etc", "/etc", readonly=True), Bind(sysroot, "/sysroot"))
    try:
        version = run_in_tree(tree, ["ostree", "--version"], binds=binds, readonly=True).stdout
        argv = [
            "ostree", "admin", "deploy", "--sysroot=/sysroot", f"--os={osname}", "--no-merge",
            "--origin-file=/sysroot/ostree/apt-ostree-image.origin",
            # --karg-append: --karg would let a later console= replace an earlier one
            *(f"--karg-append={k}" for k in kargs), checksum,
        ]  # fmt: skip
        run_in_tree(tree, argv, binds=binds, env=env, readonly=True, what="ostree admin deploy")
    except CommandError as e:
        raise ImageError(f"the image's libostree could not deploy it: {e}") from e
    finally:
        origin_file.unlink(missing_ok=True)
    m = re.search(r"Version: '([^']+)'", version)
    return m.group(1) if m else "(unknown version)"


def _write_etc(etc: Path, files: Mapping[str, bytes]) -> None:
    fstab = etc / "fstab"
    fstab.write_text(fstab_text(fstab.read_text() if fstab.exists() else ""))
    for name, content in files.items():
        target = etc / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.write_bytes(content)


def _du(path: Path) -> int:
    """Bytes of the files under `path`, each inode once (hard links share their blocks)."""
    seen: set[int] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def _check_fits(folder: Path, part: Partition, what: str) -> None:
    # ext4's own metadata (inode tables, journal) takes about a tenth at these sizes
    need = _du(folder)
    if need > part.size * 0.85:
        raise UsageError(
            f"{what} needs {human_size(need)} but its partition has {human_size(part.size)}:"
            " make the image larger (--size)"
        )


def _partition(raw: Path, size: int, parts: Sequence[Partition]) -> None:
    with raw.open("wb") as f:
        f.truncate(size)  # sparse
    argv: list[str | Path] = ["sgdisk", "--zap-all"]
    for p in parts:
        argv += [
            f"--new={p.number}:{p.start // SECTOR}:{p.end_sector}",
            f"--typecode={p.number}:{p.type_guid}",
            f"--change-name={p.number}:{p.name}",
        ]
    run([*argv, raw], what="sgdisk")


def _format_esp(raw: Path, esp: Partition) -> None:
    # mkfs.fat's size argument is in KiB; --offset in sectors
    run(
        [
            "mkfs.fat",
            "-F",
            "32",
            "-s",
            "1",
            "-n",
            ESP_LABEL,
            "--offset",
            str(esp.start // SECTOR),
            raw,
            str(esp.size // 1024),
        ],
        what="mkfs.fat",
    )


def _fill_esp(raw: Path, esp: Partition, driver: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="apt-ostree-esp-") as tmp:
        conf = Path(tmp) / "loader.conf"
        # the default entry is libostree's default deployment: it has the highest version
        conf.write_text("timeout 0\nconsole-mode keep\neditor no\n")
        copies = [
            (SYSTEMD_BOOT_EFI, "EFI/BOOT/BOOTX64.EFI"),  # the removable-media path
            (SYSTEMD_BOOT_EFI, "EFI/systemd/systemd-bootx64.efi"),
            (driver, "EFI/systemd/drivers/ext4_x64.efi"),
            (conf, "loader/loader.conf"),
        ]
        _copy_to_esp(raw, esp, copies)


def _copy_to_esp(raw: Path, esp: Partition, copies: Sequence[tuple[Path, str]]) -> None:
    """mtools' copies of (source, path on the ESP), the folders made first."""
    image = f"{raw}@@{esp.start}"
    folders = sorted({str(p) for _, dest in copies for p in Path(dest).parents if p != Path(".")})
    for folder in sorted(folders, key=lambda f: f.count("/")):
        run(["mmd", "-i", image, f"::/{folder}"], what="mmd")
    for source, dest in copies:
        run(["mcopy", "-i", image, source, f"::/{dest}"], what="mcopy")


def _mkfs_ext4(raw: Path, part: Partition, label: str, content: Path) -> None:
    run(
        [
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-L",
            label,
            "-d",
            content,
            "-E",
            f"offset={part.start}",
            raw,
            f"{part.size // 1024}k",
        ],
        env={"MKE2FS_DEVICE_SECTSIZE": str(SECTOR)},
        what=f"mke2fs ({label})",
    )


def ext4_driver(cachedir: Path, progress: Progress) -> Path:
    """rEFInd's ext4 EFI driver: from an installed refind, else extracted from its .deb.

    The refind package is never installed here (its postinst would set up a loader on this
    machine): `apt-get download` fetches it through the host's apt sources, `dpkg-deb -x`
    unpacks it into the cache.
    """
    installed = Path("/") / REFIND_EXT4_DRIVER
    if installed.is_file():
        return installed
    folder = cachedir / "refind"
    driver = folder / "root" / REFIND_EXT4_DRIVER
    if driver.is_file():
        return driver
    with progress.step("Fetching rEFInd's ext4 driver (the refind .deb, not installed)"):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("refind_*.deb"):
            old.unlink()
        run(["apt-get", "download", "refind"], cwd=folder, what="apt-get download refind")
        deb = next(folder.glob("refind_*.deb"))
        run(["dpkg-deb", "-x", deb, folder / "root"], what="dpkg-deb -x")
    if not driver.is_file():
        raise ImageError(f"the refind package has no {REFIND_EXT4_DRIVER}")
    return driver
