"""loader: the Python API over libdpk, on the bundled digits example."""

import os
import shutil
import threading

import numpy as np
import pytest

import loader
import reference as ref

MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manifests")


@pytest.fixture()
def model(digits_so):
    with loader.load(digits_so) as m:
        yield m


def reference(x):
    """The digits MLP's probabilities as a ref.Approx (float64 value, float32 rounding bound)."""
    w = np.load(os.path.join(MANIFESTS, "digits_mlp.npz"))
    scaled = x * w["pixel_scale"].astype(np.float64)
    scaled = ref.Approx(scaled, ref.EPS32 / 2 * np.abs(scaled))  # the mul: one rounding per element
    h = ref.unary_approx(ref.relu, ref.dense_approx(scaled, w["fc1.weight"], w["fc1.bias"]))
    return ref.softmax_approx(ref.dense_approx(h, w["fc2.weight"], w["fc2.bias"]), -1)


def sample(seed=0):
    return np.random.default_rng(seed).uniform(0, 16, (1, 64)).astype(np.float32)


def test_signature_manifest_and_modules(model):
    assert [(i.name, i.shape, i.dtype) for i in model.inputs] == [("x", (1, 64), np.dtype("float32"))]
    assert [(o.name, o.shape, o.dtype) for o in model.outputs] == [("probs", (1, 10), np.dtype("float32"))]
    assert model.manifest["name"] == "digits_mlp"
    assert model.manifest["entry"] == "main"
    kinds = {m.name: m.kind for m in model.modules}
    assert sorted(set(kinds.values())) == ["dso", "graph", "params"]
    assert kinds[model.manifest["entry"]] == "graph"


def test_run_and_call_match_numpy(model):
    x = sample()
    out = model.run(x=x)
    assert list(out) == ["probs"]
    ref.assert_close(out["probs"], reference(x), "probs")
    np.testing.assert_array_equal(model(x), out["probs"])


def test_non_contiguous_and_list_inputs_are_converted(model):
    x = sample(1)
    wide = np.zeros((1, 128), np.float32)
    wide[:, ::2] = x
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(model.run(x=view)["probs"], model.run(x=x)["probs"])
    np.testing.assert_array_equal(model.run(x=x.tolist())["probs"], model.run(x=x)["probs"])


@pytest.mark.parametrize("kwargs, message", [
    ({"y": np.zeros((1, 64), np.float32)}, "unknown input 'y'; the model takes x: float32[1, 64]"),
    ({}, "missing input 'x'; the model takes x: float32[1, 64]"),
    ({"x": np.zeros((1, 63), np.float32)}, "input 'x' is float32[1, 63] but the model expects float32[1, 64]"),
    ({"x": np.zeros((1, 64), np.float64)}, "input 'x' is float64[1, 64] but the model expects float32[1, 64]"),
])
def test_bad_inputs_name_the_input_and_expected_type(model, kwargs, message):
    with pytest.raises(loader.InvalidArgumentError) as err:
        model.run(**kwargs)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)


def test_concurrent_runs_from_8_threads_match_serial_runs(model):
    inputs = [sample(seed) for seed in range(64)]
    serial = [model(x) for x in inputs]
    results = [None] * len(inputs)
    barrier = threading.Barrier(8)

    def worker(k):
        barrier.wait()
        for _ in range(20):
            for i in range(k, len(inputs), 8):
                results[i] = model(inputs[i])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_get_function_calls_a_kernel_with_numpy_arrays(model):
    lib_module = next(m for m in model.manifest["modules"] if m["kind"] == "dso")
    relu = next(f for f in lib_module["functions"] if "relu" in f)
    fn = model.get_function(relu)
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    y = np.full((1, 64), np.nan, np.float32)
    assert fn(x, y) in (None, 0)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    with pytest.raises(loader.InternalError, match="expects 2 arguments"):
        fn(x)
    with pytest.raises(loader.NotFoundError, match="no_such_function"):
        model.get_function("no_such_function")


def test_close_and_context_manager(digits_so):
    with loader.load(digits_so) as m:
        m(sample())
    with pytest.raises(ValueError, match="closed"):
        m(sample())
    m.close()  # closing twice is fine


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(loader.NotFoundError, match="nope.so"):
        loader.load(str(tmp_path / "nope.so"))


def test_package_verify_names_the_corrupted_tensor(digits_so, tmp_path):
    bad = tmp_path / "bad.so"
    shutil.copy(digits_so, bad)
    package = loader.open_package(digits_so)
    assert package.format_version == (1, 0)
    package.verify()
    weights = next(m for m in package.manifest["modules"] if m["kind"] == "params")
    tensor = weights["tensors"]["fc2.weight"]
    data = bytearray(bad.read_bytes())
    section = data.find(b"DSOPACK\0")
    payload_offset = int.from_bytes(data[section + 32:section + 40], "little")
    data[section + payload_offset + tensor["offset"] + 5] ^= 0x40
    bad.write_bytes(bytes(data))
    with pytest.raises(loader.DataLossError, match="fc2.weight"):
        loader.open_package(str(bad)).verify()
    with pytest.raises(loader.DataLossError, match="fc2.weight"):
        loader.load(str(bad), verify=True)
    loader.load(str(bad)).close()  # without verify, load stays O(1) in weight size
