"""Boot disk images under qemu (TCG: KVM does not work on these machines) and drive the guest.

How the host talks to the guest: a tiny agent on the guest's second serial port. Images built
for VM tests get machine-local files in /etc (`GUEST_ETC_FILES`, handed to `compose image`'s
`etc_files`; the commit itself is the plain one):

- `apt-ostree-test/agent.sh`, run by `apt-ostree-test-agent.service`, which
  `multi-user.target.d/` pulls in and which is ordered after multi-user.target and
  apt-ostree-boot-check.service: its first line, `@@READY@@`, means that the guest reached
  multi-user and a trial boot was judged (one that failed reboots before it);
- a systemd-networkd config taking DHCP on the virtio NIC, so the guest reaches the host's
  loopback as 10.0.2.2 (qemu user networking).

The protocol on /dev/ttyS1 (raw mode, no echo): the host sends a command as one base64 line;
the agent runs it with bash (stdout and stderr merged, stdin /dev/null) and answers with one
base64 line of the output and `@@RC <exit code>@@`. The host side of ttyS1 is a qemu unix
socket chardev; ttyS0 (the kernel and systemd console) goes to `console.log` for diagnostics.

Every guest boots a copy-on-write overlay (`qemu-img create -f qcow2 -b IMAGE`) with its own
copy of OVMF's variable store, so the image stays pristine. qemu is killed by its PID.

One vCPU: measured on a loaded 2-core host, a guest with `-smp 1` booted in 39 s (33 s of qemu
CPU time) against 45 s (40 s) with `-smp 2`, and `apt-ostree status` took 5.6 s against 7.8 s:
TCG gains nothing from a second vCPU there, whose spinning costs CPU time, and the other core
stays free for the rest of the suite (tools/test runs the VM tests beside it).

Options: `secure_boot` boots OVMF's Secure Boot build with Microsoft's keys enrolled (a copy
of OVMF_VARS_4M.ms.fd), as a PC sold with Windows has them, so Debian's signed shim is
trusted; OVMF keeps its variables in SMM there, so the machine is q35 with `smm=on` and the
flash is marked secure. `watchdog` adds an i6300esb watchdog whose expiry resets the machine,
which `-no-reboot` turns into qemu's exit, as for any reset (see `VM.reboot`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
OVMF_CODE_SECURE_BOOT = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_MS_KEYS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")  # Microsoft's keys enrolled
HOST_FROM_GUEST = "10.0.2.2"  # qemu user networking's alias of the host's loopback
READY = b"@@READY@@"
RC_RE = re.compile(rb"([A-Za-z0-9+/=]*)\r?\n@@RC (\d+)@@")

AGENT_SH = r"""#!/bin/bash
# apt-ostree test agent: runs what the host sends on /dev/ttyS1 (see tests/support/vm.py)
set -u
tty=/dev/ttyS1
stty -F "$tty" raw -echo -echoe -echok -icrnl -onlcr
exec <"$tty" >"$tty"
echo "@@READY@@"
while IFS= read -r line; do
  line=${line%$'\r'}
  [ -n "$line" ] || continue
  printf '%s' "$line" | base64 -d >/run/apt-ostree-agent.cmd 2>/dev/null
  bash /run/apt-ostree-agent.cmd >/run/apt-ostree-agent.out 2>&1 </dev/null
  rc=$?
  base64 -w0 /run/apt-ostree-agent.out
  printf '\n@@RC %d@@\n' "$rc"
done
"""

AGENT_UNIT = """[Unit]
Description=apt-ostree test agent on ttyS1
# READY once the boot is up and judged: a trial boot that fails reboots before it
After=multi-user.target apt-ostree-boot-check.service

[Service]
ExecStart=/bin/bash /etc/apt-ostree-test/agent.sh
Restart=always
"""

GUEST_ETC_FILES: dict[str, bytes] = {
    "apt-ostree-test/agent.sh": AGENT_SH.encode(),
    "systemd/system/apt-ostree-test-agent.service": AGENT_UNIT.encode(),
    "systemd/system/multi-user.target.d/apt-ostree-test-agent.conf": (
        b"[Unit]\nWants=apt-ostree-test-agent.service\n"
    ),
    "systemd/network/80-apt-ostree-test.network": b"[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n",
}


class GuestError(AssertionError):
    """The guest did not answer in time, or qemu stopped; carries the console's tail."""


