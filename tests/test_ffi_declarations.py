"""loader/build_ffi.py repeats dpk.h's declarations by hand (cffi cannot parse
the header); every function it declares must match the header's prototype."""

import os
import re

from loader.build_ffi import CDEF

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prototypes(text: str) -> dict[str, str]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    found = {}
    for match in re.finditer(r"([A-Za-z_][\w \*]*?\b(dpk_\w+)\s*\([^;{]*\))\s*;", text):
        found[match.group(2)] = " ".join(match.group(1).replace("(", " ( ").replace(")", " ) ")
                                         .replace(",", " , ").replace("*", " * ").split())
    return found


def test_every_cffi_function_matches_dpk_h():
    header = prototypes(open(os.path.join(ROOT, "runtime_c", "include", "dpk.h")).read())
    declared = prototypes(CDEF)
    own = {"dpk_py_run", "dpk_py_call"}  # defined by the extension itself
    assert set(declared) - own, "no declarations found"
    for name, proto in declared.items():
        if name not in own:
            assert header.get(name) == proto, f"{name}: cffi declares\n  {proto}\nbut dpk.h says\n  {header.get(name)}"
