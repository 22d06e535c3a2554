"""Measure how far dsopack's outputs are from onnxruntime's on the test models (the table in docs/onnx.md).

    .venv/bin/python tests/models/measure_diffs.py          # needs onnx, onnxruntime, skl2onnx, scikit-learn

For each model: build it (host backend, -O3) at batch 1 and 8, run 20 seeded
random inputs through both, and report the largest absolute difference and
the largest relative difference |got - ort| / |ort| over outputs with |ort| >= 1e-3
(smaller values say little about relative error).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

import numpy as np
import onnx
import onnxruntime as ort

import loader
from packager.build import build

HERE = os.path.dirname(os.path.abspath(__file__))


def sklearn_mlp(out_dir: str) -> tuple[str, np.ndarray]:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=60, random_state=0).fit(x[:1500], y[:1500])
    model = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path = os.path.join(out_dir, "mlp.onnx")
    onnx.save(model, path)
    return path, x[1500:]


def measure(path: str, input_name: str, shape: tuple[int, ...], draw, work: str) -> tuple[float, float, int]:
    out = os.path.join(work, "m.so")
    build(path, out, shapes={input_name: list(shape)}, quiet=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    max_abs = max_rel = 0.0
    mismatched_labels = 0
    with loader.load(out) as model:
        for seed in range(20):
            x = draw(seed, shape)
            refs = session.run(None, {input_name: x})
            got = model.run(**{input_name: x})
            for name, ref in zip(names, refs):
                if ref.dtype.kind != "f":
                    mismatched_labels += int(np.count_nonzero(got[name] != ref))
                    continue
                diff = np.abs(got[name].astype(np.float64) - ref)
                max_abs = max(max_abs, float(diff.max()))
                big = np.abs(ref) >= 1e-3
                if big.any():
                    max_rel = max(max_rel, float((diff[big] / np.abs(ref[big])).max()))
    return max_abs, max_rel, mismatched_labels


def main() -> int:
    os.environ.setdefault("DSOPACK_CACHE", tempfile.mkdtemp(prefix="dsopack-measure-cache-"))
    rows = []
    with tempfile.TemporaryDirectory() as work:
        def normal(seed, shape):
            return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

        for name, shape in [("lenet", (1, 28, 28)), ("resnet", (3, 32, 32)), ("mobilenet", (3, 32, 32))]:
            for batch in (1, 8):
                a, r, _ = measure(os.path.join(HERE, f"{name}.onnx"), "x", (batch,) + shape, normal, work)
                rows.append((f"{name}.onnx", batch, a, r, "-"))
        path, digits = sklearn_mlp(work)
        for batch in (1, 8):
            def sample(seed, shape, batch=batch):
                start = (seed * batch) % (len(digits) - batch)
                return digits[start:start + batch]
            a, r, wrong = measure(path, "X", (batch, 64), sample, work)
            rows.append(("skl2onnx MLPClassifier (digits)", batch, a, r, f"{wrong} of {20 * batch}"))
    print("| model | batch | max abs diff | max rel diff | labels differing |")
    print("|---|---|---|---|---|")
    for model, batch, a, r, labels in rows:
        print(f"| {model} | {batch} | {a:.2e} | {r:.2e} | {labels} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