@dataclass(frozen=True)
class GuestResult:
    returncode: int
    output: str


class VM:
    """One qemu guest booted from a copy-on-write overlay of `image`; use `boot()`."""

    def __init__(
        self,
        image: Path,
        workdir: Path,
        *,
        memory_mib: int = 1024,
        cpus: int = 1,
        secure_boot: bool = False,
        watchdog: bool = False,
    ) -> None:
        self.image = image
        self.workdir = workdir
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.secure_boot = secure_boot
        self.watchdog = watchdog
        self.console = workdir / "console.log"
        self.socket_path = workdir / "agent.sock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._buffer = b""
        self.started = 0.0
        self.boot_seconds: list[float] = []  # qemu start or reboot -> @@READY@@, per boot

    # ---- lifecycle ----

    def _argv(self) -> list[str]:
        fmt = "qcow2" if self.image.suffix == ".qcow2" else "raw"
        overlay = self.workdir / "overlay.qcow2"
        if not overlay.exists():
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", self.image, overlay],
                check=True,
            )
            vars_template = OVMF_VARS_MS_KEYS if self.secure_boot else OVMF_VARS
            shutil.copyfile(vars_template, self.workdir / "vars.fd")
        code = OVMF_CODE_SECURE_BOOT if self.secure_boot else OVMF_CODE
        return [
            "qemu-system-x86_64", *self._machine_args(), "-m", str(self.memory_mib),
            "-smp", str(self.cpus), "-nodefaults", "-vga", "none", "-display", "none",
            "-no-user-config",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={self.workdir / 'vars.fd'}",
            "-drive", f"if=virtio,format=qcow2,file={overlay}",
            "-chardev", f"file,id=console,path={self.console},append=on",
            "-serial", "chardev:console",
            "-chardev", f"socket,id=agent,path={self.socket_path},server=on,wait=off",
            "-serial", "chardev:agent",
            "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0",
            "-no-reboot",  # a reset ends qemu: see reboot()
            *self._watchdog_args(),
        ]  # fmt: skip

    def _machine_args(self) -> list[str]:
        if not self.secure_boot:
            return ["-machine", "q35"]
        # OVMF's Secure Boot build keeps its variables in SMM, behind a flash only SMM may write
        return ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]

    def _watchdog_args(self) -> list[str]:
        if not self.watchdog:
            return []
        # qemu 7.2 (Debian 12) has both spellings; -action is the one that stays
        return ["-device", "i6300esb", "-action", "watchdog=reset"]

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "qemu.stderr").open("ab"),
        )
        self.started = time.monotonic()
        self._connect()

    def _connect(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            self._check_alive()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise GuestError("qemu's agent socket never appeared") from None
                time.sleep(0.05)
                continue
            self._sock = sock
            return

    def stop(self) -> None:
        """Kill qemu (by its PID) and close the socket; safe to call twice."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    # ---- reading the agent ----

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_bytes().decode(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])

    def _check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            code = None if self._proc is None else self._proc.returncode
            raise GuestError(f"qemu is not running (exit {code}); console:\n{self.console_tail()}")

    def _read_until(self, pattern: re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while (m := pattern.search(self._buffer)) is None:
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(
                    f"no answer from the guest within {timeout:.0f} s; console:\n"
                    + self.console_tail()
                )
            self._sock.settimeout(min(left, 1.0))
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise GuestError(f"qemu closed the agent socket; console:\n{self.console_tail()}")
            self._buffer += chunk
        self._buffer = self._buffer[m.end() :]
        return m

    def wait_ready(self, timeout: float = 300) -> float:
        """Wait for the agent's READY (multi-user reached); return seconds since (re)start.

        Seen once here under TCG, before `reboot()` restarted qemu: after a clean shutdown
        ("reboot: machine restart" the last console line) OVMF never started the loader again,
        no output for minutes. The guest had done its part, so that case gets one power cycle
        of qemu (same disk overlay and variable store), as a person would press reset; any
        other silence fails."""
        ready = re.compile(re.escape(READY))
        try:
            self._read_until(ready, timeout / 2)
        except GuestError:
            if not self._stuck_in_firmware():
                self._read_until(ready, timeout / 2)
            else:
                with (self.workdir / "power-cycles.log").open("a") as log:
                    log.write(self.console_tail(3) + "\n")
                self.stop()
                self.start()
                self._read_until(ready, timeout)
        seconds = time.monotonic() - self.started
        self.boot_seconds.append(seconds)
        self._log(f"{seconds:6.1f} s  boot {len(self.boot_seconds)}")
        return seconds

    def _stuck_in_firmware(self) -> bool:
        lines = [ln.strip() for ln in self.console_tail(5).splitlines() if ln.strip()]
        return bool(lines) and lines[-1].endswith("reboot: machine restart")

    def _wait_exit(self, timeout: float) -> bool:
        """Wait for qemu to exit by itself; False when it did not within `timeout`."""
        deadline = time.monotonic() + timeout
        while self._proc is not None and self._proc.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    # ---- commands ----

    def run(self, command: str, *, timeout: float = 120) -> GuestResult:
        """Run `command` with bash in the guest; its merged output and exit code."""
        assert self._sock is not None
        self._buffer = b""
        start = time.monotonic()
        self._sock.sendall(base64.b64encode(command.encode()) + b"\n")
        m = self._read_until(RC_RE, timeout)
        output = base64.b64decode(m.group(1)).decode(errors="replace")
        self._log(f"{time.monotonic() - start:6.1f} s  rc {int(m.group(2)):3d}  {command}")
        return GuestResult(int(m.group(2)), output)

    def _log(self, line: str) -> None:
        """commands.log in the VM's folder: what each command and boot cost (TCG is slow)."""
        with (self.workdir / "commands.log").open("a") as log:
            log.write(line.replace("\n", "\\n")[:300] + "\n")

    def check(self, command: str, *, timeout: float = 120) -> str:
        """Run `command`; its output, or GuestError when it fails."""
        result = self.run(command, timeout=timeout)
        if result.returncode != 0:
            raise GuestError(f"{command!r} failed ({result.returncode}):\n{result.output}")
        return result.output

    def reboot(self, *, timeout: float = 300) -> float:
        """Reboot the guest and wait for the next boot's READY; seconds from the reboot command.

        The guest shuts down as in any reboot (staged deployments are finalized on the way
        down), and its reset ends qemu (`-no-reboot`), which is started again on the same disk
        overlay and variable store: a cold reset instead of a warm one. Under TCG here OVMF
        took 3-6 s to start the loader after a cold start but 40-125 s after a warm reset (and
        once never started it). The reboot starts a second after the agent answered, since
        shutdown may stop the agent before it writes an answer; the timer is made exact
        (a timer's default AccuracySec=1min let the reboot start up to a minute late: 38 s
        from the command to the shutdown was measured)."""
        self.check("systemd-run --on-active=1 --timer-property=AccuracySec=10ms systemctl reboot")
        started = time.monotonic()
        if not self._wait_exit(timeout):
            raise GuestError(
                f"the guest did not shut down in {timeout:.0f} s:\n{self.console_tail()}"
            )
        self.stop()
        self.start()
        self.started = started
        return self.wait_ready(timeout)

    def poweroff(self, *, timeout: float = 120) -> bool:
        """Power the guest off and wait for qemu to exit; False when it did not in time."""
        assert self._sock is not None
        self._sock.sendall(base64.b64encode(b"systemctl --no-block poweroff") + b"\n")
        return self._wait_exit(timeout)


@contextlib.contextmanager
def boot(
    image: Path,
    workdir: Path,
    *,
    timeout: float = 300,
    secure_boot: bool = False,
    watchdog: bool = False,
) -> Iterator[VM]:
    """Boot `image` (copy-on-write) and wait until multi-user; qemu is killed at the end."""
    vm = VM(image, workdir, secure_boot=secure_boot, watchdog=watchdog)
    try:
        vm.start()
        vm.wait_ready(timeout)
        yield vm
    finally:
        vm.stop()


def have_qemu() -> bool:
    return shutil.which("qemu-system-x86_64") is not None and OVMF_CODE.is_file()


def have_secure_boot() -> bool:
    return OVMF_CODE_SECURE_BOOT.is_file() and OVMF_VARS_MS_KEYS.is_file()
