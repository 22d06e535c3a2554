"""The module kinds registered in this process (dpk_registered_kinds)."""

from __future__ import annotations

from loader import errors
from loader._native import check, ffi, lib


def registered_kinds() -> list[str]:
    """Names of the registered kinds, sorted: the built-ins (dso, graph, json,
    params) and any an application registered. Kinds a model file carries are
    not registered and are not listed."""
    count = ffi.new("size_t *")
    check(lib.dpk_registered_kinds(ffi.NULL, 0, count))
    while True:  # a registration in another thread between the two calls: ask again
        names = ffi.new("const char *[]", max(count[0], 1))
        try:
            check(lib.dpk_registered_kinds(names, len(names), count))
        except errors.OutOfRangeError:
            continue
        return [ffi.string(names[i]).decode() for i in range(count[0])]
