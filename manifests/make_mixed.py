"""Write mixed.npz: seeded random weights for the mixed example (a small CNN).

The example checks numerics (outputs against NumPy within 1e-4), so the weights
are random but fixed: He-scaled normals from seed 0.

    python manifests/make_mixed.py
"""

from make_lenet import write_seeded_weights

SHAPES = {
    "conv1.weight": (8, 3, 3, 3), "conv1.bias": (8,),
    "conv2.weight": (16, 4, 3, 3), "conv2.bias": (16,),  # groups 2
    "conv3.weight": (24, 16, 1, 1), "conv3.bias": (24,),  # pointwise: no im2col
    "fc1.weight": (32, 24), "fc1.bias": (32,),
    "fc2.weight": (10, 32), "fc2.bias": (10,),
}


def main() -> None:
    write_seeded_weights("mixed.npz", SHAPES)


if __name__ == "__main__":
    main()
