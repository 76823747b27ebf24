"""Compose: from a treefile to an OSTree commit, a disk image or an OCI image."""
