"""Edge devices: aarch64 packages cross-built on this machine, run by the aarch64
dpk-run (and docs/examples/classify.c) under qemu-user, compared with the
native build; wrong-machine errors both ways; inspect/verify of a foreign file.

Needs gcc-aarch64-linux-gnu, qemu-user, the :arm64 dev packages and the arm64
XNNPACK (`bash scripts/setup.sh --cross`; .ci/run does it). Without them the tests that
need them skip and say what is missing. binfmt_misc is not assumed: qemu is
called explicitly, with -L for the aarch64 loader and C library.
"""

import os
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

import loader
import reference as ref
from packager import toolchain
from packager.backends import cblas, xnnpack
from packager.build import build
from packager.ir import BuildError
from test_cblas import dt_needed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME = os.path.join(ROOT, "runtime_c")
MANIFESTS = os.path.join(ROOT, "manifests")
CLASSIFY = os.path.join(ROOT, "docs", "examples", "classify.c")
TRIPLE = "aarch64-linux-gnu"
CROSS_CC = f"{TRIPLE}-gcc"
# The aarch64 root qemu takes the loader and the C library from. Both must come from one glibc build:
# the cross toolchain's (libc6-arm64-cross, /usr/aarch64-linux-gnu) and Debian's multiarch one
# (libc6:arm64, /lib/aarch64-linux-gnu, which the :arm64 dev libraries pull in) are two builds of 2.36.
# With -L /usr/aarch64-linux-gnu qemu finds ld.so there but libc.so.6 only in /lib/aarch64-linux-gnu;
# the two disagree on rtld's private data, and pthread_create then walks the thread-stack cache list
# forever with every signal blocked (test_a_thread_starts_under_qemu). With the multiarch libc present,
# its own loader (/lib/ld-linux-aarch64.so.1) goes with it.
QEMU_ROOT = "/" if os.path.exists(f"/lib/ld-linux-{TRIPLE.split('-')[0]}.so.1") else f"/usr/{TRIPLE}"
# Where scripts/setup.sh --cross unpacks the arm64 XNNPACK without dpkg (Debian 12's libxnnpack0 is not
# Multi-Arch: same). The cross ld searches it; the aarch64 ld.so does not (the x86-64 ldconfig leaves arm64
# libraries out of /etc/ld.so.cache), so the guest gets it in LD_LIBRARY_PATH (-E: the guest's environment only).
ARM_LOCAL_LIBS = f"/usr/local/lib/{TRIPLE}"
QEMU = ["qemu-aarch64", "-L", QEMU_ROOT, "-E", f"LD_LIBRARY_PATH={ARM_LOCAL_LIBS}"]
SYSTEM_LIBS = ("dl", "pthread", "m", "c")


def target_libs() -> list[str]:
    """The libraries the runtime links (the Makefile's LIBS) that the target must provide."""
    with open(os.path.join(RUNTIME, "Makefile")) as f:
        line = next(line for line in f if line.startswith("LIBS :="))
    return [w[2:] for w in line.split()[2:] if w.startswith("-l") and w[2:] not in SYSTEM_LIBS]


SETUP = "bash scripts/setup.sh --cross"

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the cross tests assume an x86-64 host")


def missing_cross() -> str | None:
    """What is missing to cross-build and emulate aarch64, or None."""
    for tool in (CROSS_CC, QEMU[0]):
        if shutil.which(tool) is None:
            return f"{tool} not found ({SETUP} installs it)"
    if not os.path.exists(f"{QEMU_ROOT}/lib/ld-linux-aarch64.so.1"):
        return f"{QEMU_ROOT}/lib/ld-linux-aarch64.so.1 (the aarch64 C library) not found ({SETUP} installs it)"
    for lib in target_libs():
        if not os.path.exists(f"/usr/lib/{TRIPLE}/lib{lib}.so"):
            return f"the arm64 lib{lib} is not installed ({SETUP} installs lib{lib}-dev:arm64)"
    return None


def needs_cross():
    reason = missing_cross()
    if reason:
        pytest.skip(reason)


