"""The command line (packager/cli.py): build, inspect, verify, run; errors as one line, exit 1."""

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

import loader
import reference
import section
from packager.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def spec(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "w.npz", w=rng.standard_normal((3, 4)).astype(np.float32),
             b=rng.standard_normal(3).astype(np.float32))
    doc = {"name": "tiny", "model": {"graph": {
        "inputs": {"x": {"shape": [1, 4], "dtype": "float32"}},
        "weights": "w.npz",
        "nodes": [{"op": "dense", "inputs": ["x", "w", "b"], "output": "h"},
                  {"op": "softmax", "inputs": ["h"], "output": "y", "axis": -1}],
        "outputs": ["y"]}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.fixture
def built(tmp_path, spec):
    out = str(tmp_path / "tiny.so")
    assert main(["build", spec, "-o", out, "-q"]) == 0
    return out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dsopack: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_build_prints_stages_and_explain(tmp_path, spec, capsys):
    out = str(tmp_path / "a.so")
    assert main(["build", spec, "-o", out, "--explain"]) == 0
    text = capsys.readouterr().out
    for i, stage in enumerate(["frontend", "infer", "partition", "lower", "package", "compile"], 1):
        assert f"[{i}/6] {stage}: " in text
    assert "dense_0 -> host (first in [host] that supports dense)" in text
    assert f"wrote {out}" in text and os.path.isfile(out)


def test_build_quiet_prints_nothing(tmp_path, spec, capsys):
    assert main(["build", spec, "-o", str(tmp_path / "a.so"), "-q"]) == 0
    assert capsys.readouterr() == ("", "")


def test_build_errors_are_one_line(tmp_path, spec, capsys):
    assert main(["build", str(tmp_path / "absent.yaml"), "-o", str(tmp_path / "a.so")]) == 1
    assert "manifest" in one_line_error(capsys) and not (tmp_path / "a.so").exists()

    doc = yaml.safe_load(open(spec))
    doc["model"]["graph"]["nodes"][1]["op"] = "softmaxx"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert main(["build", str(bad), "-o", str(tmp_path / "a.so"), "-q"]) == 1
    assert "node 'softmaxx_1' (op softmaxx): unknown op 'softmaxx'" in one_line_error(capsys)
    assert not (tmp_path / "a.so").exists()

    assert main(["build", spec, "-o", str(tmp_path / "a.so"), "--cc", "no-such-compiler", "-q"]) == 1
    assert "compiler 'no-such-compiler' not found" in one_line_error(capsys)


def test_argument_errors_exit_1(capsys):
    with pytest.raises(SystemExit) as info:
        main(["build"])
    assert info.value.code == 1
    assert "required" in one_line_error(capsys)
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 1
    one_line_error(capsys)


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for words in ("dsopack build manifests/digits_mlp.yaml -o digits.so", "dsopack inspect", "dsopack verify",
                  "dsopack run digits.so x=sample.npy", "backends:", "DSOPACK_CACHE"):
        assert words in text
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    assert "--explain" in capsys.readouterr().out


def test_inspect_prints_manifest_and_module_table(built, capsys):
    assert main(["inspect", built]) == 0
    text = capsys.readouterr().out
    manifest_text = loader.open_package(built).manifest_text
    assert manifest_text.strip() in text
    table = text[text.index("module "):].splitlines()
    assert table[0].split() == ["module", "kind", "codec", "stored", "raw", "imports"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {"host", "weights", "main"}
    assert rows["main"].split()[1:3] == ["graph", "zstd"] and rows["main"].rstrip().endswith("host, weights")
    assert "(2 tensors)" in rows["weights"] and "(2 functions)" in rows["host"]


def test_inspect_rejects_non_dsopack_files(tmp_path, capsys):
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"hello")
    assert main(["inspect", str(junk)]) == 1
    assert "not an ELF file" in one_line_error(capsys)
    plain = tmp_path / "plain.so"
    subprocess.run(["cc", "-shared", "-x", "c", "-", "-o", str(plain)], input=b"int f(void){return 1;}", check=True)
    assert main(["verify", str(plain)]) == 1
    assert "no .dpk section" in one_line_error(capsys)


def test_verify_ok_and_detects_a_flipped_weight_byte(tmp_path, built, capsys):
    assert main(["verify", built]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK {built}: format 1.0, 3 modules, 3 payloads")

    weights = next(m for m in loader.open_package(built).manifest["modules"] if m["kind"] == "params")
    data = bytearray(open(built, "rb").read())
    data[section.payload_file_offset(built, weights["tensors"]["w"]) + 5] ^= 0x40
    corrupt = tmp_path / "corrupt.so"
    corrupt.write_bytes(bytes(data))
    assert main(["verify", str(corrupt)]) == 1
    err = one_line_error(capsys)
    assert "weights" in err and ("'w'" in err or "checksum" in err.lower()), err


def test_verify_detects_a_changed_manifest(tmp_path, built, capsys):
    data = bytearray(open(built, "rb").read())
    i = bytes(data).find(b"name: tiny")
    data[i + 6:i + 10] = b"tinz"
    corrupt = tmp_path / "corrupt.so"
    corrupt.write_bytes(bytes(data))
    assert main(["verify", str(corrupt)]) == 1
    assert "manifest" in one_line_error(capsys)


def test_python_dash_m_packager(tmp_path, built):
    proc = subprocess.run([sys.executable, "-m", "packager", "verify", built], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("OK "), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "packager", "inspect", str(tmp_path / "nothing.so")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr == f"dsopack: error: '{tmp_path / 'nothing.so'}' not found\n"


# ---------------------------------------------------------------- run

def test_run_prints_outputs_and_timings(tmp_path, built, capsys):
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npz"
    assert main(["run", built, f"x={tmp_path / 'x.npy'}", "--repeat", "5", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("y: float32[1, 3] [")
    assert "load " in text and "first run " in text and "median of 5 runs" in text
    w = np.load(tmp_path / "w.npz")
    want = reference.softmax_approx(reference.dense_approx(x, w["w"], w["b"]), -1)
    reference.assert_close(np.load(out)["y"], want, "y")
    ref = want.value
    top = int(ref.argmax())
    assert f"argmax {top} ({ref[0, top]:.5g})" in text.splitlines()[0]


def test_run_random_and_input_errors(tmp_path, built, capsys):
    assert main(["run", built, "--random"]) == 0
    assert capsys.readouterr().out.startswith("y: float32[1, 3]")
    assert main(["run", built]) == 1
    assert "missing input 'x' (float32[1, 4])" in one_line_error(capsys)
    assert main(["run", built, "z=nothing.npy"]) == 1
    one_line_error(capsys)
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), np.float32))
    assert main(["run", built, f"x={tmp_path / 'bad.npy'}"]) == 1
    assert "x" in one_line_error(capsys)
    assert main(["run", built, "x"]) == 1
    assert "expected NAME=FILE.npy" in one_line_error(capsys)
