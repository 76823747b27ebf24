"""The `apt-ostree` command line."""
