"""loader/build_ffi.py reads the cffi declarations from the public headers
(dpk_abi.h, dpk.h) at build time, so nothing is written twice: every function
of dpk.h reaches `loader._dpk` with the header's own prototype, and every
integer constant with the header's value."""

import os
import re

import pytest

from loader._native import lib
from loader.build_ffi import CDEF, HEADERS, INCLUDE, declarations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prototypes(text: str) -> dict[str, str]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    found = {}
    for match in re.finditer(r"([A-Za-z_][\w \*]*?\b(dpk_\w+)\s*\([^;{]*\))\s*;", text):
        found[match.group(2)] = " ".join(match.group(1).replace("(", " ( ").replace(")", " ) ")
                                         .replace(",", " , ").replace("*", " * ").split())
    return found


def header(name: str) -> str:
    return open(os.path.join(ROOT, "runtime_c", "include", name)).read()


def test_the_declarations_are_read_from_the_installed_headers():
    assert os.path.samefile(INCLUDE, os.path.join(ROOT, "runtime_c", "include"))
    assert set(HEADERS) == {f for f in os.listdir(INCLUDE) if f.endswith(".h")}


def test_every_function_of_dpk_h_is_declared_as_the_header_says_and_is_in_the_extension():
    functions = prototypes(header("dpk.h"))
    declared = prototypes(CDEF)
    assert len(functions) >= 27, "declarations of dpk.h were missed"
    for name, proto in functions.items():
        assert declared.get(name) == proto, f"{name}: cffi declares\n  {declared.get(name)}\nbut dpk.h says\n  {proto}"
        assert callable(getattr(lib, name)), name
    assert set(declared) - set(functions) == {"dpk_py_run", "dpk_py_call"}  # the extension's own


def test_every_integer_constant_of_the_headers_has_the_header_value():
    constants = {}
    for name in HEADERS:
        text = re.sub(r"/\*.*?\*/", " ", header(name), flags=re.S)
        constants.update(re.findall(r"#define\s+(DPK_\w+)\s+(\d+)\s*$", text, flags=re.M))
        constants.update(re.findall(r"\b(DPK_\w+|kDL\w+)\s*=\s*(\d+)", text))
    assert {"DPK_OK", "DPK_STATUS_UNAUTHENTICATED", "DPK_TYPE_STR", "DPK_PUBLIC_KEY_BYTES", "kDLFloat"} <= set(constants)
    for name, value in constants.items():
        assert getattr(lib, name) == int(value), name


def test_macros_includes_and_cplusplus_blocks_are_left_out():
    text = ('#ifndef G_H\n#define G_H\n#include <stdint.h>\n#ifdef __cplusplus\nextern "C" {\n#endif\n'
            '#define N 4u\n#define F(x) \\\n  ((x) + 1)\n#define S "s"\n#ifndef OTHER\n'
            'int f(int a[N]); /* kept */\n#endif\n#ifdef __cplusplus\n}\n#endif\n#endif /* G_H */\n')
    assert declarations(text, "g.h") == "#define N 4\nint f(int a[N]);"


def test_a_directive_the_reader_does_not_understand_is_refused_naming_the_line():
    with pytest.raises(ValueError, match=r"g\.h:2: #if is not understood"):
        declarations("int a;\n#if X\nint b;\n#endif\n", "g.h")
