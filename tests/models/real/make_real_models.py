"""Real architectures as committed ONNX graphs WITHOUT their weights (tests fill them, seeded).

    /path/to/venv-with-torch/bin/python tests/models/real/make_real_models.py [NAME ...]

Needs torch, torchvision and transformers (not installed by scripts/setup.sh: the tests do not need
them). Each model is built from its library's constructor (no hub download), exported the way its
users export it: `torch.onnx.export` with the default (dynamo) exporter, `NAME.dynamo.onnx`, and with
`dynamo=False` at opset 17, `NAME.script.onnx`. Every float initializer of more than 64 values is
written with its name, dtype and shape but no data: the `.onnx` files stay small (a ResNet-18 is 45 MB
of weights and 80 KB of graph), and tests/real_models.py fills them from a seed before a test builds
the model and compares it with onnxruntime. Small initializers (shapes, axes, constants) are kept.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
KEEP = 64  # initializers of at most this many values keep their data
STRIPPED = "dsopack:stripped"  # doc_string of an initializer whose data the test fills


def vision(name, size=224, **kwargs):
    import torchvision

    return lambda: (getattr(torchvision.models, name)(weights=None, **kwargs), (torch.randn(1, 3, size, size),))


def hf(config_name, model_name, ids_shape=(1, 16), **config):
    def make():
        import transformers

        cfg = getattr(transformers, config_name)(**config)
        cfg.use_cache = False  # an encoder-style forward: no key/value cache in or out
        model = getattr(transformers, model_name)(cfg)
        model.config.return_dict = False
        ids = torch.randint(0, cfg.vocab_size, ids_shape, generator=torch.Generator().manual_seed(0))
        return model, {"input_ids": ids}  # by name: forward's second positional is not always the mask
    return make


def lstm():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(32, 4)

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.head(y[:, -1])
    return Net(), (torch.randn(2, 10, 16),)


def bigru():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(16, 24, batch_first=True, bidirectional=True)

        def forward(self, x):
            return self.rnn(x)[0]
    return Net(), (torch.randn(2, 10, 16),)


def audio():
    net = torch.nn.Sequential(
        torch.nn.Conv1d(1, 16, 9, stride=4), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
        torch.nn.Conv1d(16, 32, 5, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
        torch.nn.Linear(32, 10))
    return net, (torch.randn(1, 1, 4000),)


def segmentation():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.down = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU())
            self.up = torch.nn.ConvTranspose2d(32, 16, 2, stride=2)
            self.head = torch.nn.Conv2d(16, 5, 1)

        def forward(self, x):
            y = self.head(torch.relu(self.up(self.down(x))))
            return torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return Net(), (torch.randn(1, 3, 64, 64),)


MODELS = {
    "resnet18": vision("resnet18"),
    "mobilenet_v2": vision("mobilenet_v2"),
    "mobilenet_v3_small": vision("mobilenet_v3_small"),
    "efficientnet_b0": vision("efficientnet_b0"),
    "squeezenet1_0": vision("squeezenet1_0"),
    "shufflenet_v2_x0_5": vision("shufflenet_v2_x0_5"),
    "densenet121": vision("densenet121"),
    "regnet_y_400mf": vision("regnet_y_400mf"),
    "convnext_tiny": vision("convnext_tiny"),
    "vit_b_16": vision("vit_b_16"),
    "bert": hf("BertConfig", "BertModel", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=128, vocab_size=1000),
    "distilbert": hf("DistilBertConfig", "DistilBertModel", dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                     vocab_size=1000),
    "gpt2": hf("GPT2Config", "GPT2Model", n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64),
    "t5_encoder": hf("T5Config", "T5EncoderModel", d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16,
                     vocab_size=1000),
    "lstm": lstm,
    "bigru": bigru,
    "audio_conv1d": audio,
    "segmentation": segmentation,
}


def strip(path: str) -> None:
    """Rewrite `path` (and drop its external data file) with the large float initializers stripped."""
    model = onnx.load(path)
    for init in model.graph.initializer:
        array = onnx.numpy_helper.to_array(init)
        if array.dtype.kind == "f" and array.size > KEEP:
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.ClearField("data_location")
            del init.external_data[:]
            init.doc_string = STRIPPED
    for stale in (path + ".data", os.path.splitext(path)[0] + ".onnx.data"):
        if os.path.exists(stale):
            os.remove(stale)
    onnx.save(model, path)


def export(name: str) -> None:
    torch.manual_seed(0)
    model, inputs = MODELS[name]()
    model.eval()
    for kind, kwargs in (("dynamo", {}), ("script", {"dynamo": False, "opset_version": 17})):
        path = os.path.join(HERE, f"{name}.{kind}.onnx")
        try:
            args, named = ((), inputs) if isinstance(inputs, dict) else (inputs, None)
            torch.onnx.export(model, args, path, kwargs=named, **kwargs)
        except Exception as e:  # an exporter that cannot take the model is a fact worth keeping
            print(f"{name} ({kind} exporter) did not export: {type(e).__name__}: {str(e)[:200]}")
            continue
        strip(path)
        print(f"{path}: {os.path.getsize(path) // 1024} KiB")


if __name__ == "__main__":
    for name in sys.argv[1:] or MODELS:
        export(name)
