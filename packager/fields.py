"""Checked reads of a parsed YAML document, for the manifest (spec.py) and the YAML graph frontend.

Every problem is a BuildError that names the file and the field, e.g.
"digits.yaml: model.graph.nodes[1].inputs: expected a list of tensor names, got int".
"""

from __future__ import annotations

from packager import dynamic
from packager.ir import BuildError


class Fields:
    """Reads fields of the document at `where` (a file name, or "<manifest>")."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, field_path: str, message: str) -> BuildError:
        return BuildError(f"{self.where}: {field_path}: {message}" if field_path else f"{self.where}: {message}")

    def mapping(self, value, field_path: str, allowed: tuple[str, ...] | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.error(field_path, f"expected a mapping, got {typename(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(field_path, f"keys must be strings, got {key!r}")
            if allowed is not None and key not in allowed:
                raise self.error(join(field_path, key), f"unknown key (expected one of: {', '.join(allowed)})")
        return value

    def string(self, value, field_path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(field_path, f"expected a non-empty string, got {typename(value)}")
        return value

    def strings(self, value, field_path: str, what: str = "strings") -> list[str]:
        if not isinstance(value, list):
            raise self.error(field_path, f"expected a list of {what}, got {typename(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise self.error(f"{field_path}[{i}]", f"expected a non-empty string, got {typename(item)}")
        return list(value)

    def shape(self, value, field_path: str, ranges: bool = False) -> tuple:
        """Positive integers; with `ranges`, a dim may also be a range "LO..HI" or "NAME=LO..HI" (a DimRange)."""
        if not isinstance(value, list):
            raise self.error(field_path, f"expected a list of positive integers, got {typename(value)}")
        dims = []
        for i, d in enumerate(value):
            dim = dynamic.parse_dim(d) if ranges or isinstance(d, int) else None
            if dim is None:
                raise self.error(f"{field_path}[{i}]", f"expected a positive integer or a range like 1..64 or "
                                                       f"batch=1..64, got {typename(d)}" if ranges else
                                 f"expected a positive integer (static shapes only), got {typename(d)}")
            dims.append(dim)
        return tuple(dims)


def typename(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"bool ({value})"
    if isinstance(value, (int, float, str)):
        return f"{type(value).__name__} ({value!r})"
    return type(value).__name__


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
