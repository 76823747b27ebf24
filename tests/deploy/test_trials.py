"""The boot-trial machinery on folder sysroots and in the typed core: libostree's grub2 backend
running apt-ostree's generator at every deployment write (the host's libostree; the guest's is
booted in tests/vm/test_trial.py), GRUB's env block, the decision at boot, and the blocklist
of updates whose trial failed (what `upgrade`, `deploy` and `status` do with it)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from apt_ostree import ostree as ostree_mod
from apt_ostree.boot import grubcfg, grubenv, health, trial
from apt_ostree.cli.render import render_header, render_status
from apt_ostree.config import load_config
from apt_ostree.errors import ConfigError, RefusedError, StateError
from apt_ostree.system.requests import Deploy, Rollback, Status, Upgrade
from apt_ostree.system.results import BootFailure, DeploymentInfo, StatusResult
from tests.support.sysroots import Machine, cli, ok

# ---- the generator and the env block ----


def _entry(folder: Path, version: int, csum: str) -> None:
    (folder / f"ostree-{version}.conf").write_text(
        f"title Debian GNU/Linux 13 (trixie) 13.{version} (ostree:{2 - version})\n"
        f"version {version}\n"
        f"options root=LABEL=root rw ostree=/ostree/boot.1/debian/{csum}/0\n"
        f"linux /ostree/debian-{csum}/vmlinuz-6.12\n"
        f"initrd /ostree/debian-{csum}/initramfs-6.12.img\n"
    )


def test_generator_writes_a_config_grub_accepts(tmp_path: Path) -> None:
    """Entries in libostree's order (highest version first), the trial logic, and a script
    that Debian's `grub-script-check` parses."""
    entries = tmp_path / "loader.1" / "entries"
    entries.mkdir(parents=True)
    _entry(entries, 1, "old")
    _entry(entries, 2, "new")
    output = tmp_path / "loader.1" / "grub.cfg"
    proc = subprocess.run(
        [grubcfg.__file__, "-o", str(output)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    text = output.read_text()
    subprocess.run(["grub-script-check", str(output)], check=True)
    titles = re.findall(r"^menuentry '([^']*)'", text, re.M)
    assert titles == ["Debian GNU/Linux 13 (trixie) 13.2 (ostree:0)", "Debian GNU/Linux 13 "
                      "(trixie) 13.1 (ostree:1)"]  # fmt: skip
    linux = re.findall(r"^  linux (.*)$", text, re.M)
    assert linux[0].startswith("'/ostree/debian-new/vmlinuz-6.12' 'root=LABEL=root'")
    assert linux[0].endswith("$aptostree_trial_args") and "trial" not in linux[1]
    assert "set default=1" in text and "save_env -f ($root)/grub/grubenv aptostree_trial" in text


def test_generator_fails_without_entries_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "entries").mkdir()
    (tmp_path / "entries" / "ostree-1.conf").write_text("title no kernel\n")
    proc = subprocess.run(
        [grubcfg.__file__, "-o", str(tmp_path / "grub.cfg")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "no linux line" in proc.stderr
    assert not (tmp_path / "grub.cfg").exists()


def test_env_block_is_grub_editenvs_format(tmp_path: Path) -> None:
    env = tmp_path / "grubenv"
    grubenv.write(env, {"aptostree_trial": "pending", "aptostree_trial_args": "a=1 b"})
    assert env.stat().st_size == grubenv.SIZE
    listed = subprocess.run(["grub-editenv", str(env), "list"], capture_output=True, text=True)
    assert listed.stdout.splitlines() == ["aptostree_trial=pending", "aptostree_trial_args=a=1 b"]
    subprocess.run(["grub-editenv", str(env), "set", "saved_entry=x"], check=True)
    assert grubenv.update(env, aptostree_trial="") == {
        "aptostree_trial_args": "a=1 b",
        "saved_entry": "x",
    }
    with pytest.raises(StateError, match="over 1024 bytes"):
        grubenv.write(env, {"x": "y" * 1100})
    assert grubenv.read(env)["saved_entry"] == "x"  # unchanged


# ---- libostree's grub2 backend runs it ----


def _use_grub(m: Machine) -> None:
    ostree_mod.Sysroot(m.path).repo.set_config("sysroot", "bootloader", "grub2")
    (m.path / "boot" / "grub").mkdir(parents=True, exist_ok=True)
    grubenv.write(m.path / trial.GRUBENV, {})


def _menu(m: Machine) -> list[tuple[str, str]]:
    """The title and `ostree=` argument of each menu entry of /boot/loader/grub.cfg."""
    text = (m.path / "boot/loader/grub.cfg").read_text()
    return re.findall(r"^menuentry '([^']*)'.*\n  linux .*'(ostree=[^']+)'", text, re.M)


def _bls_order(m: Machine) -> list[tuple[str, str]]:
    """The same of libostree's BLS entries, in libostree's boot order."""
    entries = grubcfg.read_entries(m.path / "boot/loader/entries")
    return [(e.title, next(o for o in e.options.split() if o.startswith("ostree=")))
            for e in entries]  # fmt: skip


def test_grub_config_follows_upgrade_and_rollback(machine: Machine) -> None:
    """Every deployment write, by this host's libostree, rewrites loader.N/grub.cfg in the same
    swap as the entries: after an upgrade the new deployment is the first entry, after a
    rollback the old one is."""
    m = machine
    _use_grub(m)
    m.change(Upgrade())
    assert len(_menu(m)) == 2 and _menu(m) == _bls_order(m)
    assert " 1.1 (ostree:0)" in _menu(m)[0][0] and " 1.0 (ostree:1)" in _menu(m)[1][0]
    m.change(Rollback())
    assert _menu(m) == _bls_order(m)
    assert " 1.0 (ostree:0)" in _menu(m)[0][0] and " 1.1 (ostree:1)" in _menu(m)[1][0]
    # a folder sysroot boots nothing: no trial is armed by a deploy here
    assert trial.load(m.system().var()).trial is None
    assert grubenv.read(m.path / trial.GRUBENV) == {}


# ---- the decision at boot ----


def _deployment(csum: str, *, booted: bool = False, staged: bool = False) -> ostree_mod.Deployment:
    return ostree_mod.Deployment("debian", csum, 0, 0, booted, staged, False, "none", "", (),
                                 Path("/"))  # fmt: skip


def _trial(csum: str, previous: str) -> trial.Trial:
    return trial.Trial(f"debian-{csum}.0", csum, csum, "13.1", f"debian-{previous}.0", 0)


def test_decide() -> None:
    new, old = _deployment("new"), _deployment("old")
    t = _trial("new", "old")
    assert trial.decide(None, [new, old]) is trial.Verdict.NONE
    booted_new = _deployment("new", booted=True)
    assert trial.decide(t, [booted_new, old]) is trial.Verdict.CHECK
    # GRUB fell back to entry 1 (a hang, a panic, the deadline)
    assert trial.decide(t, [new, _deployment("old", booted=True)]) is trial.Verdict.FELL_BACK
    # the staged deployment was dropped before any reboot, or never finalized
    assert trial.decide(t, [_deployment("old", booted=True)]) is trial.Verdict.GONE
    assert trial.decide(t, [_deployment("old", booted=True), _deployment("new", staged=True)]) is (
        trial.Verdict.GONE
    )
    assert [d.checksum for d in trial.first([new, old], old.id)] == ["old", "new"]


# ---- health checks ----


def _check(root: Path, folder: str, name: str, script: str, mode: int = 0o755) -> None:
    path = root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(mode)


def test_health_checks(tmp_path: Path) -> None:
    """/etc masks /usr/lib by name; files that are not executable do not run; a failed wanted
    check is reported but the boot counts; the first failed required check is the reason."""
    usr, etc = "usr/lib/apt-ostree/health.d", "etc/apt-ostree/health.d"
    _check(tmp_path, f"{usr}/required.d", "10-packaged", "#!/bin/sh\necho broken; exit 1\n")
    _check(tmp_path, f"{etc}/required.d", "10-packaged", "#!/bin/sh\nexit 0\n")  # masks it
    _check(tmp_path, f"{etc}/required.d", "20-notes", "not run\n", 0o644)
    _check(tmp_path, f"{etc}/wanted.d", "30-nice", "#!/bin/sh\necho meh >&2; exit 2\n")
    report = health.run_checks(tmp_path)
    assert report.ok and report.reason() == ""
    assert [r.name for r in report.results] == ["required-units", "10-packaged", "30-nice"]
    assert (
        report.failures(health.Kind.WANTED)[0].line()
        == "wanted check 30-nice failed: meh (exit status 2)"
    )
    _check(tmp_path, f"{etc}/required.d", "40-disk", "#!/bin/sh\necho /var is full; exit 1\n")
    report = health.run_checks(tmp_path)
    assert not report.ok
    assert report.reason() == "required check 40-disk failed: /var is full (exit status 1)"
    out = subprocess.run(
        ["/usr/bin/python3", "-m", "apt_ostree.boot.health", "--json",
         "--root", str(tmp_path)], capture_output=True, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert out.returncode == 1
    assert health.report_from_wire(json.loads(out.stdout)) == report


# ---- configuration ----


def test_config_keys(tmp_path: Path) -> None:
    conf = tmp_path / "apt-ostreed.conf"
    conf.write_text("[Daemon]\nBootTrialTimeout=0\nVerifyUpdates=yes\n")
    config = load_config(conf)
    assert config.boot_trial_timeout == 0 and config.verify_updates
    conf.write_text("[Daemon]\nBootTrialTimeout=10min\n")
    with pytest.raises(ConfigError, match=r"BootTrialTimeout=10min: expected seconds"):
        load_config(conf)


# ---- the blocklist ----


def _fail_trial_of(m: Machine, version: str) -> str:
    """Record that `version` failed its trial boot, as apt-ostree-boot-check does."""
    csum = m.served.images.checksum(version)
    var = m.system().var()
    state = trial.TrialState(trial.Trial(f"test-{csum}.0", csum, csum, version, "x", 0))
    trial.record_failure(var, state, "required check 50-app failed: exit status 1")
    return csum


def test_blocked_update_is_not_staged_again_until_deployed(machine: Machine) -> None:
    m = machine
    c11 = _fail_trial_of(m, "1.1")
    before = m.snapshot()
    with pytest.raises(RefusedError, match=rf"{c11[:12]} \(version 1.1\) failed its trial boot"):
        m.run(Upgrade())
    assert m.snapshot() == before
    refused = cli("upgrade", *m.args())
    assert refused.returncode == 1
    assert refused.error_line.endswith(f"`apt-ostree deploy revision={c11}`) to try it again")
    # status shows it, in text and JSON
    status = ok("status", *m.args()).stdout
    assert re.search(rf"BlockedUpdates:\n +{c11[:12]} \(1\.1, .*\): required check 50-app", status)
    failures = json.loads(ok("status", "--json", *m.args()).stdout)["boot-failures"]
    assert [(f["base-checksum"], f["reason"]) for f in failures] == [
        (c11, "required check 50-app failed: exit status 1")
    ]
    # an explicit deploy tries it again, and forgets the failure
    m.change(Deploy(revision=f"revision={c11}"))
    assert m.versions() == ["1.1", "1.0"]
    result = m.run(Status())
    assert isinstance(result, StatusResult) and result.boot_failures == ()


def _info(
    id_: str, *, booted: bool, trial_: str | None = None, failure: str | None = None
) -> DeploymentInfo:
    return DeploymentInfo(id=id_, osname="debian", checksum=id_, base_checksum=id_, version="13.2",
                          timestamp=0, origin="o:r", override_commit=None, booted=booted,
                          staged=False, pinned=False, unlocked="none", boot_trial=trial_,
                          boot_failure=failure)  # fmt: skip


def test_failure_on_the_same_base_blocks_nothing(tmp_path: Path) -> None:
    """A kernel-argument trial that failed back onto its own base: shown, not blocked."""
    state = trial.TrialState(_trial("same", "same"))
    new = trial.record_failure(tmp_path, state, "hung", back_on="same")
    assert new.failure_of("debian-same.0") is not None and new.blocklist() == ()
    assert trial.load(tmp_path) == new and new.blocked("same") is None


def test_status_shows_trial_and_failure() -> None:
    """The rows `status` prints for a deployment on trial and one that failed its trial."""
    lines = render_status(
        [_info("n", booted=True, trial_="booting"), _info("f", booted=False, failure="why")],
        verbose=False,
    )
    assert "            BootTrial: on trial: not yet blessed" in lines
    assert "           BootFailed: why" in lines
    failure = BootFailure("f", "b" * 64, "13.2", "why", 0)
    header = render_header(StatusResult((), boot_failures=(failure,)))
    assert header[-2] == "BlockedUpdates:"
    assert re.fullmatch(r" {23}b{12} \(13\.2, .+\): why", header[-1]), header


def test_no_rollback_is_a_trial(machine: Machine) -> None:
    m = machine
    _use_grub(m)
    var = m.system().var()
    trial.arm(m.path, var, _trial("x", "y"), 600)
    assert grubenv.read(m.path / trial.GRUBENV)["aptostree_trial"] == "pending"
    m.change(Upgrade())
    m.change(Rollback())
    assert trial.load(var).trial is None and grubenv.read(m.path / trial.GRUBENV) == {}


def test_verify_refuses_and_changes_nothing(machine: Machine) -> None:
    """`upgrade --verify` of a tree that cannot boot in a container (the test images have no
    systemd): one error line, and the deployments are as they were."""
    before = machine.snapshot()
    refused = cli("upgrade", "--verify", *machine.args())
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "systemd" in refused.error_line, refused.error_line
    assert machine.snapshot() == before
    assert machine.versions() == ["1.0"]
