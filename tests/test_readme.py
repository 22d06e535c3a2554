"""The README's Python example runs as written and prints what it says."""

import os
import re
import subprocess
import sys

from packager.build import build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_example_runs(tmp_path):
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert 'loader.load("digits.so")' in block
    build(os.path.join(ROOT, "manifests", "digits_mlp.yaml"), str(tmp_path / "digits.so"), quiet=True)
    os.symlink(os.path.join(ROOT, "manifests"), tmp_path / "manifests")
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    promised = re.findall(r"print\(.*\)\s+# (.*)", block)  # what each print's comment says it shows
    assert printed == promised == ["[x: float32[1, 64]] [probs: float32[1, 10]]", "7"]
