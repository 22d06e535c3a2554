"""One model, built for several x86-64 levels, runs on this machine and agrees with NumPy and with itself.

The cblas backend compiles its direct conv (stride 1 and 2, rows of 8 or 16 outputs) and its register
kernel for a dense on a transposed W only where the target has AVX-512 (`#if defined(__AVX512F__)`);
every other target compiles OpenBLAS calls (im2col + sgemm, sgemm on W^T) from the same file, and host
kernels are vectorised for whatever -march allows. So the model below is built with `--march`

    x86-64      the baseline (SSE2)                       portable path, every x86-64 machine
    x86-64-v3   AVX2 + FMA (a Zen 3, a Haswell)           portable path, every machine CI runs on
    native      this machine                              AVX-512 path here if the CPU has avx512f
    x86-64-v4   AVX-512                                   only where the CPU has avx512f (else skipped)

and each file is run and compared with NumPy within the float32 rounding bound (tests/reference.py),
and with every other build (within twice that bound: both are that close to the exact value).
Which path a file compiled is read from its machine code (objdump), not from the generated C: an
AVX-512 build's conv and dense tasks use zmm registers and its direct conv tasks call no sgemm; a
portable build has no zmm anywhere and its conv tasks call cblas_sgemm.

The default build (no --march) carries the three ISA variants (packager/isa_variants.py) and picks one
at load. Each variant's code is read from the file the same way (its units' symbols, model.VARIANT.c),
each variant is forced with DPK_ISA and must give the bits of the --march build of its level, whatever
the thread count; a variant this CPU lacks is not skipped: its load must be refused, naming it.
"""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import loader
import reference as ref
from test_cblas import CONVS, DIRECT_CONVS, TRANSPOSED_DENSES, conv_graph, panel_denses, spec
from packager.backends.cblas import PANEL, _direct
from packager import isa_variants
from packager.build import build
from packager.ir import Node, TensorType


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


AVX512 = "avx512f" in cpu_flags()
NO_AVX512 = "this CPU has no avx512f: an x86-64-v4 file cannot run here (its portable builds still do)"
MARCHES = ["x86-64", "x86-64-v3", "native", pytest.param("x86-64-v4", marks=pytest.mark.skipif(not AVX512,
                                                                                                  reason=NO_AVX512))]
RUNNABLE = ["x86-64", "x86-64-v3", "native"] + (["x86-64-v4"] if AVX512 else [])
HOST_CONVS = [c for c in CONVS if c[0] == "depthwise"]  # groups of 1 channel: a host kernel


def direct_plan(case) -> tuple[int, int, int] | None:
    """The cblas backend's direct conv plan for a conv case: (channel block, vectors per row, floats per
    vector), or None where it takes im2col."""
    _, xs, ws, attrs, _, _ = case
    full = {"strides": [1, 1], "dilations": [1, 1], "groups": 1, "pads": [0, 0, 0, 0], **attrs}
    y = ref.conv2d(np.zeros(xs, np.float32), np.zeros(ws, np.float32), **attrs).shape
    return _direct(Node("conv2d", ["x", "w"], "y", attrs=full), [TensorType(xs, "float32"), TensorType(ws, "float32")],
                   TensorType(y, "float32"))


def avx512_build(march: str) -> bool:
    return march == "x86-64-v4" or (march == "native" and AVX512)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The graph (direct-conv convs, a host depthwise conv, transposed denses), its feed and bounded references."""
    rng = np.random.default_rng(21)
    inputs, weights, nodes, outputs, feed, expected = conv_graph(rng, DIRECT_CONVS + HOST_CONVS)
    dense_inputs, dense_weights, dense_nodes, dense_feed, dense_expected = panel_denses(rng)
    inputs.update(dense_inputs)
    weights.update(dense_weights)
    nodes += dense_nodes
    feed.update(dense_feed)
    expected.update(dense_expected)
    outputs += list(dense_expected)
    work = tmp_path_factory.mktemp("isa")
    np.savez(work / "m.npz", **weights)
    # the regions each kernel runs in (a region is named after its first node, op_index)
    width = {c[0]: direct_plan(c)[2] for c in DIRECT_CONVS}
    panels = {d[0] for d in TRANSPOSED_DENSES if d[2] % PANEL == 0}
    regions = {"direct16": [], "direct8": [], "panels": []}
    for i, node in enumerate(nodes):
        name = node["inputs"][0][2:]
        if node["op"] == "conv2d" and name in width:
            regions[f"direct{width[name]}"].append(f"cblas_conv2d_{i}")
        elif node["op"] == "dense" and name in panels:
            regions["panels"].append(f"cblas_dense_{i}")
    return {"spec": spec(inputs, "m.npz", nodes, outputs), "dir": work, "feed": feed, "expected": expected,
            "regions": regions}


@pytest.fixture(scope="module")
def builds(model):
    """march -> (path of the .so, its outputs on this machine), for every build this CPU can run."""
    done = {}
    for march in RUNNABLE:
        out = str(model["dir"] / f"m_{march}.so")
        report = build(model["spec"], out, base_dir=str(model["dir"]), quiet=True, use_cache=False, march=march)
        assert f"-march={march}" in report.manifest["producer"]["cflags"]
        with loader.load(out) as m:
            done[march] = (out, m.run(**model["feed"]))
    return done


def functions(path: str) -> dict[str, list[str]]:
    """Function name -> its disassembled instructions (objdump -d)."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True,
                          check=True).stdout
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"[0-9a-f]+ <(.+)>:$", line)
        if header:
            current = out.setdefault(header.group(1), [])
        elif current is not None and line.strip():
            current.append(line)
    return out


