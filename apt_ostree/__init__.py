"""apt-ostree: a hybrid image/package system for Debian on libostree."""

__version__ = "0.1.0"
