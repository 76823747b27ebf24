"""OCI container images: the image references clients follow, the OCI layout, skopeo's image
proxy, and the client's import of an image into a sysroot's repository."""