def region_code(funcs: dict[str, list[str]], region: str) -> list[str]:
    """The instructions of a region's packed function and of its task (which gcc may inline, or clone as
    REGION_task.constprop.N)."""
    code = [line for name, body in funcs.items() if name == region or name.startswith(f"{region}_task")
            for line in body]
    assert code, f"no function of region {region} in {sorted(funcs)}"
    return code


def uses_zmm(body: list[str]) -> bool:
    return any("%zmm" in line for line in body)


def calls_sgemm(body: list[str]) -> bool:
    return any("call" in line and "<cblas_sgemm@plt>" in line for line in body)


def test_every_direct_conv_case_is_one_the_direct_kernel_takes():
    """Otherwise the AVX-512 builds below would run im2col too and compare nothing new."""
    assert [c[0] for c in DIRECT_CONVS if not direct_plan(c)] == []
    assert {direct_plan(c)[2] for c in DIRECT_CONVS} == {8, 16}  # zmm and ymm rows
    assert {tuple(c[3].get("strides", [1, 1])) for c in DIRECT_CONVS} == {(1, 1), (2, 2)}


@pytest.mark.parametrize("march", MARCHES)
def test_each_build_matches_numpy(builds, model, march):
    _, got = builds[march]
    assert list(got) == list(model["expected"])
    for name, want in model["expected"].items():
        ref.assert_close(got[name], want, f"{name} --march {march}")


@pytest.mark.parametrize("march", MARCHES)
def test_the_build_compiled_the_path_its_target_has(builds, model, march):
    """AVX-512 builds: the direct conv tasks call no sgemm (rows of 16 in zmm registers; rows of 8 in ymm),
    the panel dense's register kernel uses zmm. AVX2 builds: the panel dense's kernel calls no sgemm either.
    Portable builds: no zmm at all, every conv calls sgemm, and so does the panel dense (per panel)."""
    funcs = functions(builds[march][0])
    regions = model["regions"]
    assert regions["direct16"] and regions["direct8"] and len(regions["panels"]) >= 2, regions
    code = {r: region_code(funcs, r) for rs in regions.values() for r in rs}
    direct = regions["direct16"] + regions["direct8"]
    if avx512_build(march):
        assert [r for r in direct if calls_sgemm(code[r])] == [], "direct convs that still call cblas_sgemm"
        assert [r for r in regions["direct16"] + regions["panels"] if not uses_zmm(code[r])] == []
    else:
        assert [name for name, body in funcs.items() if uses_zmm(body)] == []
        assert [r for r in direct if not calls_sgemm(code[r])] == [], "portable convs that call no sgemm"
    kernel = march != "x86-64"  # x86-64-v3 and up (native too: every x86-64 CPU here has AVX2)
    assert [r for r in regions["panels"] if calls_sgemm(code[r]) == kernel] == [], "panel denses on the wrong path"


@pytest.mark.parametrize("other", MARCHES[1:])
def test_every_build_agrees_with_the_baseline(builds, model, other):
    """The baseline file (portable C, OpenBLAS) and each other build give the same results within rounding."""
    base, got = builds["x86-64"][1], builds[other][1]
    for name, want in model["expected"].items():
        ref.assert_agree(base[name], got[name], want, f"{name}: x86-64 and {other}")


def test_the_portable_and_the_native_build_agree(builds, model):
    """On an AVX-512 machine the native file runs the AVX-512 kernels and the x86-64-v3 one OpenBLAS: they
    must agree (on an AVX2 machine both run the same portable path)."""
    for name, want in model["expected"].items():
        ref.assert_agree(builds["x86-64-v3"][1][name], builds["native"][1][name], want, name)


