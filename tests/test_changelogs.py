"""Debian changelogs cut to what an upgrade brings (`db diff --changelogs`)."""

from __future__ import annotations

from apt_ostree.changelogs import between, entries

LOG = """\
base-files (13.8) trixie; urgency=medium

  * Point release 13.8.

 -- Santiago Vila <sanvila@debian.org>  Sat, 07 Nov 2026 10:00:00 +0100

base-files (13.7) trixie; urgency=medium

  * Point release 13.7.
    Second line.

 -- Santiago Vila <sanvila@debian.org>  Sat, 05 Sep 2026 10:00:00 +0100

base-files (13.6~deb13u1) trixie; urgency=medium

  * A ~ version, older than 13.6.

 -- Santiago Vila <sanvila@debian.org>  Sat, 01 Aug 2026 10:00:00 +0100

Local variables:
mode: debian-changelog
End:
"""


def test_entries_are_split_at_their_headers_newest_first() -> None:
    found = entries(LOG)
    assert [v for v, _ in found] == ["13.8", "13.7", "13.6~deb13u1"]
    assert found[1][1].splitlines()[0] == "base-files (13.7) trixie; urgency=medium"
    assert found[1][1].splitlines()[-1].startswith(" -- Santiago Vila")
    assert "Local variables" not in found[-1][1] and "mode:" not in found[-1][1]


def test_between_takes_what_is_newer_than_old_up_to_new_in_debian_order() -> None:
    assert [line for line in between(LOG, "13.6", "13.8").splitlines() if "(" in line] == [
        "base-files (13.8) trixie; urgency=medium",
        "base-files (13.7) trixie; urgency=medium",
    ]
    # 13.6~deb13u1 sorts before 13.6: newer than 13.5, so it is shown
    assert "(13.6~deb13u1)" in between(LOG, "13.5", "13.7")
    assert "(13.8)" not in between(LOG, "13.5", "13.7")
    assert between(LOG, "13.8", "13.8") == ""
    assert between("not a changelog\n", "1", "2") == ""
