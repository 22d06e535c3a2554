"""Real architectures as their users export them (tests/models/real: torchvision, Hugging Face, RNNs, a
Conv1d audio net, a segmentation net; both torch exporters), weights filled from a seed
(tests/real_models.py), built by `dsopack build model.onnx` and compared with onnxruntime.

A model dsopack builds must match onnxruntime within a relative difference of 1e-4 (same shapes and
dtypes). A model it cannot build yet must be refused with the one error that lists every unsupported op,
and the ops it lists must be exactly those in REFUSED: this table is the ledger of what is left, so
adding an op fails here until the entries it unblocks move to the built side.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import loader
import real_models
from packager.build import build
from packager.ir import BuildError

# model -> the unsupported ONNX ops its build error lists (or, for another refusal, a phrase of it)
REFUSED = {
}


def unsupported_ops(message: str) -> set[str]:
    """The op names of 'file: unsupported ONNX ops (opset N): Op (node, ...), Op2 (...)'."""
    listing = message.split("): ", 1)[1] if "unsupported ONNX ops" in message else ""
    return set(re.findall(r"(?:^|\), )(\w+) \(", listing))


@pytest.mark.parametrize("name", real_models.names())
def test_a_real_model_builds_and_matches_onnxruntime_or_is_refused_as_listed(name, tmp_path):
    model = real_models.filled(name)
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    feeds = real_models.feeds(model)
    if name in REFUSED:
        with pytest.raises(BuildError) as info:
            build(path, tmp_path / "m.so", quiet=True)
        message = str(info.value)
        want = REFUSED[name]
        if isinstance(want, str):
            assert want in message
        else:
            assert unsupported_ops(message) == want, message
        return
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
