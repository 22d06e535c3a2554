"""Host kernels through the whole build: a CNN built with `backends: [host]`,
run with the loader, against the NumPy reference."""

import os

import numpy as np
import pytest
import yaml

import reference as ref
from packager.build import build
import loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSOPACK_CACHE", str(tmp_path / "cache"))


def test_lenet_all_host_matches_reference(tmp_path):
    with open(os.path.join(ROOT, "manifests", "lenet.yaml")) as f:
        doc = yaml.safe_load(f)
    doc["backends"] = ["host"]
    doc["model"]["graph"]["weights"] = os.path.join(ROOT, "manifests", doc["model"]["graph"]["weights"])
    manifest = tmp_path / "lenet_host.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = str(tmp_path / "lenet_host.so")
    build(str(manifest), out, quiet=True)

    w = np.load(os.path.join(ROOT, "manifests", "lenet.npz"))
    x = np.random.default_rng(1).random((2, 1, 1, 28, 28)).astype(np.float32)
    model = loader.load(out)
    for image in x:
        got = model(image)
        ref.assert_close(got, ref.lenet_approx(image, w), "probs")
