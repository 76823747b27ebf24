"""The raw system calls the project makes itself (through libc, with ctypes): mount
namespaces, mounts, and the parent-death signal. Everything else runs tools (`run.py`)."""

from __future__ import annotations

import ctypes
import os
import signal

CLONE_NEWNS = 0x00020000
MS_REMOUNT = 0x20
MS_REC = 0x4000
MS_SLAVE = 0x80000
PR_SET_PDEATHSIG = 1


class SyscallError(OSError):
    """A system call failed; `str()` is the call and the kernel's reason."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SyscallError(errno, f"{what}: {os.strerror(errno)}")


def unshare_mounts() -> None:
    """A mount namespace of this process's own (unshare(2) with CLONE_NEWNS)."""
    _check(_libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")


def make_mounts_slave() -> None:
    """Mounts below / receive the host's mount events but send none back (mount(2) with
    MS_REC|MS_SLAVE, as systemd's MountFlags=slave)."""
    _check(_libc().mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")


def remount(target: str, *, fstype: str, read_only: bool) -> None:
    """Remount `target` read-write (or read-only) in this mount namespace."""
    flags = MS_REMOUNT | (1 if read_only else 0)  # MS_RDONLY is 1
    _check(_libc().mount(fstype.encode(), target.encode(), None, flags, None), f"remount {target}")


def private_mount_namespace() -> str | None:
    """A mount namespace of our own with slave propagation: the host's mounts reach in, the
    mounts that we and our children make (mmdebstrap's /proc and /sys, layering's overlays)
    stay in and vanish with the last of us, even after SIGKILL. Returns why not when the
    kernel refuses (not root: such a caller mounts nothing)."""
    try:
        unshare_mounts()
    except SyscallError as e:
        return os.strerror(e.errno)
    make_mounts_slave()
    return None


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent exits (prctl(2)
    PR_SET_PDEATHSIG)."""
    _check(_libc().prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
