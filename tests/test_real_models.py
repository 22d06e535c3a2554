"""Real architectures as their users export them (tests/models/real: torchvision, Hugging Face, RNNs, a
Conv1d audio net, a segmentation net; both torch exporters), weights filled from a seed
(tests/real_models.py), built by `dsopack build model.onnx` and compared with onnxruntime.

Every one of them builds and must match onnxruntime within a relative difference of 1e-4 (same shapes
and dtypes). (Until the ops they need existed, a ledger here listed what each was refused for; a model
added later that does not build fails here with the one error listing every unsupported op.)
"""

from __future__ import annotations


import numpy as np
import onnx
import onnxruntime as ort
import pytest

import loader
import real_models
from packager.build import build

@pytest.mark.parametrize("name", real_models.names())
def test_a_real_model_builds_and_matches_onnxruntime(name, tmp_path):
    model = real_models.filled(name)
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    feeds = real_models.feeds(model)
    report = build(path, tmp_path / "m.so", quiet=True)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    with loader.load(report.output) as m:
        got = m.run(**feeds)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].shape == value.shape and got[key].dtype == value.dtype, key
        scale = max(float(np.abs(value).max()), 1e-30)
        assert float(np.abs(got[key].astype(np.float64) - value).max()) / scale <= 1e-4, key