def make(*args) -> None:
    result = subprocess.run(["make", "-s", "-j4", "-C", RUNTIME, *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"make {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="module")
def arm_runtime():
    """runtime_c/build/aarch64: libdpk.so, libdpk.a, dpk-run for aarch64."""
    needs_cross()
    make(f"CC={CROSS_CC}")
    return os.path.join(RUNTIME, "build", "aarch64")


def qemu(*args, ok=True, env=None):
    result = subprocess.run([*QEMU, *map(str, args)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def example(name: str, backends=None) -> dict:
    with open(os.path.join(MANIFESTS, f"{name}.yaml")) as f:
        spec = yaml.safe_load(f)
    if backends:
        spec["backends"] = backends
    return spec


def has_arm_openblas() -> bool:
    return os.path.exists(f"/usr/lib/{TRIPLE}/libopenblas.so")


def has_arm_xnnpack() -> bool:
    """The arm64 libXNNPACK.so where dpkg (libxnnpack-dev:arm64) or scripts/setup.sh --cross puts it."""
    return any(os.path.exists(f"{d}/libXNNPACK.so") for d in (f"/usr/lib/{TRIPLE}", ARM_LOCAL_LIBS))


# name -> (spec, input name); "digits_cblas" is the digits MLP with its dense layers on OpenBLAS.
EXAMPLES = {"digits_mlp": (lambda: example("digits_mlp"), "x"),
            "lenet": (lambda: example("lenet"), "image"),
            "mixed": (lambda: example("mixed"), "x"),
            "digits_cblas": (lambda: example("digits_mlp", ["cblas", "host"]), "x")}


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Lazily built (host file, aarch64 file) per example name."""
    directory = tmp_path_factory.mktemp("edge")
    built = {}

    def get(name):
        if name not in built:
            needs_cross()
            spec, _ = EXAMPLES[name]
            if "cblas" in (spec().get("backends") or []) and not has_arm_openblas():
                pytest.skip(f"the arm64 OpenBLAS is not installed ({SETUP} installs libopenblas-dev:arm64)")
            host = build(spec(), directory / f"{name}.so", base_dir=MANIFESTS, quiet=True)
            arm = build(spec(), directory / f"{name}.arm.so", base_dir=MANIFESTS, quiet=True, target=TRIPLE)
            built[name] = (host.output, arm.output, arm.manifest)
        return built[name]
    return get


def test_cli_cross_build_records_the_target(tmp_path):
    needs_cross()
    out = tmp_path / "digits.so"
    subprocess.run([sys.executable, "-m", "packager", "build", os.path.join(MANIFESTS, "digits_mlp.yaml"),
                    "--target", TRIPLE, "-o", str(out), "-q"], check=True)
    assert toolchain.elf_machine(str(out)) == "aarch64"
    with loader.open_package(str(out)) as package:
        manifest = package.manifest
    assert manifest["target"] == {"triple": TRIPLE, "machine": "aarch64"}
    assert manifest["producer"]["cflags"] == ["-O3"] and manifest["producer"]["cc"].startswith("gcc")


def test_manifest_triple_picks_the_cross_compiler(tmp_path):
    needs_cross()
    spec = example("digits_mlp")
    spec["target"] = {"triple": TRIPLE, "cflags": ["-O2", "-mcpu=cortex-a53"]}
    report = build(spec, tmp_path / "d.so", base_dir=MANIFESTS, quiet=True)
    assert report.manifest["target"]["machine"] == "aarch64"
    assert report.manifest["producer"]["cflags"] == ["-O2", "-mcpu=cortex-a53"]
    assert toolchain.elf_machine(report.output) == "aarch64"


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_aarch64_dpk_run_matches_the_host_build(name, packages, arm_runtime, dpk_run, tmp_path):
    host_file, arm_file, manifest = packages(name)
    assert manifest["target"]["machine"] == "aarch64" and toolchain.elf_machine(arm_file) == "aarch64"
    if name in ("mixed", "digits_cblas"):
        assert manifest["requires"] == ["libopenblas.so.0"]
    _, input_name = EXAMPLES[name]
    with loader.open_package(host_file) as package:
        shape = package.manifest["inputs"][0]["shape"]
    x = tmp_path / "x.npy"
    if name.startswith("digits"):
        shutil.copy(os.path.join(MANIFESTS, "digits_sample.npy"), x)
    else:
        np.save(x, np.random.default_rng(7).standard_normal(shape).astype(np.float32))
    subprocess.run([dpk_run, host_file, f"{input_name}={x}", "-o", tmp_path / "host.npy"], check=True,
                   capture_output=True)
    qemu(os.path.join(arm_runtime, "dpk-run"), arm_file, f"{input_name}={x}", "-o", tmp_path / "arm.npy")
    host, arm = np.load(tmp_path / "host.npy"), np.load(tmp_path / "arm.npy")
    assert host.shape == arm.shape and host.dtype == arm.dtype == np.float32
    np.testing.assert_allclose(arm, host, rtol=0, atol=1e-5)
    if name.startswith("digits"):
        assert int(arm.argmax()) == 7


PTHREAD_PROGRAM = r"""
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
static void *work(void *arg) { return arg; }
int main(void) {  /* as the runtime's pool starts a worker: every signal blocked around the create */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int rc = pthread_create(&t, NULL, work, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc == 0) pthread_join(t, NULL);
  printf("create %d, joined\n", rc);
  return rc;
}
"""


def test_a_thread_starts_under_qemu(tmp_path):
    """The five-line reproducer of the old 'qemu hangs in pthread_create': no dsopack code. It hung
    (spinning, deaf to SIGTERM) with ld.so and libc.so.6 from two glibc builds; see QEMU_ROOT."""
    needs_cross()
    source, exe = tmp_path / "t.c", tmp_path / "t"
    source.write_text(PTHREAD_PROGRAM)
    subprocess.run([CROSS_CC, "-O2", "-pthread", source, "-o", exe], check=True)
    result = subprocess.run([*QEMU, exe], capture_output=True, text=True, timeout=60)  # SIGKILL on timeout
    assert (result.returncode, result.stdout) == (0, "create 0, joined\n"), result.stderr


@pytest.mark.parametrize("backends", [("cblas", "host"), ("host",)])
def test_aarch64_threads_give_the_same_bits(backends, arm_runtime, tmp_path):
    """test_determinism's CNN + MLP (every loop splits: test_the_models_loops_really_split) cross-built
    and run by the aarch64 dpk-run on 1, 2 and 4 threads: the same bits each time, and the right numbers."""
    from test_determinism import _cnn_mlp, cnn_mlp_approx

    needs_cross()
    if "cblas" in backends and not has_arm_openblas():
        pytest.skip(f"the arm64 OpenBLAS is not installed ({SETUP} installs libopenblas-dev:arm64)")
    rng = np.random.default_rng(5)
    w, nodes, _ = _cnn_mlp(rng)
    np.savez(tmp_path / "m.npz", **w)
    spec = {"name": "cnn_mlp", "backends": list(backends),
            "model": {"graph": {"inputs": {"x": {"shape": [2, 8, 32, 32], "dtype": "float32"}},
                                "weights": "m.npz", "nodes": nodes, "outputs": ["y"]}}}
    arm = build(spec, tmp_path / "m.so", base_dir=str(tmp_path), quiet=True, target=TRIPLE).output
    x = np.random.default_rng(6).standard_normal((2, 8, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = {}
    for threads in (1, 2, 4):
        out = tmp_path / f"y{threads}.npy"
        result = qemu("-strace", os.path.join(arm_runtime, "dpk-run"), arm, f"x={tmp_path / 'x.npy'}", "-o", out,
                      env={"DPK_NUM_THREADS": str(threads)})
        started = result.stderr.count(" clone(CLONE_VM|")  # threads (OpenBLAS may start its own too)
        assert started >= threads - 1, f"{threads} threads: {started} started"
        outputs[threads] = np.load(out)
    for threads in (2, 4):
        np.testing.assert_array_equal(outputs[threads], outputs[1], err_msg=f"{threads} threads vs 1")
    ref.assert_close(outputs[1], cnn_mlp_approx(x, w)["y"], err_msg="aarch64, 1 thread")


def test_aarch64_panel_dense_matches_numpy(arm_runtime, tmp_path):
    """A dense from 8 rows of x stores W in panels on aarch64 too, and its NEON register kernel (8 rows x 8
    columns) gives NumPy's numbers under qemu: whole tiles and 5 rows left, a panel and 8 columns, K in 3
    chunks."""
    from test_cblas import TRANSPOSED_DENSES, panel_denses
    from test_cblas import spec as cblas_spec

    needs_cross()
    if not has_arm_openblas():
        pytest.skip(f"the arm64 OpenBLAS is not installed ({SETUP} installs libopenblas-dev:arm64)")
    rng = np.random.default_rng(23)
    inputs, weights, nodes, feed, expected = panel_denses(rng, [d for d in TRANSPOSED_DENSES if d[2] >= cblas.PANEL])
    for name, x in feed.items():
        np.save(tmp_path / f"{name}.npy", x)
    np.savez(tmp_path / "m.npz", **weights)
    report = build(cblas_spec(inputs, "m.npz", nodes, list(expected)), tmp_path / "m.so", base_dir=str(tmp_path),
                   quiet=True, target=TRIPLE)
    stored = {k: t["shape"] for m in report.manifest["modules"] if m["name"] == "weights"
              for k, t in m["tensors"].items()}
    assert all(len(stored[f"w_{name}"]) == 3 for name in expected), stored  # [N / 32, K, 32]
    qemu(os.path.join(arm_runtime, "dpk-run"), report.output, *[f"{k}={tmp_path / k}.npy" for k in inputs],
         "-o", tmp_path / "out")
    for name, want in expected.items():
        ref.assert_close(np.load(tmp_path / "out" / f"{name}.npy"), want, f"{name} on aarch64")


def xnnpack_cnn(directory) -> str:
    """A small CNN the xnnpack backend takes all of, as one region: conv 3x3 + relu, max pool, depthwise 3x3 +
    clip, 1x1 conv, a mean over H and W without kept dims, Gemm. Outputs y and the depthwise conv's r2 (4-D:
    converted back from XNNPACK's NHWC)."""
    rng = np.random.default_rng(21)
    shapes = {"w1": (32, 8, 3, 3), "b1": (32,), "w2": (32, 1, 3, 3), "b2": (32,), "w3": (32, 32, 1, 1),
              "wd": (10, 32), "bd": (10,)}
    w = {name: (rng.standard_normal(shape) * 0.2).astype(np.float32) for name, shape in shapes.items()}
    w.update(lo=np.array(0, np.float32), hi=np.array(6, np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv3x3"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="maxpool"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=32, name="depthwise"),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="pointwise"),
        helper.make_node("ReduceMean", ["c3"], ["g"], axes=[2, 3], keepdims=0, name="pool"),
        helper.make_node("Gemm", ["g", "wd", "bd"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "xnn_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10]),
                               helper.make_tensor_value_info("r2", TensorProto.FLOAT, [2, 32, 8, 8])],
                              [numpy_helper.from_array(a, k) for k, a in w.items()])
    path = os.path.join(directory, "cnn.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_aarch64_xnnpack_matches_the_host_build(arm_runtime, tmp_path, monkeypatch):
    """The xnnpack backend cross-built for aarch64 against the arm64 XNNPACK (scripts/setup.sh --cross unpacks
    it) and run by the aarch64 dpk-run under qemu: the file really has XNNPACK regions (not host code), the
    outputs are within 1e-5 relative of the x86-64 build's, the same bits on 1 and 3 threads; and a cross
    build without backends picks xnnpack first."""
    if not has_arm_xnnpack():
        pytest.skip(f"the arm64 XNNPACK is not in /usr/lib/{TRIPLE} or {ARM_LOCAL_LIBS} ({SETUP} unpacks it "
                    f"into {ARM_LOCAL_LIBS})")
    monkeypatch.setattr(xnnpack, "BLOCK_MIN_WORK", 1 << 12)  # small blocks: each conv is several operators
    path = xnnpack_cnn(tmp_path)
    given = build(path, tmp_path / "x.arm.so", quiet=True, backends=["xnnpack", "host"], target=TRIPLE,
                  save_temps=str(tmp_path / "temps"))
    default = build(path, tmp_path / "d.arm.so", quiet=True, target=TRIPLE)
    host = build(path, tmp_path / "x.so", quiet=True, backends=["xnnpack", "host"])
    assert default.backends[0] == "xnnpack", default.backends_reason
    assert default.backends_reason.startswith(f"the default for {TRIPLE}: XNNPACK found"), default.backends_reason
    for report in (given, default):
        assert toolchain.elf_machine(report.output) == "aarch64"
        assert report.manifest["requires"][0] == "libXNNPACK.so.0" and "libXNNPACK.so.0" in dt_needed(report.output)
        xnn = [m["functions"] for m in report.manifest["modules"] if m["name"] == "xnnpack"]
        assert xnn == [["ext0"]], report.manifest["modules"]  # one region
        for node in ("conv3x3", "maxpool", "depthwise", "pointwise", "pool", "fc"):
            assert any(line.startswith(f"{node} -> xnnpack") for line in report.explain), (node, report.explain)
    source = "".join(p.read_text() for p in (tmp_path / "temps").glob("*.c"))
    for conv in ("conv3x3", "depthwise", "pointwise"):
        match = re.search(rf"{conv}: conv2d \((\d+) XNNPACK operators[:)]", source)
        assert match and int(match.group(1)) > 1, conv  # so that 3 threads share the blocks

    x = np.random.default_rng(22).standard_normal((2, 8, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with loader.load(host.output) as model:
        want = model.run(x=x)
    runner = os.path.join(arm_runtime, "dpk-run")
    for name, report, threads in (("given1", given, 1), ("given3", given, 3), ("default", default, 1)):
        result = qemu("-strace", runner, report.output, f"x={tmp_path / 'x.npy'}", "-o", tmp_path / name,
                      env={"DPK_NUM_THREADS": str(threads)})
        assert result.stderr.count(" clone(CLONE_VM|") >= threads - 1, f"{name}: threads not started"
        # the aarch64 ld.so loaded the arm64 libXNNPACK (it cannot load an x86-64 one)
        assert re.search(r'openat\(AT_FDCWD,"[^"]*/libXNNPACK\.so\.0",[^)]*\) = \d+\n', result.stderr), name
        for key, value in want.items():
            got = np.load(tmp_path / name / f"{key}.npy")
            assert got.shape == value.shape and got.dtype == np.float32, (name, key)
            error = float(np.abs(got.astype(np.float64) - value).max()) / float(np.abs(value).max())
            assert error <= 1e-5, f"{name} {key}: {error:.3g} relative to the x86-64 build"
    for key in want:
        np.testing.assert_array_equal(np.load(tmp_path / "given3" / f"{key}.npy"),
                                      np.load(tmp_path / "given1" / f"{key}.npy"), err_msg=f"{key}: 3 threads vs 1")


@pytest.mark.parametrize("static", ["1", "libs"])
def test_static_dpk_run(static, packages, tmp_path):
    """STATIC=1: no dynamic section at all; STATIC=libs: only the C library is needed."""
    needs_cross()
    make(f"CC={CROSS_CC}", f"STATIC={static}")
    runner = os.path.join(RUNTIME, "build", "aarch64-static" + ("-libs" if static == "libs" else ""), "dpk-run")
    dynamic = subprocess.run([f"{TRIPLE}-readelf", "-d", runner], capture_output=True, text=True, check=True).stdout
    needed = sorted(line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line)
    if static == "1":
        assert needed == []
    else:
        assert needed and all(lib.startswith(("libc.", "libm.", "ld-linux")) for lib in needed), needed
    _, arm_file, _ = packages("digits_mlp")
    qemu(runner, arm_file, f"x={os.path.join(MANIFESTS, 'digits_sample.npy')}", "-o", tmp_path / "y.npy")
    assert int(np.load(tmp_path / "y.npy").argmax()) == 7


def test_aarch64_file_on_this_host_is_refused_before_dlopen(packages, dpk_run):
    _, arm_file, _ = packages("digits_mlp")
    message = f"'{arm_file}' is built for aarch64 but this machine is x86_64"
    with pytest.raises(loader.UnimplementedError) as info:
        loader.load(arm_file)
    assert str(info.value) == message
    result = subprocess.run([dpk_run, arm_file, "--random"], capture_output=True, text=True)
    assert result.returncode == 1 and message in result.stderr


def test_host_file_under_the_aarch64_runtime_is_refused(packages, arm_runtime):
    host_file, _, _ = packages("digits_mlp")
    result = qemu(os.path.join(arm_runtime, "dpk-run"), host_file, "--random", ok=False)
    assert result.returncode == 1
    assert f"'{host_file}' is built for x86_64 but this machine is aarch64" in result.stderr


def test_inspect_and_verify_an_aarch64_file_on_this_host(packages):
    _, arm_file, _ = packages("lenet")
    cli = [sys.executable, "-m", "packager"]
    inspect = subprocess.run([*cli, "inspect", arm_file], capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    assert "target: {triple: aarch64-linux-gnu, machine: aarch64}" in inspect.stdout
    verify = subprocess.run([*cli, "verify", arm_file], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.startswith(f"OK {arm_file}"), verify.stderr


@pytest.mark.parametrize("machine", ["host", "aarch64"])
def test_classify_example(machine, packages, arm_runtime, dpk_build, tmp_path):
    """docs/examples/classify.c, linked against libdpk.so, on a .npy and on a raw float32 file."""
    host_file, arm_file, _ = packages("digits_mlp")
    cc, lib, model = ("cc", dpk_build, host_file) if machine == "host" else (CROSS_CC, arm_runtime, arm_file)
    exe = tmp_path / "classify"
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", f"-I{RUNTIME}/include", CLASSIFY,
                    f"-L{lib}", "-ldpk", f"-Wl,-rpath,{lib}", "-o", exe], check=True)
    raw = tmp_path / "x.raw"
    np.load(os.path.join(MANIFESTS, "digits_sample.npy")).astype("<f4").tofile(raw)
    wrap = [] if machine == "host" else QEMU
    for data in (os.path.join(MANIFESTS, "digits_sample.npy"), raw):
        result = subprocess.run([*wrap, exe, model, data], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("class 7 (score 0.98")
    np.save(tmp_path / "x64.npy", np.zeros((1, 64)))
    result = subprocess.run([*wrap, exe, model, tmp_path / "x64.npy"], capture_output=True, text=True)
    assert result.returncode == 1 and "expected float32 ('<f4') in C order" in result.stderr
    result = subprocess.run([*wrap, exe, model, CLASSIFY], capture_output=True, text=True)
    assert result.returncode == 1 and "input 'x' takes 64 float32 values" in result.stderr


# ---- build errors ---------------------------------------------------------------------------------

def test_missing_cross_compiler_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler at all
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(BuildError) as info:
        build(example("digits_mlp"), tmp_path / "d.so", base_dir=MANIFESTS, quiet=True, target=TRIPLE)
    assert str(info.value) == (f"target {TRIPLE} needs a cross compiler: '{CROSS_CC}' is not on PATH; on "
                               f"Debian/Ubuntu: apt-get install gcc-{TRIPLE} (bash scripts/setup.sh --cross "
                               f"installs it), or name one with --cc or target.cc")
    assert not (tmp_path / "d.so").exists()


def test_host_compiler_for_a_cross_triple_is_refused(tmp_path):
    with pytest.raises(BuildError, match=f"target triple '{TRIPLE}' needs a cross compiler: 'gcc' targets x86_64"):
        build(example("digits_mlp"), tmp_path / "d.so", base_dir=MANIFESTS, quiet=True, target=TRIPLE, cc="gcc")


@pytest.mark.parametrize("flag", ["-march=native", "-mcpu=native", "-mtune=native"])
def test_native_cpu_flags_are_refused_for_a_cross_target(flag, tmp_path):
    needs_cross()
    spec = example("digits_mlp")
    spec["target"]["cflags"] = ["-O3", flag]
    with pytest.raises(BuildError, match=f"target {TRIPLE}: {flag} means this build machine's CPU"):
        build(spec, tmp_path / "d.so", base_dir=MANIFESTS, quiet=True, target=TRIPLE)


def test_missing_target_library_names_the_target_package(tmp_path, monkeypatch):
    """A library the cross link cannot find: the hint names the arm64 package (here a
    renamed OpenBLAS stands in for an uninstalled libopenblas-dev:arm64)."""
    needs_cross()
    monkeypatch.setattr(cblas, "LIBRARIES", ["openblas_not_installed"])
    with pytest.raises(BuildError) as info:
        build(example("digits_mlp", ["cblas", "host"]), tmp_path / "d.so", base_dir=MANIFESTS, quiet=True,
              target=TRIPLE)
    first = str(info.value).splitlines()[0]
    assert first.startswith("library -lopenblas_not_installed is missing: the cblas backend needs")
    includes, libs = toolchain.target_dirs(TRIPLE)
    assert includes[0] == f"/usr/include/{TRIPLE}" and libs[0] == f"/usr/lib/{TRIPLE}"  # then /usr/local/lib/...
    assert (f"for target {TRIPLE} they must be the aarch64 build (searched: {', '.join(includes + libs)}): "
            "on Debian/Ubuntu: dpkg --add-architecture arm64 && apt-get update && apt-get install "
            "libopenblas-dev:arm64") in first


def test_missing_target_xnnpack_says_not_to_apt_get_it(tmp_path, monkeypatch):
    """Debian 12's libxnnpack0 is not Multi-Arch: same: the hint for a missing arm64 XNNPACK does not tell
    to apt-get install it (that removes the amd64 one) but to unpack it, as scripts/setup.sh --cross does."""
    needs_cross()
    monkeypatch.setattr(xnnpack, "LIBRARIES", ["XNNPACK_not_installed"])
    with pytest.raises(BuildError) as info:
        build(xnnpack_cnn(tmp_path), tmp_path / "d.so", backends=["xnnpack", "host"], quiet=True, target=TRIPLE)
    first = str(info.value).splitlines()[0]
    assert first.startswith("library -lXNNPACK_not_installed is missing: the xnnpack backend needs"), first
    assert first.endswith(f"(searched: {', '.join(sum(toolchain.target_dirs(TRIPLE), []))}): on Debian 12, "
                          "apt-get install libxnnpack-dev:arm64 libpthreadpool-dev:arm64 would remove the amd64 ones "
                          f"(not Multi-Arch: same); unpack the arm64 packages without dpkg into {ARM_LOCAL_LIBS} "
                          "instead (docs/edge.md; bash scripts/setup.sh --cross does it)"), first


def test_target_names():
    assert toolchain.multiarch("aarch64-unknown-linux-gnu") == TRIPLE == toolchain.multiarch("arm64-linux-gnu")
    assert toolchain.is_cross(TRIPLE) and not toolchain.is_cross("native") and not toolchain.is_cross(None)
    assert not toolchain.is_cross("x86_64-pc-linux-gnu")


def test_march_option_replaces_the_manifests_and_is_recorded(tmp_path):
    spec = example("digits_mlp")
    spec["target"]["cflags"] = ["-O3", "-march=native"]
    report = build(spec, tmp_path / "d.so", base_dir=MANIFESTS, quiet=True, march="x86-64-v2")
    assert report.manifest["producer"]["cflags"] == ["-O3", "-march=x86-64-v2"]


def test_cli_march_native_is_recorded(tmp_path):
    out = tmp_path / "digits.so"
    subprocess.run([sys.executable, "-m", "packager", "build", os.path.join(MANIFESTS, "digits_mlp.yaml"),
                    "--march", "native", "-o", str(out), "-q"], check=True)
    with loader.open_package(str(out)) as package:
        assert package.manifest["producer"]["cflags"] == ["-O3", "-march=native"]


@pytest.mark.parametrize("march", ["", "native;rm", "-O0", "a b"])
def test_march_that_is_not_a_cpu_name_is_refused(march, tmp_path):
    with pytest.raises(BuildError, match="is not a CPU name"):
        build(example("digits_mlp"), tmp_path / "d.so", base_dir=MANIFESTS, quiet=True, march=march)


def test_march_native_is_refused_for_a_cross_target(tmp_path):
    needs_cross()
    with pytest.raises(BuildError, match=f"target {TRIPLE}: -march=native means this build machine's CPU"):
        build(example("digits_mlp"), tmp_path / "d.so", base_dir=MANIFESTS, quiet=True, target=TRIPLE,
              march="native")
