"""packager/backends/cgen.py, the C codegen layer: the plugin example of docs/backends.md built and run
through it, the fixed C of packager/backends/c/ compiling on its own, the text helpers, and kernels that
bind only the operands they read."""

from __future__ import annotations

import os
import platform
import re
import subprocess

import numpy as np
import pytest

from kernel_harness import CC, INCLUDE, KernelError, compile_sources, lower_node
from packager import ir_check
from packager.backends import cgen
from packager.backends.base import Region
from packager.ir import Graph, Node, TensorType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "backends.md")


@pytest.fixture(scope="module")
def kdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cgen")


def doc_backend():
    """The ReluBackend class of docs/backends.md ("Generating C")."""
    text = open(DOC, encoding="utf-8").read()
    section = text[text.index("### Generating C"):]
    code = re.search(r"^```python\n(.*?)^```$", section, flags=re.S | re.M).group(1)
    scope: dict = {}
    exec(compile(code, DOC, "exec"), scope)
    return scope["ReluBackend"]()


@pytest.mark.parametrize("shape", [(3, 5), (7, 10000)])  # serial, and split over the harness's threads
def test_the_documented_backend_builds_a_working_kernel(kdir, shape):
    backend = doc_backend()
    node = Node("relu", ["x"], "y", {}, "relu_0")
    graph = ir_check.infer(Graph("g", {"x": TensorType(shape, "float32")}, {}, [node], ["y"]))
    assert backend.supports(node, graph) is None
    csrc = backend.lower(Region("relu_c_0", [node], ["x"], ["y"], []), graph)
    assert ("dpk_host_parallel(" in csrc.source) == (np.prod(shape) >= cgen.PARALLEL_MIN_WORK)
    lib = compile_sources([csrc], kdir, parallel=True)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = np.full(shape, np.nan, np.float32)
    lib.call("relu_c_0", x, y)
    assert np.array_equal(y, np.maximum(x, 0))
    with pytest.raises(KernelError, match=rf"^kernel relu_c_0: argument 1 \(y\) must be compact "
                                          rf"float32\[{shape[0]}, {shape[1]}\], got code 2 bits 32 \[2, 2\]$"):
        lib.call("relu_c_0", x, np.zeros((2, 2), np.float32))


@pytest.mark.parametrize("header", ["host_prelude.h", "cblas_prelude.h", "xnnpack_prelude.h"])
def test_the_fixed_c_compiles_on_its_own(tmp_path, header):
    """cgen_prelude.h, then a backend's prelude, as a file of its own: strict warnings, no error."""
    source = tmp_path / "t.c"
    source.write_text(cgen.PRELUDE + cgen.read_c(header))
    # on x86-64, the baseline and this CPU (with AVX-512, the helpers under __AVX512F__)
    for march in (["-march=x86-64"], ["-march=native"]) if platform.machine() == "x86_64" else ([],):
        subprocess.run([CC, "-std=c99", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-unused-function",
                        *march, "-I", INCLUDE, str(source)], check=True)


def test_the_fixed_c_is_package_data():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    assert "packager.backends.c" in tool["packages"] and tool["package-data"]["packager.backends.c"] == ["*.h"]
    assert sorted(p.name for p in cgen.C_DIR.glob("*.h")) == ["cblas_prelude.h", "cgen_prelude.h", "host_prelude.h",
                                                               "xnnpack_prelude.h"]


def test_comment_and_string_text_is_escaped():
    assert cgen.c_comment("a */ b") == "/* a * / b */"
    assert cgen.c_string('say "hi" \\ bye') == 'say \\"hi\\" \\\\ bye'
    assert cgen.function("f", "x */ y", [], []).startswith("/* x * / y */\n")


def test_if_defined():
    assert cgen.if_defined("__AVX512F__", "a();", "b();") == "#if defined(__AVX512F__)\na();\n#else\nb();\n#endif"
    assert cgen.if_defined("__AVX512F__", "a();") == "#if defined(__AVX512F__)\na();\n#endif"


def test_c_literals():
    assert [cgen.c_float(v) for v in (1, 0.5, 1e-30, float("inf"), -float("inf"))] == [
        "1.0f", "0.5f", "1e-30f", "INFINITY", "(-INFINITY)"]
    assert cgen.is_identifier("host_relu_0") and not cgen.is_identifier("0x") and not cgen.is_identifier("a-b")


def test_a_block_binds_only_what_its_body_reads(kdir):
    """An empty input of a concat is not bound (no `(void)in0;`), and the kernel still compiles with -Werror."""
    a, b = np.zeros((2, 0), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    backend, region, graph = lower_node("concat", [a, b], axis=1)
    csrc = backend.lower(region, graph)
    assert " in1 = " in csrc.source and " in0 = " not in csrc.source and "(void)" not in csrc.source.split("{", 2)[2]
    lib = compile_sources([csrc], kdir)
    y = np.zeros((2, 3), np.float32)
    lib.call(region.name, a, b, y)
    assert np.array_equal(y, b)
