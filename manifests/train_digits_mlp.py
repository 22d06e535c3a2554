"""Train the digits_mlp example on scikit-learn's bundled 8x8 digits set.

Writes digits_mlp.npz (the weights digits_mlp.yaml reads) and prints the test
accuracy the packaged model must reproduce. Deterministic: fixed split and seed.

    python manifests/train_digits_mlp.py
"""

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
PIXEL_SCALE = 1.0 / 16.0  # digits pixels are 0..16; the model scales them itself
SPLIT_SEED = 0


def split():
    """The train/test split the example and its test share."""
    x, y = load_digits(return_X_y=True)
    return train_test_split(x.astype(np.float32), y, test_size=0.2, random_state=SPLIT_SEED, stratify=y)


def main() -> None:
    x_train, x_test, y_train, y_test = split()
    clf = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", max_iter=400, random_state=0)
    clf.fit(x_train * PIXEL_SCALE, y_train)
    accuracy = clf.score(x_test * PIXEL_SCALE, y_test)
    # sklearn stores W as [in, out]; dense takes [out, in].
    weights = {
        "pixel_scale": np.array([PIXEL_SCALE], np.float32),
        "fc1.weight": clf.coefs_[0].T.astype(np.float32),
        "fc1.bias": clf.intercepts_[0].astype(np.float32),
        "fc2.weight": clf.coefs_[1].T.astype(np.float32),
        "fc2.bias": clf.intercepts_[1].astype(np.float32),
    }
    np.savez(os.path.join(HERE, "digits_mlp.npz"), **weights)
    print(f"test accuracy {accuracy:.4f} on {len(y_test)} held-out digits; wrote digits_mlp.npz")


if __name__ == "__main__":
    main()
