"""docs/backends.md: its ```sh blocks, run in order as one script in a temporary directory.

The commands see DSOPACK_ROOT (this repository) and a PATH with the venv's
python/dsopack and runtime_c/build's dpk-run, as a newcomer's shell would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "backends.md")


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_doc_has_shell_steps():
    blocks = sh_blocks(open(DOC, encoding="utf-8").read())
    assert len(blocks) >= 3 and any("dpk-run" in b for b in blocks) and any("dsopack build" in b for b in blocks)


def test_the_shell_steps_run(dpk_build, tmp_path):
    script = "set -eu\n" + "\n".join(sh_blocks(open(DOC, encoding="utf-8").read()))
    env = dict(os.environ)
    env["DSOPACK_ROOT"] = ROOT
    env["DSOPACK_CACHE"] = str(tmp_path / "cache")
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), dpk_build, env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dsopack_lut.backend:LutBackend" in result.stdout
    assert "tanh_1 -> lut" in result.stdout
    assert "carried: [lut]" in result.stdout
    assert "lut matches numpy" in result.stdout