# ---------------------------------------------------------------------------
# The default build: every ISA variant in one file, one picked at load

VARIANTS = [v.name for v in isa_variants.X86_64]
MARCH_OF = {"baseline": "x86-64", "avx2": "x86-64-v3", "avx512": "x86-64-v4"}
CPUINFO_NAMES = {"bmi": "bmi1"}  # __builtin_cpu_supports name -> /proc/cpuinfo's, where they differ


def cpu_runs(variant: str) -> bool:
    """Whether this CPU has every feature the variant needs, read from /proc/cpuinfo (not from the file's pick)."""
    needs = next(v.cpu for v in isa_variants.X86_64 if v.name == variant)
    return all(CPUINFO_NAMES.get(f, f) in cpu_flags() for f in needs)


BEST = [v for v in VARIANTS if cpu_runs(v)][-1]


@pytest.fixture(scope="module")
def default_build(model):
    """The default build, as a user's: with the ISA variants (conftest turns them off for other tests)."""
    out = str(model["dir"] / "m_default.so")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DSOPACK_ISA_VARIANTS", raising=False)
        report = build(model["spec"], out, base_dir=str(model["dir"]), quiet=True, use_cache=False)
    return out, report.manifest


def load_as(path: str, variant: str | None, monkeypatch, **kw):
    """Load a copy of the file (its own dlopen, so its own pick) with DPK_ISA=variant (None: unset)."""
    copy = f"{path[:-3]}_{variant or 'auto'}_{len(os.listdir(os.path.dirname(path)))}.so"
    shutil.copy(path, copy)
    if variant is None:
        monkeypatch.delenv("DPK_ISA", raising=False)
    else:
        monkeypatch.setenv("DPK_ISA", variant)
    return loader.load(copy, **kw)


def variant_functions(path: str) -> dict[str, dict[str, list[str]]]:
    """Variant -> its units' functions -> their instructions: the symbol table groups each object's local
    symbols after its FILE symbol (model.avx2.c, model_2.avx2.c...), which tells the copies of a static task apart;
    a packed function is NAME__dpk_VARIANT (listed as NAME)."""
    symbols = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True, check=True).stdout
    owner, unit = {}, None
    for line in symbols.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[3] == "FILE":
            unit = fields[7]
        elif len(fields) >= 8 and fields[3] == "FUNC":
            renamed = re.fullmatch(r"(\w+)__dpk_(\w+)", fields[7])  # a packed function: hidden, not the unit's local
            match = re.fullmatch(r"model(?:_\d+)?\.(\w+)\.c", unit or "")
            if renamed and renamed.group(2) in VARIANTS:
                owner[int(fields[1], 16)] = (renamed.group(2), renamed.group(1))
            elif match and not renamed:
                owner[int(fields[1], 16)] = (match.group(1), fields[7])
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True,
                          check=True).stdout
    out: dict[str, dict[str, list[str]]] = {v: {} for v in VARIANTS}
    current = None
    for line in text.splitlines():
        header = re.match(r"([0-9a-f]+) <(.+)>:$", line)
        if header:
            where = owner.get(int(header.group(1), 16))
            current = out[where[0]].setdefault(where[1], []) if where else None
        elif current is not None and line.strip():
            current.append(line)
    return out


def test_a_default_build_carries_every_variant_and_exports_each_function_once(default_build, model):
    path, manifest = default_build
    assert [v["name"] for v in manifest["target"]["variants"]] == VARIANTS
    assert [f for f in manifest["producer"]["cflags"] if f.startswith("-march")] == []
    symbols = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True, check=True).stdout
    exported = {f[7]: f[3] for f in (line.split() for line in symbols.splitlines())
                if len(f) >= 8 and f[4] == "GLOBAL" and f[6] != "UND"}
    functions = [f for m in manifest["modules"] if m["kind"] == "dso" for f in m["functions"]]
    assert functions and {f: exported.get(f) for f in functions} == {f: "IFUNC" for f in functions}
    hidden = [f"{f}__dpk_{v}" for f in functions for v in VARIANTS]
    assert [s for s in hidden if s in exported] == [], "variant copies must not be exported"
    assert all(s in symbols for s in hidden)


