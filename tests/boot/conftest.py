"""The composed minimal example with apt-ostree inside (tests/vm/conftest.py's session
fixture), for booting its tree in a container. Only that fixture: the VM tests' autouse
fixtures (qemu must be installed) do not apply here."""

from tests.vm.conftest import apt_ostree_repo

__all__ = ["apt_ostree_repo"]
