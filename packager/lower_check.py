"""Check what a backend's lower() returned before the build uses it.

A backend may come from another package (plugins.py), so its output is checked
like any input: the type, every field's type, the names it claims, and that
its C really defines the function(s) it says it does. A failure is a
BuildError that names the backend and the region (and its nodes).
"""

from __future__ import annotations

import re

import numpy as np

from packager.backends.base import CSource, KindSource, Payload, Region
from packager.backends.cgen import is_identifier
from packager.ir import BuildError

CODECS = ("raw", "zstd")


def defines_function(source: str, name: str) -> bool:
    """Whether C text defines function `name` (a name, a parameter list, then a body)."""
    return re.search(r"\b" + re.escape(name) + r"\s*\([^;{}]*\)\s*\{", source) is not None


def defines_kind(source: str, symbol: str) -> bool:
    """Whether C text defines the kind table `const dpk_kind <symbol> = {...}`."""
    return re.search(r"\bdpk_kind\s+" + re.escape(symbol) + r"\s*=", source) is not None


def _names(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _workspace(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check(backend_name: str, region: Region, lowered):
    """`lowered` if well-formed (bytearray payload data becomes bytes), else a BuildError."""
    where = f"backend '{backend_name}' region '{region.name}' (nodes {', '.join(n.name for n in region.nodes)})"

    def fail(what: str):
        raise BuildError(f"{where}: lower() returned {what}")

    if isinstance(lowered, CSource):
        if not isinstance(lowered.source, str):
            fail(f"a CSource whose source is {type(lowered.source).__name__}, not str")
        if not _names(lowered.functions) or not lowered.functions:
            fail("a CSource without functions (a non-empty list of names)")
        preludes = lowered.prelude if isinstance(lowered.prelude, list) else [lowered.prelude]
        if not all(isinstance(p, str) for p in preludes):
            fail("a CSource whose prelude is not text")
        text = lowered.source + "\n" + "\n".join(preludes)
        for fn in lowered.functions:
            if not is_identifier(fn):
                fail(f"a CSource function name {fn!r}, which is not a C identifier")
            if not defines_function(text, fn):
                fail(f"a CSource that does not define function '{fn}'")
        if len(set(lowered.functions)) != len(lowered.functions):
            fail(f"a CSource listing a function twice ({', '.join(lowered.functions)})")
        if not _workspace(lowered.workspace_bytes):
            fail(f"a CSource whose workspace_bytes is {lowered.workspace_bytes!r}")
        if not _names(lowered.libraries) or not _names(lowered.requires):
            fail("a CSource whose libraries/requires are not lists of names")
        _check_weights(lowered, region, fail)
        return lowered
    if isinstance(lowered, Payload):
        if not isinstance(lowered.kind, str) or not is_identifier(lowered.kind):
            fail(f"a Payload whose kind is {lowered.kind!r} (a name such as 'json' is expected)")
        if isinstance(lowered.data, bytearray):
            lowered.data = bytes(lowered.data)
        if not isinstance(lowered.data, bytes):
            fail(f"a Payload whose data is {type(lowered.data).__name__}, not bytes")
        if not isinstance(lowered.function, str) or not lowered.function:
            fail("a Payload without a function name")
        if not is_identifier(lowered.function):
            fail(f"a Payload function name {lowered.function!r}, which is not a C identifier")
        if not _workspace(lowered.workspace_bytes):
            fail(f"a Payload whose workspace_bytes is {lowered.workspace_bytes!r}")
        if lowered.codec not in CODECS:
            fail(f"a Payload with codec {lowered.codec!r} (known: {', '.join(CODECS)})")
        if lowered.kind_source is not None:
            _check_kind_source(lowered, fail)
        return lowered
    fail(f"{type(lowered).__name__}, expected CSource or Payload")


def _check_weights(lowered: CSource, region: Region, fail) -> None:
    if not isinstance(lowered.weights, dict):
        fail(f"a CSource whose weights is {type(lowered.weights).__name__}, not a dict")
    for name, array in lowered.weights.items():
        if name not in region.weights:
            fail(f"a CSource re-laying out {name!r}, which is not one of the region's weights")
        if not isinstance(array, np.ndarray):
            fail(f"a CSource whose new layout of '{name}' is {type(array).__name__}, not a numpy array")


def _check_kind_source(payload: Payload, fail) -> None:
    ks = payload.kind_source
    if not isinstance(ks, KindSource):
        fail(f"a Payload whose kind_source is {type(ks).__name__}, not KindSource")
    if ks.name != payload.kind:
        fail(f"a Payload of kind '{payload.kind}' whose kind_source implements kind {ks.name!r}")
    if not isinstance(ks.source, str) or not ks.source.strip():
        fail(f"a Payload whose kind_source for '{ks.name}' has no C source")
    if not isinstance(ks.symbol, str) or not is_identifier(ks.c_symbol):
        fail(f"a Payload whose kind_source symbol {ks.symbol!r} is not a C identifier")
    if not defines_kind(ks.source, ks.c_symbol):
        fail(f"a Payload whose kind_source for '{ks.name}' does not define "
             f"`const dpk_kind {ks.c_symbol} = {{...}}`")
