"""`dsopack build model.onnx` without a manifest uses the fastest backends the target has
(packager/backend_choice.py); `--backends` and `build(backends=...)` set the priority."""

import os
import platform
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import loader
from packager import backend_choice
from packager.build import build
from packager.cli import main
from packager.ir import BuildError

RNG = np.random.default_rng(3)
W = RNG.standard_normal((16, 8)).astype(np.float32)


@pytest.fixture
def mlp(tmp_path):
    """x[2, 16] @ W -> relu: a MatMul cblas takes (as dense, with the relu fused) and a Softmax it does not."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["a"], name="act"),
         helper.make_node("Softmax", ["a"], ["y"], name="sm")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], initializer=[numpy_helper.from_array(W, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "mlp.onnx"
    onnx.save(model, str(path))
    return str(path)


def check_outputs(so: str, onnx_path: str) -> None:
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    ref = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with loader.load(so) as model:
        got = model.run(x=x)["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_openblas_is_found_here():
    """scripts/setup.sh installs libopenblas-dev: the probe must find it (else the default tests below test nothing)."""
    from packager import toolchain
    from packager.spec import Target

    assert backend_choice.openblas_missing(toolchain.configure(Target())) is None


def test_default_is_xnnpack_then_cblas_then_host(tmp_path, mlp, capsys):
    """An MLP's dense is cblas's (xnnpack takes a dense only inside its NHWC regions); a conv is xnnpack's."""
    out = tmp_path / "m.so"
    assert main(["build", mlp, "-o", str(out), "--explain"]) == 0
    text = capsys.readouterr().out
    assert "backends [xnnpack, cblas, host]: the default for " in text
    assert "XNNPACK found" in text and "OpenBLAS found" in text
    assert "mm -> cblas (xnnpack: xnnpack takes a dense only inside a region" in text
    assert "act -> cblas (fused into mm)" in text
    assert "sm -> host (xnnpack: op softmax has no xnnpack kernel" in text
    report = build(mlp, str(tmp_path / "r.so"), quiet=True)
    assert report.backends == ["xnnpack", "cblas", "host"]
    assert report.manifest["requires"] == ["libopenblas.so.0"]
    check_outputs(str(out), mlp)

    wc = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        initializer=[numpy_helper.from_array(wc, "wc")])
    cnn = str(tmp_path / "cnn.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), cnn)
    assert main(["build", cnn, "-o", str(tmp_path / "c.so"), "--explain"]) == 0
    text = capsys.readouterr().out
    assert "conv -> xnnpack (first in [xnnpack, cblas, host] that supports conv2d)" in text
    assert build(cnn, str(tmp_path / "c2.so"), quiet=True).manifest["requires"] == ["libXNNPACK.so.0"]


def test_default_without_xnnpack_is_cblas_then_host(tmp_path, mlp, capsys, monkeypatch):
    """No XNNPACK for the target (the probe's answer simulated): cblas takes the dense, one line says why."""
    real = backend_choice._probe
    monkeypatch.setattr(backend_choice, "_probe", lambda probe, *rest: "header xnnpack.h" if "xnnpack" in probe
                        else real(probe, *rest))
    out = tmp_path / "m.so"
    assert main(["build", mlp, "-o", str(out), "--explain"]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if "XNNPACK not found" in line]
    assert lines and lines[0].strip().startswith("backends [cblas, host]: XNNPACK not found for "), text
    assert "(header xnnpack.h)" in lines[0] and "apt-get install libxnnpack-dev libpthreadpool-dev" in lines[0]
    assert "mm -> cblas (first in [cblas, host] that supports dense)" in text
    assert "act -> cblas (fused into mm)" in text
    assert build(mlp, str(tmp_path / "r.so"), quiet=True).manifest["requires"] == ["libopenblas.so.0"]
    check_outputs(str(out), mlp)


def test_default_without_libraries_is_host_and_says_so(tmp_path, mlp, capsys, monkeypatch):
    """Neither XNNPACK nor OpenBLAS for the target (simulated): host alone, one progress line with the hints."""
    monkeypatch.setattr(backend_choice, "_probe", lambda probe, *rest: "header cblas.h" if "cblas" in probe
                        else "header xnnpack.h")
    out = tmp_path / "m.so"
    assert main(["build", mlp, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = [line for line in captured.out.splitlines() if "OpenBLAS not found" in line]
    assert len(lines) == 1, captured.out
    assert "backends [host]: XNNPACK not found for " in lines[0] and "(header xnnpack.h)" in lines[0]
    assert "OpenBLAS not found for " in lines[0] and "(header cblas.h)" in lines[0]
    assert "apt-get install libopenblas-dev" in lines[0] and "apt-get install libxnnpack-dev" in lines[0]
    assert main(["build", mlp, "-o", str(out), "--explain", "-q"]) == 0
    text = capsys.readouterr().out
    assert "backends [host]: the default for " in text and "without xnnpack, cblas: XNNPACK not found" in text
    assert "mm -> host (first in [host] that supports dense)" in text
    report = build(mlp, str(tmp_path / "r.so"), quiet=True)
    assert report.backends == ["host"] and report.manifest.get("requires", []) == []
    check_outputs(str(out), mlp)


def test_probe_names_what_is_missing():
    """The real probe (toolchain.link_probe), with a library and a header that do not exist."""
    from packager import toolchain

    assert toolchain.link_probe(backend_choice.PROBE_C, ["cc"], [], [], ["openblas"]) is None
    missing = toolchain.link_probe(backend_choice.PROBE_C, ["cc"], [], [], ["openblas", "dsopack_no_such_library"])
    assert missing == "library -ldsopack_no_such_library"
    missing = toolchain.link_probe("#include <dsopack_no_such_header.h>\n", ["cc"], [], [], [])
    assert missing == "header dsopack_no_such_header.h"


def test_backends_option_overrides(tmp_path, mlp, capsys):
    out = tmp_path / "m.so"
    assert main(["build", mlp, "-o", str(out), "--backends", "host", "--explain"]) == 0
    text = capsys.readouterr().out
    assert "backends [host]: as given by --backends (build's backends=)" in text
    assert "mm -> host" in text and "cblas" not in text
    check_outputs(str(out), mlp)
    report = build(mlp, str(tmp_path / "j.so"), quiet=True, backends=["json", "host"])
    assert report.backends == ["json", "host"] and report.manifest.get("requires", []) == []
    assert any(m["kind"] == "json" for m in report.manifest["modules"])


def test_backends_option_overrides_a_manifest(tmp_path, mlp):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"model: {{onnx: {mlp}}}\nbackends: [json, host]\n")
    report = build(str(manifest), str(tmp_path / "a.so"), quiet=True)
    assert report.backends == ["json", "host"] and report.backends_reason == "as given by the manifest"
    report = build(str(manifest), str(tmp_path / "b.so"), quiet=True, backends="cblas,host")
    assert report.backends == ["cblas", "host"] and report.manifest["requires"] == ["libopenblas.so.0"]
    assert report.backends_reason.startswith("as given by --backends")
    # a manifest without `backends` keeps its documented default, [host]
    manifest.write_text(f"model: {{onnx: {mlp}}}\n")
    assert build(str(manifest), str(tmp_path / "c.so"), quiet=True).backends == ["host"]


@pytest.mark.parametrize("value, message", [
    ("cuda,host", "--backends: unknown backend 'cuda' (known: cblas, host, json"),
    ("host,host", "--backends: lists host more than once"),
    ("", "--backends: expected backend names separated by commas"),
    ("cblas,,host", "--backends: expected backend names separated by commas"),
])
def test_bad_backends_option(tmp_path, mlp, capsys, value, message):
    out = tmp_path / "m.so"
    assert main(["build", mlp, "-o", str(out), "--backends", value]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dsopack: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_bad_backends_keyword(tmp_path, mlp):
    with pytest.raises(BuildError, match=r"backends: unknown backend 'nope' \(known: "):
        build(mlp, str(tmp_path / "m.so"), quiet=True, backends=["nope"])
    with pytest.raises(BuildError, match="backends: expected backend names"):
        build(mlp, str(tmp_path / "m.so"), quiet=True, backends=[])


def test_help_teaches_backends(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--backends A,B,..." in text and "overrides the manifest's `backends`" in text
    assert "xnnpack,cblas,host, less xnnpack without XNNPACK and cblas without OpenBLAS for it" in text


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or platform.machine() != "x86_64",
                    reason="needs an x86-64 host with aarch64-linux-gnu-gcc (bash scripts/setup.sh --cross)")
def test_cross_target_default_follows_the_targets_libraries(tmp_path, mlp, capsys):
    """The probes use the cross toolchain and the target's own libraries: xnnpack and cblas exactly when the
    arm64 XNNPACK and OpenBLAS are installed (the x86-64 ones do not count; the arm64 XNNPACK by dpkg or unpacked
    into /usr/local/lib/aarch64-linux-gnu by scripts/setup.sh --cross); a note names the :arm64 package of each
    one left out, and for XNNPACK (not Multi-Arch: same) that apt-get would remove the amd64 one."""
    has = {"xnnpack": any(os.path.exists(f"{d}/aarch64-linux-gnu/libXNNPACK.so")
                          for d in ("/usr/lib", "/usr/local/lib")),
           "cblas": os.path.exists("/usr/lib/aarch64-linux-gnu/libopenblas.so")}
    assert main(["build", mlp, "-o", str(tmp_path / "a.so"), "--target", "aarch64-linux-gnu", "--explain"]) == 0
    text = capsys.readouterr().out
    kept = [name for name in ("xnnpack", "cblas") if has[name]] + ["host"]
    assert f"backends [{', '.join(kept)}]: the default for aarch64-linux-gnu" in text
    assert f"mm -> {'cblas' if has['cblas'] else 'host'}" in text  # an MLP's dense is never xnnpack's
    for name, label, package in (("xnnpack", "XNNPACK", "libxnnpack-dev:arm64"),
                                 ("cblas", "OpenBLAS", "libopenblas-dev:arm64")):
        assert (f"{label} found" in text) == has[name]
        assert (package in text) == (not has[name])
    assert ("would remove the amd64 ones (not Multi-Arch: same)" in text) == (not has["xnnpack"])
