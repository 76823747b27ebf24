"""The one adapter to python3-apt (`apt_pkg`): no module outside this package imports it.

- `host`: the host's apt configuration (read once per process), architecture and release.
- `sources`: `RepoEntry`, reading sources files, rendering deb822, the host's sources.
- `local`: local .debs (`LocalDeb`) and the flat repository that publishes them.
- `root`: `AptRoot`, a scratch apt root: index updates (signatures checked), downloads.
- `resolve`: compose resolution of a `Request` (a variant and packages).
- `layer`: layer resolution of `LayerMarks` on a held base (`resolve_layer`).
- `dpkg`: a tree's dpkg status, version order and apt's extended_states.

Callers import names from the module that defines them; nothing is re-exported here.
"""
