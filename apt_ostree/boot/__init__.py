"""Booting: the GRUB configuration that follows libostree's deployments, boot trials with
automatic fallback, and the health checks that bless a trial (docs/boot.md)."""
