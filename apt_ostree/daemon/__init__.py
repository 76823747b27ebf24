"""apt-ostreed: the D-Bus daemon (see docs/daemon.md)."""
