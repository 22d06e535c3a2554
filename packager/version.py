"""The installed dsopack version: the generated C's header and the manifest's producer carry it."""

from __future__ import annotations


def version() -> str:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("dsopack")
    except Exception:
        return "0.1.0"
