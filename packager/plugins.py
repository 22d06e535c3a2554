"""Backends from other packages: the `dsopack.backends` entry point group.

A separately installed package adds a backend by declaring, in its
pyproject.toml,

    [project.entry-points."dsopack.backends"]
    lut = "dsopack_lut.backend:LutBackend"

and the name (`lut`) is then usable in a manifest's `backends:` list and in a
node's `backend:` override, next to the built-ins of partition.BACKENDS. A
built-in name cannot be taken by a plugin (the built-in wins; the plugin's
entry point is ignored). Nothing is imported until a manifest asks for the
name. docs/backends.md describes the interface a backend implements.
"""

from __future__ import annotations

from importlib import metadata

from packager.backends.base import Backend
from packager.ir import BuildError

GROUP = "dsopack.backends"


def entry_point_backends() -> dict[str, str]:
    """name -> "module:Class" for every installed `dsopack.backends` entry point.

    Read from the installed distributions each call (cheap: metadata files
    only), so a package installed after start-up is seen."""
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def check_backend(obj, name: str, origin: str) -> Backend:
    """`obj` (what the class built) if it behaves as a backend called `name`, else a BuildError.

    `origin` says where it came from ("entry point lut = dsopack_lut.backend:LutBackend")."""
    if not isinstance(obj, Backend):
        raise BuildError(f"backend '{name}' ({origin}) is a {type(obj).__name__}, not a subclass of "
                         "packager.backends.base.Backend (docs/backends.md)")
    for method in ("supports", "lower"):
        if getattr(type(obj), method) is getattr(Backend, method):
            raise BuildError(f"backend '{name}' ({origin}) does not implement {method}(); a backend implements "
                             "supports(node, graph) and lower(region, graph) (docs/backends.md)")
    declared = getattr(obj, "name", None)
    if declared != name:
        raise BuildError(f"backend '{name}' ({origin}) calls itself {declared!r}; its `name` attribute must be "
                         f"'{name}'")
    return obj
