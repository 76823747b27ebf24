"""Stable system users across composes (preserve-passwd, check-passwd) and debconf answers,
at compose and when a client layers onto the image.

Three composes into one repository, from a local repository with Debian's adduser:

1. `user-b-aot` (its postinst makes the system user aotuser-b) and `asks-aot` (debconf
   questions, answered by the treefile);
2. the same treefile after `user-b-aot` 1.1 came to depend on `user-a-aot`, whose user is
   then made first: aotuser-b keeps its IDs, aotuser-a gets new ones;
3. the same with `preserve-passwd: false`: the users swap their IDs, and check-passwd stops
   the compose naming one and both of its IDs, with the repository as it was.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from apt_ostree import keys, ostree
from apt_ostree.layering import LayerPlan, PlannedDeb
from apt_ostree.layering.assemble import AssembleOptions, assemble
from apt_ostree.progress import Progress
from tests.compose.test_compose import bare_repo, cli, repo_snapshot
from tests.support.aptrepo import AptRepo
from tests.support.debian import SUITE, fetch_debian_debs
from tests.support.debs import DebSpec, build_deb, debconf_deb

pytestmark = [pytest.mark.slow]


def user_deb(name: str, user: str, *, version: str = "1.0", depends: str = "adduser") -> DebSpec:
    return DebSpec(
        name=name,
        version=version,
        depends=depends,
        files={f"/usr/share/{name}/marker": "x\n"},
        postinst=f"adduser --system --group --no-create-home --home /nonexistent {user}\n",
    )


ASKS = debconf_deb("asks-aot", {"colour": "grey", "size": "small", "shape": "round"})
LATER = debconf_deb("later-aot", {"pet": "none", "food": "none", "drink": "none"})
ANSWERS = [
    "asks-aot asks-aot/colour string blue",
    "later-aot later-aot/pet string cat",  # not in the image: for layering on its clients
    "later-aot later-aot/food string bread",
]


def ids(text: str, name: str) -> tuple[int, int]:
    fields = next(line for line in text.splitlines() if line.startswith(f"{name}:")).split(":")
    return int(fields[2]), int(fields[3])


def cat(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["ostree", f"--repo={repo}", "cat", ref, path], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def apt_repo(tmp_path_factory: pytest.TempPathFactory) -> AptRepo:
    repo = AptRepo(tmp_path_factory.mktemp("aptrepo"), suite=SUITE)
    repo.add_debs(fetch_debian_debs(["adduser"]))  # the Essential set, adduser and passwd
    repo.add(user_deb("user-a-aot", "aotuser-a"), user_deb("user-b-aot", "aotuser-b"), ASKS)
    repo.publish()
    return repo


def treefile(work: Path, apt: AptRepo, **extra: object) -> Path:
    (work / "answers").write_text("# size and shape\nasks-aot asks-aot/size string large\n\n")
    data = {
        "ref": "test/users",
        "suite": SUITE,
        "variant": "essential",
        "repos": [
            {"uris": apt.file_uri, "suites": SUITE, "components": "main",
             "signed-by": str(apt.keyring)}
        ],
        "packages": ["user-b-aot", "asks-aot"],
        "debconf-file": "answers",
        "debconf": ANSWERS,
        "etc-group-members": ["users"],
        **extra,
    }  # fmt: skip
    path = work / "treefile.json"
    path.write_text(json.dumps(data))
    return path


def test_users_keep_their_ids_and_debconf_answers_reach_compose_and_layering(
    apt_repo: AptRepo, tmp_path: Path
) -> None:
    repo, cache = bare_repo(tmp_path / "repo"), tmp_path / "cache"
    compose = ("compose", "tree", "--repo", repo, "--cachedir", cache)
    result = cli(*compose, treefile(tmp_path, apt_repo))
    assert result.returncode == 0, result.stderr
    first = cat(repo, "test/users", "/usr/etc/passwd")
    b_ids = ids(first, "aotuser-b")
    assert f"\naotuser-b:x:{b_ids[1]}:" in cat(repo, "test/users", "/usr/etc/group")
    # the answers: the treefile's, a default where it has none; kept in the image
    conf = cat(repo, "test/users", "/usr/etc/asks-aot.conf")
    assert conf == "colour=blue\nsize=large\nshape=round\n"
    kept = cat(repo, "test/users", "/usr/share/apt-ostree/debconf-selections")
    assert kept.splitlines() == ["asks-aot asks-aot/size string large", *ANSWERS]
    assert cat(repo, "test/users", "/usr/share/apt-ostree/etc-group-members") == "users\n"

    # 2: aotuser-a is made first now; aotuser-b keeps its IDs
    apt_repo.add(user_deb("user-b-aot", "aotuser-b", version="1.1", depends="adduser, user-a-aot"))
    apt_repo.publish()
    result = cli(*compose, treefile(tmp_path, apt_repo))
    assert result.returncode == 0, result.stderr
    second = cat(repo, "test/users", "/usr/etc/passwd")
    assert ids(second, "aotuser-b") == b_ids
    a_ids = ids(second, "aotuser-a")
    assert a_ids != b_ids
    shadow = cat(repo, "test/users", "/usr/etc/shadow")
    assert shadow.count("\naotuser-b:") == 1 and shadow.count("\naotuser-a:") == 1

    # 3: without the previous databases the order decides, and the check sees it
    before = repo_snapshot(repo)
    result = cli(*compose, treefile(tmp_path, apt_repo, **{"preserve-passwd": False}))
    assert result.returncode == 1, result.stderr
    line = result.error_line
    assert line.startswith("error: check-passwd: user aotuser-")
    moved = "aotuser-a" if "aotuser-a" in line else "aotuser-b"
    old = a_ids if moved == "aotuser-a" else b_ids
    assert f"but UID {old[0]} GID {old[1]} in the previous commit" in line
    assert repo_snapshot(repo) == before

    # a client layers later-aot onto the image: the image's answers, then the machine's
    layered = layer_onto(repo, tmp_path, "later-aot later-aot/food string fish\n")
    assert layered == "pet=cat\nfood=fish\ndrink=none\n"


def layer_onto(repo: Path, tmp_path: Path, machine: str) -> str:
    """Layer LATER onto test/users in a bare copy of `repo` (as in a sysroot) with the
    machine's answers `machine`; its /usr/etc/later-aot.conf."""
    bare = tmp_path / "bare"
    subprocess.run(["ostree", "init", "--mode=bare", f"--repo={bare}"], check=True)
    subprocess.run(["ostree", f"--repo={bare}", "pull-local", repo, "test/users"], check=True)
    commits = ostree.Repo.open(bare)
    base = commits.resolve_ref("test/users")
    assert base is not None
    deb = build_deb(LATER, tmp_path / "debs")
    plan = LayerPlan(install=(PlannedDeb(LATER.name, LATER.version, LATER.architecture, deb),))
    checksum = assemble(
        commits,
        base,
        plan,
        workdir=Path(tempfile.mkdtemp(dir=bare / "tmp")),
        metadata={keys.CLIENTLAYER: True, keys.BASE_CHECKSUM: base},
        progress=Progress(),
        options=AssembleOptions(debconf_answers=machine),
    )
    return cat(bare, checksum, "/usr/etc/later-aot.conf")


def test_answers_for_an_image_without_debconf(apt_repo: AptRepo, tmp_path: Path) -> None:
    tf = treefile(tmp_path, apt_repo, variant="custom", packages=["dpkg"])
    result = cli("compose", "tree", tf, "--repo", tmp_path / "repo", "--dry-run",
                 "--cachedir", tmp_path / "cache")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.error_line == (
        f"error: {tf}: key 'debconf': the image has no debconf to take the answers "
        "(add it to 'packages')"
    )
    assert not (tmp_path / "repo").exists()
