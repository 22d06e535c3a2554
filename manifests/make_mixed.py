"""Write mixed.npz: seeded random weights for the mixed example (a small CNN).

The example checks numerics (outputs against NumPy within 1e-4), so the weights
are random but fixed: He-scaled normals from seed 0.

    python manifests/make_mixed.py
"""

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = {
    "conv1.weight": (8, 3, 3, 3), "conv1.bias": (8,),
    "conv2.weight": (16, 4, 3, 3), "conv2.bias": (16,),  # groups 2
    "conv3.weight": (24, 16, 1, 1), "conv3.bias": (24,),  # pointwise: no im2col
    "fc1.weight": (32, 24), "fc1.bias": (32,),
    "fc2.weight": (10, 32), "fc2.bias": (10,),
}


def main() -> None:
    rng = np.random.default_rng(0)
    weights = {}
    for name, shape in SHAPES.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        scale = np.sqrt(2.0 / fan_in) if len(shape) > 1 else 0.1
        weights[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    np.savez(os.path.join(HERE, "mixed.npz"), **weights)
    print(f"wrote mixed.npz ({sum(w.nbytes for w in weights.values())} bytes of weights)")


if __name__ == "__main__":
    main()
