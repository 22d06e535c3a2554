"""The bundled examples in manifests/: built, run from Python and from C."""

import os
import subprocess
import sys

import numpy as np
import pytest

import loader
import reference as ref
from packager.build import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFESTS = os.path.join(ROOT, "manifests")
sys.path.insert(0, MANIFESTS)
from train_digits_mlp import split  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    paths = {}
    for name in ("digits_mlp", "lenet"):
        paths[name] = str(out / f"{name}.so")
        build(os.path.join(MANIFESTS, f"{name}.yaml"), paths[name], quiet=True)
    return paths


def digits_reference(x):
    w = np.load(os.path.join(MANIFESTS, "digits_mlp.npz"))
    h = np.maximum((x * w["pixel_scale"]) @ w["fc1.weight"].T + w["fc1.bias"], 0)
    return h @ w["fc2.weight"].T + w["fc2.bias"]


def test_digits_reproduces_the_trained_accuracy(built):
    _, x_test, _, y_test = split()
    with loader.load(built["digits_mlp"]) as model:
        probs = np.concatenate([model(x[None]) for x in x_test])
    predicted = probs.argmax(axis=1)
    np.testing.assert_array_equal(predicted, digits_reference(x_test).argmax(axis=1))
    accuracy = (predicted == y_test).mean()
    assert accuracy > 0.95, accuracy  # train_digits_mlp.py reports 0.9694


def lenet_reference(image):
    """LeNet's probabilities as a ref.Approx: float64 values and their float32 rounding bounds."""
    w = np.load(os.path.join(MANIFESTS, "lenet.npz"))
    return ref.lenet_approx(image, w)


def test_lenet_matches_numpy_and_uses_json_and_host(built):
    image = np.random.default_rng(3).standard_normal((1, 1, 28, 28)).astype(np.float32)
    with loader.load(built["lenet"]) as model:
        kinds = {m.kind for m in model.modules}
        probs = model(image)
    assert {"json", "dso", "params", "graph"} <= kinds
    ref.assert_close(probs, lenet_reference(image), "probs")


@pytest.mark.parametrize("name", ["digits_mlp", "lenet"])
def test_dpk_run_and_loader_give_identical_outputs(built, name, tmp_path, dpk_run):
    with loader.load(built[name]) as model:
        info = model.inputs[0]
        x = np.random.default_rng(5).uniform(0, 1, info.shape).astype(info.dtype)
        expected = model(x)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    subprocess.run([dpk_run, built[name], f"{info.name}={tmp_path / 'x.npy'}", "-o", str(out)], check=True,
                   capture_output=True)
    np.testing.assert_array_equal(np.load(out), expected)
