"""The Colab notebooks: committed without outputs, valid parameters, and they run top to bottom.

Each notebook is executed with the venv's ``python3`` kernel (nbclient) on CPU, with
``SGD_PHASES_NOTEBOOK_QUICK=1`` (read by its parameter cell: quick settings), in a temporary
folder, so the notebooks cannot drift from the library.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
NAMES = ["00_quickstart.ipynb", "01_linear_phase.ipynb",
         "02_complexity_ladder_and_retention.ipynb", "04_bring_your_own.ipynb"]
FIGURES = {"00_quickstart.ipynb": 2, "01_linear_phase.ipynb": 1,
           "02_complexity_ladder_and_retention.ipynb": 2,
           "04_bring_your_own.ipynb": 2}  # figures each notebook shows
PARAM = re.compile(r"^(\w+) = (.+?)\s+# @param (.+)$", re.M)


def _read(path: Path) -> nbformat.NotebookNode:
  return nbformat.read(path, as_version=4)


def _param_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
  cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(cells) == 1, "one code cell tagged 'parameters'"
  return cells[0]


def test_all_notebooks_present():
  assert [p.name for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
  nb = _read(path)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
  assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_repository_url_is_pyprojects(path):
  """Badge and install cell point at pyproject.toml's [project.urls] Repository (one place;
  ``python colab/set_repo_url.py`` copies it), not a placeholder."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("set_repo_url", ROOT / "colab/set_repo_url.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  url = module.repository_url()
  nb = _read(path)
  slug = url.removeprefix("https://github.com/")
  assert f"colab.research.google.com/github/{slug}/blob/main/colab/{path.name})" in (
      nb.cells[0].source)
  assert f'REPO_URL = "{url}"' in nb.cells[1].source
  assert "OWNER" not in path.read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_structure(path):
  nb = _read(path)
  first = nb.cells[0]
  assert first.cell_type == "markdown" and first.source.startswith("[![Open In Colab]")
  assert f"/colab/{path.name})" in first.source
  code = [c.source for c in nb.cells if c.cell_type == "code"]
  assert "REPO_URL" in code[0] and 'find_spec("sgd_phases")' in code[0] and "%pip" in code[0]
  assert "jax.default_backend()" in code[1] and "jax.devices()" in code[1]
  assert PARAM.search(_param_cell(nb).source)


def _bad_value(rest: str, default: str) -> str:
  if rest.startswith("["):
    return '"no_such_task"'
  if "boolean" in rest:
    return '"yes"'
  if "integer" in rest:
    return "-1"
  return '"0.7,x"' if default == '""' else '""'


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_validated(path, monkeypatch):
  monkeypatch.delenv("SGD_PHASES_NOTEBOOK_QUICK", raising=False)
  src = _param_cell(_read(path)).source
  exec(compile(src, path.name, "exec"), {})  # the committed defaults are valid
  params = PARAM.findall(src)
  assert params
  for name, default, rest in params:
    if rest.startswith("["):  # dropdowns list exactly the experiment's tasks
      ns: dict = {}
      exec(compile(src, path.name, "exec"), ns)
      module = {"TASK": "linear_phase", "LADDER_TASK": "complexity_ladder",
                "RETENTION_TASK": "retention"}[name]
      assert eval(rest) == list(ns[module].TASKS), name
    bad = src.replace(f"{name} = {default}", f"{name} = {_bad_value(rest, default)}", 1)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
      exec(compile(bad, path.name, "exec"), {})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, tmp_path, monkeypatch):
  from nbclient import NotebookClient

  monkeypatch.setenv("SGD_PHASES_NOTEBOOK_QUICK", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  nb = _read(path)
  NotebookClient(nb, kernel_name="python3", timeout=300,
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "skipping the install" in text and "backend 'cpu'" in text
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) == FIGURES[path.name]
  assert any(tmp_path.glob("runs/**/summary.json"))
