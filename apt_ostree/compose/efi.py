"""UEFI boot through Debian's signed shim and GRUB for `compose image --bootloader grub-efi`
(and `--secure-boot`, which is grub-efi plus checks that every link of the chain is signed).

The chain is Debian's, as the distribution installs it, so that firmware with Microsoft's
keys enrolled boots it with Secure Boot enforced:

- the ESP holds shim (`shim-signed`, signed by Microsoft) as the removable-media path
  `\\EFI\\BOOT\\BOOTX64.EFI`; shim loads `grubx64.efi` from its own folder (Debian's GRUB,
  `grub-efi-amd64-signed`, signed by Debian's key that shim carries), and `mmx64.efi`
  (MokManager, `shim-helpers-amd64-signed`) when a key enrolment is pending. No `fbx64.efi`:
  shim's fallback would write boot entries into the firmware's NVRAM;
- Debian's signed GRUB is one image with its modules built in (no `insmod` from disk under
  Secure Boot) and has neither `blscfg` nor `syslinuxcfg`; its prefix is `/EFI/debian` on
  the ESP it was started from, so it reads `\\EFI\\debian\\grub.cfg` also when started as
  `\\EFI\\BOOT\\grubx64.efi`. That file is fixed (`ESP_GRUB_CFG`): it finds the /boot
  partition by its label and runs `/loader/grub.cfg` there;
- the image's sysroot repository says `sysroot.bootloader=grub2`, so libostree runs
  `$OSTREE_GRUB2_EXEC -o /boot/loader.N/grub.cfg` at every deployment write, before
  `/boot/loader` is swapped to `loader.N`: apt-ostree's generator
  (`apt_ostree.boot.grubcfg`, shipped as /usr/lib/apt-ostree/grub-generator) writes the
  deployments as menu entries. The image's own libostree does that at build time, and the
  booted machine's at every update, so the image must contain apt-ostree;
- GRUB verifies the kernel through shim (Debian's kernels from linux-signed-amd64 carry an
  Authenticode signature by Debian's key); the initramfs and the configs are not verified.

The signed binaries are taken from the commit when it has them (its shim-signed,
grub-efi-amd64-signed packages), else from those packages fetched with `apt-get download`
through this machine's apt sources and unpacked with `dpkg-deb -x` into the cache: never
installed here (their postinst would set up a boot loader on this machine).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from apt_ostree.errors import ImageError
from apt_ostree.progress import Progress
from apt_ostree.run import run

GENERATOR = "usr/lib/apt-ostree/grub-generator"  # data/grub-generator in the apt-ostree .deb
GENERATOR_ENV = "OSTREE_GRUB2_EXEC"
GRUBENV = "grub/grubenv"  # on /boot: the generated config loads and saves it
ESP_GRUB_CFG_PATH = "EFI/debian/grub.cfg"  # the signed GRUB's $prefix/grub.cfg
KERNELS_GLOB = "usr/lib/modules/*/vmlinuz"


@dataclass(frozen=True)
class SignedBinary:
    """One signed EFI program of the boot chain: where Debian's package puts it, and its
    name in \\EFI\\BOOT on the ESP."""

    what: str
    path: str  # in the package, and in a commit that has the package installed
    package: str
    esp_name: str


SHIM = SignedBinary("shim", "usr/lib/shim/shimx64.efi.signed", "shim-signed", "BOOTX64.EFI")
GRUB = SignedBinary(
    "GRUB",
    "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
    "grub-efi-amd64-signed",
    "grubx64.efi",
)
MOK_MANAGER = SignedBinary(
    "MokManager", "usr/lib/shim/mmx64.efi.signed", "shim-helpers-amd64-signed", "mmx64.efi"
)
BINARIES = (SHIM, GRUB, MOK_MANAGER)


@dataclass(frozen=True)
class EspFile:
    binary: SignedBinary
    source: Path  # a copy outside the commit's checkout (which is removed before the ESP)
    origin: str  # for the progress output: the commit, or the .deb it was unpacked from


ESP_GRUB_CFG = """\
# Written once by apt-ostree compose image, never regenerated: the signed GRUB reads it
# from its prefix, /EFI/debian. libostree (sysroot.bootloader=grub2) writes
# /boot/loader.N/grub.cfg with apt-ostree's generator at every deployment change and
# swaps /boot/loader to it; the first entry is the default deployment.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --label {label} --set root
configfile ($root)/loader/grub.cfg
"""

# ---- Authenticode: is a PE image signed? ----

# PE/COFF (Microsoft's PE format specification): the offset of the "PE\0\0" signature at 0x3c;
# after it the 20-byte COFF header, then the optional header whose magic tells PE32 (0x10b)
# from PE32+ (0x20b). Its data directories follow NumberOfRvaAndSizes, the fifth (index 4) is
# the certificate table: a file offset (not an RVA) and a size. A WIN_CERTIFICATE there starts
# with dwLength (u32), wRevision (u16, 0x0200) and wCertificateType (u16, 2: PKCS#7 SignedData).
_PE_OFFSET = 0x3C
_COFF_HEADER = 20
_DIRECTORIES = {0x10B: 96, 0x20B: 112}  # optional header bytes before its data directories
_CERT_TABLE = 4
_WIN_CERT = struct.Struct("<IHH")
_WIN_CERT_PKCS_SIGNED_DATA = 2


def authenticode_signature(data: bytes) -> tuple[int, int] | None:
    """The (offset, size) of a PE image's Authenticode signature (its certificate table,
    holding a PKCS#7 WIN_CERTIFICATE), or None: not a PE image, or not signed. Whether the
    signature is valid is the firmware's and shim's business; this tells a signed kernel from
    one that was never signed (a self-built one), which would never boot under Secure Boot."""
    try:
        (pe,) = struct.unpack_from("<I", data, _PE_OFFSET)
        if data[:2] != b"MZ" or data[pe : pe + 4] != b"PE\0\0":
            return None
        optional = pe + 4 + _COFF_HEADER
        (magic,) = struct.unpack_from("<H", data, optional)
        directories = optional + _DIRECTORIES[magic]
        (count,) = struct.unpack_from("<I", data, directories - 4)
        if count <= _CERT_TABLE:
            return None
        offset, size = struct.unpack_from("<II", data, directories + 8 * _CERT_TABLE)
        if size < _WIN_CERT.size or offset + size > len(data):
            return None
        length, _, kind = _WIN_CERT.unpack_from(data, offset)
    except (struct.error, KeyError):
        return None
    if kind != _WIN_CERT_PKCS_SIGNED_DATA or not _WIN_CERT.size < length <= size:
        return None
    return offset, size


def check_kernels_signed(tree: Path) -> list[Path]:
    """The commit's kernels (`/usr/lib/modules/*/vmlinuz` in its checkout `tree`), each of
    which must be signed; ImageError naming the first one that is not."""
    kernels = sorted(tree.glob(KERNELS_GLOB))
    if not kernels:
        raise ImageError(f"--secure-boot: the commit has no kernel at /{KERNELS_GLOB}")
    for kernel in kernels:
        if authenticode_signature(kernel.read_bytes()) is None:
            raise ImageError(
                f"--secure-boot: /{kernel.relative_to(tree)} is not signed (no Authenticode"
                " signature): shim would refuse it; install a signed kernel (Debian's"
                " linux-image-*-amd64) in the commit"
            )
    return kernels


def check_generator(tree: Path) -> None:
    """The booted machine's libostree runs the image's generator at every update."""
    if not (tree / GENERATOR).is_file():
        raise ImageError(
            f"--bootloader grub-efi: the commit has no /{GENERATOR}: add the apt-ostree"
            " package to it (libostree runs that generator at every deployment change)"
        )


# ---- where the signed binaries come from ----


def collect(tree: Path, dest: Path, cachedir: Path, progress: Progress) -> list[EspFile]:
    """The signed binaries for the ESP, copied into `dest`: the commit's own (checkout `tree`)
    where it has them, the rest from their packages (`fetch`)."""
    dest.mkdir(parents=True, exist_ok=True)
    found: list[EspFile] = []
    missing = [b for b in BINARIES if not (tree / b.path).is_file()]
    fetched = fetch([b.package for b in missing], cachedir, progress) if missing else {}
    for binary in BINARIES:
        if binary in missing:
            deb, root = fetched[binary.package]
            source, origin = root / binary.path, f"{deb.name} (this machine's apt sources)"
        else:
            source, origin = tree / binary.path, f"the commit's /{binary.path}"
        if not source.is_file():
            raise ImageError(f"{binary.package} has no /{binary.path}")
        copy = dest / binary.esp_name
        shutil.copyfile(source, copy)
        found.append(EspFile(binary, copy, origin))
    return found


def fetch(
    packages: Sequence[str], cachedir: Path, progress: Progress
) -> dict[str, tuple[Path, Path]]:
    """Each package's current .deb and the folder it is unpacked in, under CACHEDIR/efi;
    package -> (.deb, folder). Fetched at every build (`apt-get download`, this machine's apt
    sources, a few MB): a security update of shim or GRUB (a new SBAT generation that
    firmware may come to demand) goes into the next image."""
    folder = cachedir / "efi"
    folder.mkdir(parents=True, exist_ok=True)
    for package in packages:
        for old in folder.glob(f"{package}_*.deb"):
            old.unlink()
    with progress.step(f"Fetching {', '.join(packages)} (the .debs, not installed)"):
        run(["apt-get", "download", *packages], cwd=folder, what="apt-get download")
    result: dict[str, tuple[Path, Path]] = {}
    for package in packages:
        deb = next(folder.glob(f"{package}_*.deb"), None)
        if deb is None:
            raise ImageError(f"apt-get download {package} left no .deb in {folder}")
        for other in folder.glob(f"{package}_*"):  # an earlier version's unpacked folder
            if other.is_dir() and other.name != deb.stem:
                shutil.rmtree(other)
        root = folder / deb.stem
        if not root.is_dir():
            partial = folder / f".{deb.stem}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            run(["dpkg-deb", "-x", deb, partial], what="dpkg-deb -x")
            partial.rename(root)
        result[package] = (deb, root)
    return result


def check_signed(files: Sequence[EspFile]) -> None:
    """--secure-boot: shim, GRUB and MokManager must carry their signatures."""
    for f in files:
        if authenticode_signature(f.source.read_bytes()) is None:
            raise ImageError(f"--secure-boot: {f.binary.what} ({f.origin}) is not signed")


def esp_copies(files: Sequence[EspFile], grub_cfg: Path) -> list[tuple[Path, str]]:
    """(source, ESP path) pairs, for mtools' `::` paths."""
    return [
        *((f.source, f"EFI/BOOT/{f.binary.esp_name}") for f in files),
        (grub_cfg, ESP_GRUB_CFG_PATH),
    ]
