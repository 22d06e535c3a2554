"""The benchmark models, each made once from seeded weights as three things:
an ONNX file (for onnxruntime), a dsopack deployment manifest (YAML graph +
.npz, or the ONNX file when the ONNX frontend builds it) and a NumPy forward
pass (the floor). Used by benchmarks/compare.py; nothing here is timed.

A model is a list of nodes in the YAML graph vocabulary of DESIGN.md (dense
W is [out, in]; conv2d is NCHW/OIHW, pads [top, left, bottom, right]); the
ONNX graph is the same list mapped node for node (Gemm transB=1, Conv, ...).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np

F32 = np.float32


@dataclass
class Model:
    name: str
    title: str
    input_shape: tuple[int, ...]  # batch 1
    nodes: list[dict]
    weights: dict[str, np.ndarray]
    output: str
    roles: set[str] = field(default_factory=set)  # which measurements use it: latency, startup, pss, overhead
    onnx_path: str | None = None  # set for a model that only exists as an ONNX file (tests/models)

    @property
    def weight_bytes(self) -> int:
        return sum(a.nbytes for a in self.weights.values())


# ------------------------------------------------------------------ definitions

class _Maker:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[dict] = []
        self.weights: dict[str, np.ndarray] = {}
        self.last = "x"
        self.k = 0

    def _out(self, op: str) -> str:
        self.k += 1
        return f"{op}{self.k}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self._out(op)
        self.nodes.append({"op": op, "inputs": [self.last, *inputs], "output": out, **attrs})
        self.last = out
        return out

    def dense(self, n_in: int, n_out: int) -> str:
        name = f"fc{self.k + 1}"
        self.weights[f"{name}.weight"] = (self.rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)).astype(F32)
        self.weights[f"{name}.bias"] = (self.rng.standard_normal(n_out) * 0.01).astype(F32)
        return self.node("dense", [f"{name}.weight", f"{name}.bias"])

    def conv(self, c_in: int, c_out: int, k: int, stride: int = 1, pad: int = 0) -> str:
        name = f"conv{self.k + 1}"
        fan_in = c_in * k * k
        self.weights[f"{name}.weight"] = (self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / fan_in)).astype(F32)
        self.weights[f"{name}.bias"] = (self.rng.standard_normal(c_out) * 0.01).astype(F32)
        attrs = {}
        if stride != 1:
            attrs["strides"] = [stride, stride]
        if pad:
            attrs["pads"] = [pad] * 4
        return self.node("conv2d", [f"{name}.weight", f"{name}.bias"], **attrs)

    def batchnorm(self, c: int) -> str:
        name = f"bn{self.k + 1}"
        self.weights[f"{name}.scale"] = (1 + 0.1 * self.rng.standard_normal(c)).astype(F32)
        self.weights[f"{name}.bias"] = (0.1 * self.rng.standard_normal(c)).astype(F32)
        self.weights[f"{name}.mean"] = (0.1 * self.rng.standard_normal(c)).astype(F32)
        self.weights[f"{name}.var"] = (1 + 0.1 * np.abs(self.rng.standard_normal(c))).astype(F32)
        return self.node("batchnorm", [f"{name}.{p}" for p in ("scale", "bias", "mean", "var")], epsilon=1e-5)


def mlp(name: str, title: str, sizes: list[int], seed: int, roles: set[str]) -> Model:
    m = _Maker(seed)
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        m.dense(a, b)
        if i < len(sizes) - 2:
            m.node("relu", [])
    out = m.node("softmax", [], axis=-1)
    return Model(name, title, (1, sizes[0]), m.nodes, m.weights, out, roles)


def lenet(seed: int, roles: set[str]) -> Model:
    m = _Maker(seed)
    m.conv(1, 6, 5, pad=2)
    m.node("relu", [])
    m.node("maxpool2d", [], kernel=[2, 2], strides=[2, 2])
    m.conv(6, 16, 5)
    m.node("relu", [])
    m.node("maxpool2d", [], kernel=[2, 2], strides=[2, 2])
    m.node("flatten", [], axis=1)
    m.dense(16 * 5 * 5, 120)
    m.node("relu", [])
    m.dense(120, 84)
    m.node("relu", [])
    m.dense(84, 10)
    out = m.node("softmax", [], axis=-1)
    return Model("lenet", "LeNet-5 CNN 1x28x28 (conv5x5 6, 16; pools; dense 120-84-10)", (1, 1, 28, 28),
                 m.nodes, m.weights, out, roles)


def small_cnn(seed: int, roles: set[str]) -> Model:
    m = _Maker(seed)
    m.conv(3, 16, 3, pad=1)
    m.batchnorm(16)
    m.node("relu", [])
    m.conv(16, 32, 3, stride=2, pad=1)
    m.batchnorm(32)
    m.node("relu", [])
    m.conv(32, 64, 3, stride=2, pad=1)
    m.node("relu", [])
    m.node("global_avgpool", [])
    m.node("flatten", [], axis=1)
    m.dense(64, 10)
    out = m.node("softmax", [], axis=-1)
    return Model("cnn_bn", "small CNN 3x32x32 (3 conv3x3 16-32-64, batchnorm, global avgpool, dense 10)",
                 (1, 3, 32, 32), m.nodes, m.weights, out, roles)


def tiny_add(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    w = {"c": rng.standard_normal((1, 4)).astype(F32)}
    return Model("tiny_add", "tiny add: x[1,4] + c (call overhead)", (1, 4),
                 [{"op": "add", "inputs": ["x", "c"], "output": "y"}], w, "y", {"overhead"})


def standard_models() -> list[Model]:
    return [
        mlp("mlp_small", "MLP 784-512-512-10", [784, 512, 512, 10], 1, {"latency", "startup"}),
        mlp("mlp_1mb", "MLP 256-1024-10 (1 MB of weights: load scaling)", [256, 1024, 10], 2, {"startup"}),
        mlp("mlp_100mb", "MLP 1024-4096-4096-1024-10 (100 MB of weights)", [1024, 4096, 4096, 1024, 10], 3,
            {"latency", "startup", "pss"}),
        lenet(4, {"latency", "startup"}),
        small_cnn(5, {"latency", "startup"}),
        tiny_add(6),
    ]


def onnx_models(root: str) -> list[Model]:
    """ResNet/MobileNet-style models committed under tests/models/ (by the ONNX frontend's tests)."""
    folder = os.path.join(root, "tests", "models")
    if not os.path.isdir(folder):
        return []
    found = []
    for entry in sorted(os.listdir(folder)):
        if entry.endswith(".onnx"):
            path = os.path.join(folder, entry)
            found.append(Model(f"tm_{entry[:-5]}", f"tests/models/{entry}", (), [], {}, "", {"latency", "startup"}, path))
    return found



# ------------------------------------------------------------------ issue 15's named models

ISSUE_VISION = ("resnet18", "mobilenet_v2", "efficientnet_b0")  # torchvision at 224x224 (tests/models/real)


def issue_models(root: str, folder: str) -> list[Model]:
    """The models issue 15 names beside compare.py's own: torchvision ResNet-18, MobileNet v2 and
    EfficientNet-B0 at 224x224 (the committed TorchScript exports in tests/models/real, whose batch
    dimension re-sets cleanly, with tests/real_models.py's seeded weights) and a BERT encoder of 2
    layers, hidden 128, sequence 32 (bert_onnx). Their ONNX files are written to `folder`."""
    import onnx

    sys.path.insert(0, os.path.join(root, "tests"))
    import real_models

    found = []
    for name in ISSUE_VISION:
        path = os.path.join(folder, f"{name}.onnx")
        onnx.save(real_models.filled(f"{name}.script"), path)
        found.append(Model(name, f"torchvision {name}, 224x224", (), [], {}, "", {"latency"}, path))
    path = os.path.join(folder, "bert_2x128.onnx")
    bert_onnx(path)
    found.append(Model("bert_2x128", "BERT encoder, 2 layers, hidden 128, 2 heads, sequence 32", (), [], {}, "",
                       {"latency"}, path))
    return found


def bert_onnx(path: str, layers: int = 2, hidden: int = 128, heads: int = 2, ffn: int = 512, seq: int = 32,
              seed: int = 7) -> None:
    """A BERT encoder as the Hugging Face export lays it out (MatMul + Add, heads split by Reshape +
    Transpose, scaled scores, Softmax, GELU as x/2 (1 + erf(x / sqrt 2)), post-LayerNormalization
    residuals), built with onnx.helper (no torch). Its input is the embedded sequence [batch, seq,
    hidden] in float32 (the embedding lookup is a gather: no time), after the embeddings' LayerNorm."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def tensor(name, a):
        inits.append(numpy_helper.from_array(np.asarray(a), name))
        return name

    def weight(name, shape, scale=None):
        return tensor(name, (rng.standard_normal(shape) * (scale or 1.0 / np.sqrt(shape[0]))).astype(F32))

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def dense(x, n_in, n_out, name):
        y = node("MatMul", [x, weight(f"{name}.weight", (n_in, n_out))], f"{name}.mm")
        return node("Add", [y, weight(f"{name}.bias", (n_out,), 0.02)], f"{name}.out")

    def layer_norm(x, name):
        gamma = tensor(f"{name}.gamma", (1.0 + 0.1 * rng.standard_normal(hidden)).astype(F32))
        return node("LayerNormalization", [x, gamma, weight(f"{name}.beta", (hidden,), 0.02)], f"{name}.out",
                    axis=-1, epsilon=1e-12)

    head = hidden // heads
    split = tensor("split_heads", np.array([0, seq, heads, head], np.int64))  # 0: copy the batch dimension
    merge = tensor("merge_heads", np.array([0, seq, hidden], np.int64))
    scale = tensor("score_scale", np.array(1.0 / np.sqrt(head), F32))
    half, one, root2 = (tensor(n, np.array(v, F32)) for n, v in (("half", 0.5), ("one", 1.0), ("sqrt2", np.sqrt(2.0))))
    x = layer_norm("x", "embeddings.norm")
    for i in range(layers):
        p = f"layer{i}"
        q, k, v = (node("Transpose", [node("Reshape", [dense(x, hidden, hidden, f"{p}.{n}"), split], f"{p}.{n}.heads")],
                        f"{p}.{n}.t", perm=perm) for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]),
                                                                ("v", [0, 2, 1, 3])))
        scores = node("Mul", [node("MatMul", [q, k], f"{p}.qk"), scale], f"{p}.scores")
        probs = node("Softmax", [scores], f"{p}.probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"{p}.ctx")], f"{p}.ctx.t", perm=[0, 2, 1, 3])
        attn = dense(node("Reshape", [ctx, merge], f"{p}.ctx.merged"), hidden, hidden, f"{p}.attn_out")
        x = layer_norm(node("Add", [attn, x], f"{p}.res1"), f"{p}.norm1")
        h = dense(x, hidden, ffn, f"{p}.ffn_in")
        erf = node("Erf", [node("Div", [h, root2], f"{p}.gelu.div")], f"{p}.gelu.erf")
        g = node("Mul", [node("Mul", [h, node("Add", [erf, one], f"{p}.gelu.add")], f"{p}.gelu.mul"), half],
                 f"{p}.gelu")
        x = layer_norm(node("Add", [dense(g, ffn, hidden, f"{p}.ffn_out"), x], f"{p}.res2"), f"{p}.norm2")
    graph = helper.make_graph(nodes, "bert_2x128",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, hidden])],
                              initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dsopack-bench")
    proto.ir_version = min(proto.ir_version, 9)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


# ------------------------------------------------------------------ batch

def batched(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    return (batch, *shape[1:])


# ------------------------------------------------------------------ writers

def write_manifest(model: Model, batch: int, folder: str, backends: list[str], cflags: list[str]) -> str:
    """A YAML graph manifest + .npz of the model at `batch`; returns the manifest path."""
    import yaml

    npz = f"{model.name}.npz"
    if not os.path.exists(os.path.join(folder, npz)):
        np.savez(os.path.join(folder, npz), **model.weights)
    spec = {
        "name": model.name,
        "model": {"graph": {
            "inputs": {"x": {"shape": list(batched(model.input_shape, batch)), "dtype": "float32"}},
            "weights": npz,
            "nodes": model.nodes,
            "outputs": [model.output],
        }},
        "backends": backends,
        "target": {"triple": "native", "cflags": cflags},
    }
    path = os.path.join(folder, f"{model.name}_b{batch}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False, default_flow_style=None)
    return path


def write_onnx_manifest(onnx_path: str, name: str, folder: str, batch: int, backends: list[str],
                        cflags: list[str]) -> str:
    """A deployment manifest whose model is the ONNX file (DESIGN.md: model: {onnx: ...})."""
    import yaml

    spec = {"name": name, "model": {"onnx": os.path.basename(onnx_path)}, "backends": backends,
            "target": {"triple": "native", "cflags": cflags}}
    path = os.path.join(folder, f"{name}_b{batch}.onnx.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False, default_flow_style=None)
    return path


def to_onnx(model: Model, batch: int, path: str, opset: int = 17) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    for n in model.nodes:
        op, ins, out = n["op"], n["inputs"], n["output"]
        if op == "dense":
            nodes.append(helper.make_node("Gemm", ins, [out], transB=1))
        elif op == "relu":
            nodes.append(helper.make_node("Relu", ins, [out]))
        elif op == "softmax":
            nodes.append(helper.make_node("Softmax", ins, [out], axis=n.get("axis", -1)))
        elif op == "add":
            nodes.append(helper.make_node("Add", ins, [out]))
        elif op == "conv2d":
            w = model.weights[ins[1]]
            nodes.append(helper.make_node("Conv", ins, [out], kernel_shape=list(w.shape[2:]),
                                          strides=n.get("strides", [1, 1]), pads=n.get("pads", [0, 0, 0, 0])))
        elif op in ("maxpool2d", "avgpool2d"):
            nodes.append(helper.make_node("MaxPool" if op == "maxpool2d" else "AveragePool", ins, [out],
                                          kernel_shape=n["kernel"], strides=n.get("strides", n["kernel"]),
                                          pads=n.get("pads", [0, 0, 0, 0])))
        elif op == "global_avgpool":
            nodes.append(helper.make_node("GlobalAveragePool", ins, [out]))
        elif op == "flatten":
            nodes.append(helper.make_node("Flatten", ins, [out], axis=n.get("axis", 1)))
        elif op == "batchnorm":
            nodes.append(helper.make_node("BatchNormalization", ins, [out], epsilon=n.get("epsilon", 1e-5)))
        else:
            raise ValueError(f"no ONNX mapping for {op}")
    inits = [numpy_helper.from_array(a, name) for name, a in model.weights.items()]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(batched(model.input_shape, batch)))
    out_shape = numpy_forward(model)(np.zeros(batched(model.input_shape, batch), F32)).shape
    y = helper.make_tensor_value_info(model.output, TensorProto.FLOAT, list(out_shape))
    graph = helper.make_graph(nodes, model.name, [x], [y], initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="dsopack-bench")
    proto.ir_version = min(proto.ir_version, 9)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def rebatch_onnx(src: str, batch: int | str, dst: str) -> None:
    """An ONNX file with the first dimension of every graph input set to `batch` (shapes re-inferred), so
    that a file with a symbolic batch dimension gets a static shape; a name for `batch` makes it symbolic
    (a dynamic batch) instead."""
    import onnx

    proto = onnx.load(src)
    init_names = {i.name for i in proto.graph.initializer}
    for inp in proto.graph.input:
        if inp.name in init_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and isinstance(batch, str):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = batch
        elif dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    del proto.graph.value_info[:]
    for out in proto.graph.output:
        out.type.tensor_type.ClearField("shape")
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.save(proto, dst)


def write_weights_raw(model: Model, path: str) -> None:
    """All weights back to back (the page-cache read floor reads this through mmap)."""
    with open(path, "wb") as f:
        for a in model.weights.values():
            f.write(np.ascontiguousarray(a).tobytes())


# ------------------------------------------------------------------ NumPy forward (the floor)

def _conv2d(x, w, b, strides, pads):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    sh, sw = strides
    if any(pads):
        x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    # win: n, c, oh, ow, kh, kw -> n, oh, ow, (c kh kw) @ (c kh kw), o
    oh, ow = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    y = cols @ w.reshape(o, -1).T
    if b is not None:
        y += b
    return np.ascontiguousarray(y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))


def _pool(x, kernel, strides, kind):
    kh, kw = kernel
    sh, sw = strides
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return win.max(axis=(4, 5)) if kind == "max" else win.mean(axis=(4, 5), dtype=F32)


def numpy_forward(model: Model):
    """A function x -> output computing the model with NumPy (weights as float32 arrays in memory)."""
    W = model.weights
    nodes = model.nodes

    def forward(x: np.ndarray) -> np.ndarray:
        env = {"x": x}
        for n in nodes:
            op, ins = n["op"], n["inputs"]
            a = env[ins[0]]
            if op == "dense":
                y = a @ W[ins[1]].T
                if len(ins) > 2:
                    y += W[ins[2]]
            elif op == "relu":
                y = np.maximum(a, 0)
            elif op == "softmax":
                e = np.exp(a - a.max(axis=n.get("axis", -1), keepdims=True))
                y = e / e.sum(axis=n.get("axis", -1), keepdims=True)
            elif op == "add":
                y = a + (W[ins[1]] if ins[1] in W else env[ins[1]])
            elif op == "conv2d":
                y = _conv2d(a, W[ins[1]], W[ins[2]] if len(ins) > 2 else None, n.get("strides", [1, 1]),
                            n.get("pads", [0, 0, 0, 0]))
            elif op == "maxpool2d":
                y = _pool(a, n["kernel"], n.get("strides", n["kernel"]), "max")
            elif op == "avgpool2d":
                y = _pool(a, n["kernel"], n.get("strides", n["kernel"]), "avg")
            elif op == "global_avgpool":
                y = a.mean(axis=(2, 3), keepdims=True, dtype=F32)
            elif op == "flatten":
                ax = n.get("axis", 1)
                y = a.reshape(int(np.prod(a.shape[:ax])), -1)
            elif op == "batchnorm":
                s, bb, mu, var = (W[i] for i in ins[1:5])
                k = (s / np.sqrt(var + n.get("epsilon", 1e-5))).astype(F32)
                y = a * k[None, :, None, None] + (bb - mu * k)[None, :, None, None]
            else:
                raise ValueError(op)
            env[n["output"]] = y
        return env[model.output]

    return forward


def make_input(model_name: str, shape: tuple[int, ...]) -> np.ndarray:
    seed = sum(model_name.encode()) * 1000 + shape[0]
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)
