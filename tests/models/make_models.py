"""Make the small ONNX models of tests/test_onnx.py with PyTorch (run by hand; the tests need no torch).

    .venv/bin/pip install torch==2.13.0      # CPU wheel
    .venv/bin/python tests/models/make_models.py

Each model is seeded (weights and batchnorm statistics) and exported with the
TorchScript exporter (dynamo=False), which writes the Shape -> Gather ->
Unsqueeze -> Concat -> Reshape chains that `x.view(x.size(0), -1)` becomes,
with a symbolic batch dimension. The files are committed; re-running this
script with the same torch rewrites the same graphs and weights.

    lenet.onnx      opset 13: conv 5x5 (pads), maxpool, avgpool, view chain, Gemm, LogSoftmax
    resnet.onnx     opset 17: conv+batchnorm, residual adds, strided 1x1 shortcut, batchnorm after
                    an add (not foldable into a conv), SAME-style pads, global avgpool, flatten, Gemm
    mobilenet.onnx  opset 18: depthwise separable convs (groups = channels), ReLU6 (Clip with
                    min/max inputs), LeakyReLU, ceil-mode maxpool, view chain, Softmax
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.layer1 = Block(16, 16, 1)
        self.layer2 = Block(16, 32, 2)
        self.layer3 = Block(32, 64, 2)
        self.post_bn = nn.BatchNorm2d(64)  # after a residual add: stays a BatchNormalization node
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.post_bn(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


def separable(cin, cout, stride):
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())


class MobileNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.body = nn.Sequential(separable(16, 32, 1), separable(32, 64, 2), separable(64, 64, 1))
        self.head = nn.Conv2d(64, 96, 1)
        self.fc = nn.Linear(96, classes)

    def forward(self, x):
        x = self.body(self.stem(x))
        x = F.leaky_relu(self.head(x), 0.1)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = F.adaptive_avg_pool2d(x, 1)
        x = x.view(x.size(0), -1)
        return F.softmax(self.fc(x), dim=1)


def _randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial statistics and affine parameters, so batchnorm is not close to the identity."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)


MODELS = {
    # name: (class, input shape, opset)
    "lenet": (LeNet, (1, 1, 28, 28), 13),
    "resnet": (ResNet, (1, 3, 32, 32), 17),
    "mobilenet": (MobileNet, (1, 3, 32, 32), 18),
}


def make(name: str, out_dir: str = HERE) -> str:
    cls, shape, opset = MODELS[name]
    torch.manual_seed(0)
    model = cls()
    _randomize_batchnorm(model, torch.Generator().manual_seed(1))
    model.eval()
    path = os.path.join(out_dir, f"{name}.onnx")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    # training=PRESERVE with an eval-mode model keeps BatchNormalization nodes (EVAL would fold them
    # into the convs, and the frontend's own folding would go untested).
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True)
    return path


if __name__ == "__main__":
    for name in MODELS:
        path = make(name)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
