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


def test_every_file_the_layout_names_exists():
    """The Layout's stage lists name real modules: a moved or renamed one fails here, not in a reader's hands."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    layout = readme[readme.index("## Layout"):readme.index("## Dependencies")]
    named = set(re.findall(r"\b(packager/[\w/]+(?:\.py|/))", layout))
    named |= {os.path.join("runtime_c", "src", f) for f in re.findall(r"(?<![\w/-])(\w+\.c)\b", layout)
              if f != "npy.c"}  # tools/npy.c
    missing = sorted(p for p in named if not os.path.exists(os.path.join(ROOT, p)))
    assert len(named) > 25 and not missing, missing
