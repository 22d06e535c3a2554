"""How the golden files in tests/golden/ were made (format 1.0, x86-64).

    python tests/golden/make_golden.py      # writes tests/golden/*.so, *.input.npy, *.output.npy

Do NOT rerun this to make tests/test_golden.py pass: the files are committed so
that CI checks that files built by an OLDER dsopack keep loading and giving the
same outputs. Regenerate only to add a new golden file (keep the old ones), and
say so in the commit.

Each example is built from manifests/ with `dsopack build`; its input is
manifests/digits_sample.npy for digits_mlp and a seeded normal array for the
others; its expected output is what the file computed when it was made
(tests/test_examples.py checks the same builds against NumPy references).
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

import loader  # noqa: E402
from packager.build import build  # noqa: E402

EXAMPLES = ("digits_mlp", "mixed")


def main() -> int:
    for name in EXAMPLES:
        so = os.path.join(HERE, f"{name}.so")
        build(os.path.join(ROOT, "manifests", f"{name}.yaml"), so, quiet=True)
        with loader.load(so, verify=True) as model:
            if name == "digits_mlp":
                x = np.load(os.path.join(ROOT, "manifests", "digits_sample.npy"))
            else:
                info = model.inputs[0]
                x = np.random.default_rng(0).standard_normal(info.shape).astype(np.float32)
            outputs = model.run(**{model.inputs[0].name: x})
        np.save(os.path.join(HERE, f"{name}.input.npy"), x)
        for key, value in outputs.items():
            np.save(os.path.join(HERE, f"{name}.output.{key}.npy"), value)
        print(f"{name}: {os.path.getsize(so)} bytes, outputs {sorted(outputs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