def test_each_variant_compiled_the_path_its_level_has(default_build, model):
    """baseline: SSE only (no ymm, no zmm), convs through sgemm; avx2: ymm, no zmm, convs through sgemm;
    avx512: the direct conv tasks call no sgemm and use zmm, as an x86-64-v4 build's."""
    code = variant_functions(default_build[0])
    regions = model["regions"]
    direct = regions["direct16"] + regions["direct8"]
    for variant, funcs in code.items():
        body = {r: region_code(funcs, r) for rs in regions.values() for r in rs}
        if variant == "avx512":
            assert [r for r in direct if calls_sgemm(body[r])] == [], "avx512 direct convs that call cblas_sgemm"
            assert [r for r in regions["direct16"] + regions["panels"] if not uses_zmm(body[r])] == []
            continue
        assert [name for name, lines in funcs.items() if uses_zmm(lines)] == [], variant
        ymm = [name for name, lines in funcs.items() if any("%ymm" in line for line in lines)]
        assert bool(ymm) == (variant == "avx2"), f"{variant}: functions using ymm: {ymm}"
        assert [r for r in direct if not calls_sgemm(body[r])] == [], f"{variant} convs that call no sgemm"


def test_the_load_picks_the_best_variant_this_cpu_runs(default_build, monkeypatch):
    with load_as(default_build[0], None, monkeypatch) as m:
        assert m.isa == BEST


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_gives_the_bits_of_its_march_build_at_any_thread_count(default_build, builds, model, variant,
                                                                          monkeypatch):
    """Run where the CPU has it (equal to NumPy within rounding, and bit for bit to the --march build of its
    level and to itself on 1 and 2 threads); refused at load, naming it, where the CPU lacks it."""
    if not cpu_runs(variant):
        with pytest.raises(loader.FailedPreconditionError, match=f"DPK_ISA={variant}: this CPU cannot run"):
            load_as(default_build[0], variant, monkeypatch)
        return
    runs = {}
    for threads in (1, 2):
        with load_as(default_build[0], variant, monkeypatch, num_threads=threads) as m:
            assert m.isa == variant
            runs[threads] = m.run(**model["feed"])
    march_build = builds[MARCH_OF[variant]][1]
    for name, want in model["expected"].items():
        ref.assert_close(runs[1][name], want, f"{name}: variant {variant}")
        np.testing.assert_array_equal(runs[2][name], runs[1][name], f"{name}: variant {variant}, 2 threads vs 1")
        np.testing.assert_array_equal(runs[1][name], march_build[name],
                                      f"{name}: variant {variant} vs the --march {MARCH_OF[variant]} build")


def test_dpk_isa_naming_no_variant_is_refused(default_build, monkeypatch):
    with pytest.raises(loader.FailedPreconditionError, match="DPK_ISA=sse9: this file carries the ISA variants "
                                                             "baseline, avx2, avx512"):
        load_as(default_build[0], "sse9", monkeypatch)


def test_a_march_build_carries_one_variant_and_ignores_dpk_isa(builds, monkeypatch):
    path = builds["x86-64-v3"][0]
    with load_as(path, "sse9", monkeypatch) as m:
        assert m.isa is None and "variants" not in m.manifest["target"]


def test_dpk_run_reports_the_variant(default_build, dpk_run, monkeypatch):
    monkeypatch.setenv("DPK_ISA", "baseline")
    out = subprocess.run([dpk_run, default_build[0], "--random", "--isa"], capture_output=True, text=True)
    assert out.returncode == 0 and "isa: baseline\n" in out.stdout, out.stdout + out.stderr
    monkeypatch.delenv("DPK_ISA")
    out = subprocess.run([dpk_run, default_build[0], "--random", "--isa"], capture_output=True, text=True)
    assert out.returncode == 0 and f"isa: {BEST}\n" in out.stdout, out.stdout + out.stderr


def test_inspect_shows_the_variants_a_file_carries(default_build, builds, capsys):
    from packager.cli import main

    assert main(["inspect", default_build[0]]) == 0
    assert ("# ISA variants: baseline (the target flags), avx2 (-march=x86-64-v3), avx512 (-march=x86-64-v4)"
            in capsys.readouterr().out)
    assert main(["inspect", builds["x86-64"][0]]) == 0
    assert "ISA variants" not in capsys.readouterr().out


@pytest.mark.parametrize("machine, cflags, variants", [
    ("x86_64", ["-O3"], VARIANTS),
    ("x86_64", ["-O3", "-march=native"], []),
    ("x86_64", ["-O2", "-mavx2"], []),
    ("aarch64", ["-O3"], []),
    ("x86_64-linux-musl", ["-O3"], []),  # no GNU ifunc
])
def test_which_builds_carry_variants(machine, cflags, variants, isa_variants_on):
    triple = machine if "-" in machine else f"{machine}-linux-gnu"
    assert [v.name for v in isa_variants.for_target(triple.split("-")[0], cflags, triple)] == variants


def test_dsopack_isa_variants_0_builds_one(monkeypatch):
    monkeypatch.setenv("DSOPACK_ISA_VARIANTS", "0")
    assert isa_variants.for_target("x86_64", ["-O3"], "x86_64-linux-gnu") == ()
