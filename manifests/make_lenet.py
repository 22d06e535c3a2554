"""Write lenet.npz: seeded random weights for the lenet example (LeNet-5 shape).

The example checks numerics (outputs against NumPy within 1e-4), not accuracy,
so the weights are random but fixed: He-scaled normals from seed 0.

    python manifests/make_lenet.py
"""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = {
    "conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,),
    "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
    "fc1.weight": (120, 400), "fc1.bias": (120,),
    "fc2.weight": (84, 120), "fc2.bias": (84,),
    "fc3.weight": (10, 84), "fc3.bias": (10,),
}


def write_seeded_weights(filename: str, shapes: dict) -> None:
    """He-scaled normals (biases 0.1 * normal) from seed 0, in `shapes` order, to manifests/FILENAME."""
    rng = np.random.default_rng(0)
    weights = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.1
        weights[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    np.savez(os.path.join(HERE, filename), **weights)
    print(f"wrote {filename} ({sum(w.nbytes for w in weights.values())} bytes of weights)")


def main() -> None:
    write_seeded_weights("lenet.npz", SHAPES)


if __name__ == "__main__":
    main()
