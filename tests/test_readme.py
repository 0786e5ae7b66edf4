"""The README's "Your model, your data, your predictions" snippets run as written.

Python blocks run in order in one namespace, in a temporary folder; every ``python -m``
command of a bash block runs there as a subprocess. A block whose first line says it is
"not run by the tests" is only compiled (Python) or checked to name a real module (bash).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your model, your data, your predictions"
NOT_RUN = "not run by the tests"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.M | re.S)


def section_blocks() -> list[tuple[str, str]]:
  text = (ROOT / "README.md").read_text()
  start = text.index(SECTION)
  end = text.index("\n## ", start + len(SECTION))
  return BLOCK.findall(text[start:end])


def _commands(block: str) -> list[list[str]]:
  """The commands of a bash block (continuation lines joined, comments dropped)."""
  joined = re.sub(r"\\\n\s*", " ", block)
  lines = [ln.split("  #")[0].strip() for ln in joined.splitlines()]
  return [shlex.split(ln) for ln in lines if ln and not ln.startswith("#")]


def test_the_section_has_runnable_python_and_commands():
  blocks = section_blocks()
  kinds = [(lang, NOT_RUN in body.splitlines()[0]) for lang, body in blocks]
  assert ("python", False) in kinds and ("bash", False) in kinds
  assert sum(skip for _, skip in kinds) == 2  # the two marked blocks, nothing else skipped


def test_snippets_run_as_written(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # the README's commands run from the repository root: its
  (tmp_path / "experiments").symlink_to(ROOT / "experiments")  # config paths resolve here too
  monkeypatch.syspath_prepend(str(ROOT))
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
  module = types.ModuleType("readme_snippets")  # a real module: the snippets define dataclasses
  monkeypatch.setitem(sys.modules, module.__name__, module)
  namespace = module.__dict__
  for lang, body in section_blocks():
    skip = NOT_RUN in body.splitlines()[0]
    if lang == "python":
      code = compile(body, "README.md", "exec")
      if not skip:
        exec(code, namespace)
      continue
    for cmd in _commands(body):
      assert cmd[:2] == ["python", "-m"], cmd
      assert (ROOT / f"{cmd[2].replace('.', '/')}.py").exists(), cmd[2]
      if skip:
        continue
      cmd = [sys.executable, *cmd[1:]]
      if cmd[2].startswith("experiments."):
        cmd.append("--config.progress=False")
      out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
      assert out.returncode == 0, (cmd, out.stderr[-3000:])
  # what the snippets say they produce
  assert namespace["summary"]["dataset"] == "arrays"
  assert namespace["summary"]["test_acc_end"]["mean"] > 0.8
  npz = json.loads((tmp_path / "runs/my_npz/summary.json").read_text())
  assert npz["identity"]["config"]["dataset"]["fingerprint"] == namespace["data"].fingerprint
  scored = json.loads((tmp_path / "runs/scored/summary.json").read_text())
  assert (tmp_path / "runs/scored/figures/score_linear.png").exists()
  from sgd_phases import results
  r = results.load(tmp_path / "runs/scored")
  mu = r.measures("linear")["mu"]
  assert mu.shape == (4, 7) and np.abs(mu[:, 0]).max() < 0.01  # F_0 is noise: μ ≈ 0
  assert mu[:, 4].min() > 0.25  # at step 300 F is L: μ = I(L;Y) = 1 - H(0.8) ≈ 0.28 bits
  assert "null/linear/mu" in r.arrays and scored["num_seeds"] == 4
