"""Your model: a Flax Linen module given by import path (or registered) runs an experiment."""

from __future__ import annotations

import json
import re
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

from experiments import linear_phase
from sgd_phases import analysis, config_lib, models

_MODULE = '''
import flax.linen as nn


class TwoLayer(nn.Module):
  """A user's network: [B, ...] -> [B, num_classes] logits."""
  num_classes: int
  hidden: int = 16

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes)(nn.tanh(nn.Dense(self.hidden)(x)))
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
  (tmp_path / "my_nets.py").write_text(textwrap.dedent(_MODULE))
  monkeypatch.syspath_prepend(str(tmp_path))
  yield "my_nets:TwoLayer"
  models.MODELS.pop("my_nets:TwoLayer", None)
  sys.modules.pop("my_nets", None)


def test_a_model_given_by_import_path_runs_linear_phase_quick(user_module, tmp_path):
  c = linear_phase.get_config("quick")
  c.model = user_module
  c.model_kwargs = ml_collections.ConfigDict({"hidden": 24}, type_safe=False)
  c.progress = False
  s = linear_phase.run(c, str(tmp_path / "run"))
  assert s["model"] == user_module and s["identity"]["config"]["model"] == user_module
  a = analysis.load(tmp_path / "run").arrays
  assert a["predictions"].shape[:2] == (c.num_seeds, len(a["steps"]))
  assert s["test_acc_end"]["mean"] > 0.6  # it learned the task
  assert models.model_kwargs(user_module) == ("hidden",)


def test_bad_models_are_refused_naming_the_field(user_module):
  c = config_lib.base_config()
  c.model = "my_nets:NoSuchClass"
  with pytest.raises(ValueError, match=r"^config\.model: 'my_nets:NoSuchClass'"):
    config_lib.validate(c)
  c.model = user_module
  c.model_kwargs = ml_collections.ConfigDict({"widht": 3}, type_safe=False)
  with pytest.raises(ValueError, match=r"^config\.model_kwargs\b.*\bwidht\b"):
    config_lib.validate_for_data(c, (10, 2), 2)
  with pytest.raises(ValueError, match=r"already registered"):
    models.register("mlp", models.MODELS["mlp"])
  with pytest.raises(ValueError, match=r"not a Flax Linen module"):
    models.register("fn", lambda num_classes: None)


def test_register_a_model_for_code(user_module):
  import importlib
  cls = importlib.import_module("my_nets").TwoLayer
  models.register("two_layer", cls)
  try:
    net = models.get_model("two_layer", 3, hidden=5)
    x = np.zeros((4, 2), np.float32)
    import jax
    out = net.apply(net.init(jax.random.key(0), x), x)
    assert out.shape == (4, 3)
  finally:
    models.MODELS.pop("two_layer", None)


# ---------------------------------------------------------------------- a model's identity
_NETS = textwrap.dedent(_MODULE).replace(  # the activation comes from a helper module
    "import flax.linen as nn\n", "import flax.linen as nn\nfrom my_pkg import blocks\n").replace(
        "nn.tanh(", "blocks.act(")


def _write_pkg(root, act: str = "tanh", dense: str = "nn.Dense") -> None:
  (root / "my_pkg").mkdir(exist_ok=True)
  (root / "my_pkg" / "__init__.py").write_text("")
  (root / "my_pkg" / "blocks.py").write_text(f"import flax.linen as nn\n\nact = nn.{act}\n")
  (root / "my_pkg" / "nets.py").write_text(_NETS.replace("nn.Dense(self.num", f"{dense}(self.num"))


def _forget_pkg() -> None:
  """As a new process would: the package is imported again from its files."""
  import importlib
  for m in [m for m in sys.modules if m == "my_pkg" or m.startswith("my_pkg.")]:
    del sys.modules[m]
  importlib.invalidate_caches()


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no stale .pyc after an edit
  _write_pkg(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  yield tmp_path
  models.MODELS.pop("my_pkg.nets:TwoLayer", None)
  _forget_pkg()


def test_an_edited_model_is_never_answered_with_the_old_runs_results(user_pkg, tmp_path):
  """Edit the activation in a helper module the model imports (the parameter shapes stay):
  the same workdir refuses the old run, naming model_fingerprint, instead of returning it."""
  from sgd_phases import train_lib
  from sgd_phases import workdir as workdir_lib
  c = config_lib.base_config("ball2d_sinusoid", "my_pkg.nets:TwoLayer")
  c.dataset.n_train, c.dataset.n_test = 64, 64
  c.num_seeds, c.num_steps, c.batch_size, c.eval.num_points = 1, 8, 16, 2
  c.t0.reference, c.null.num_permutations, c.progress = "", 0, False
  c.seed_strategy = "vmap"
  wd = tmp_path / "run"
  train_lib.train(c, wd)
  stored = json.loads((wd / "config.json").read_text())["model_fingerprint"]
  assert stored == models.fingerprint("my_pkg.nets:TwoLayer")
  _write_pkg(user_pkg, act="relu")  # same shapes, another function
  _forget_pkg()
  with pytest.raises(ValueError, match=r"model_fingerprint: '[0-9a-f]{16}' -> '[0-9a-f]{16}'"):
    train_lib.train(c, wd)
  edited = workdir_lib.run_identity(c)["model_fingerprint"]
  assert edited != stored
  _write_pkg(user_pkg, act="tanh", dense="nn.DenseGeneral")  # the class's own file
  _forget_pkg()
  assert workdir_lib.run_identity(c)["model_fingerprint"] not in (stored, edited)
  _write_pkg(user_pkg)  # back as it was: the same model again, the finished run returned
  _forget_pkg()
  assert workdir_lib.run_identity(c)["model_fingerprint"] == stored
  assert train_lib.train(c, wd).arrays["predictions"].shape[0] == 1


_CELL = textwrap.dedent(_MODULE).replace("nn.tanh(", "nn.ACT(")


def test_a_re_run_notebook_cell_re_registers_its_model(monkeypatch, caplog):
  """A class typed into an interactive session (a module without a file): the same definition
  registered again passes silently; an edited one replaces it, with a warning, and its
  fingerprint differs though its parameter shapes do not."""
  import types
  cell = types.ModuleType("notebook_cell")  # no __file__, like a notebook's __main__
  monkeypatch.setitem(sys.modules, "notebook_cell", cell)

  def run_cell(act: str) -> type:
    exec(_CELL.replace("ACT", act), cell.__dict__)  # noqa: S102  (a notebook cell, run)
    return cell.TwoLayer

  try:
    models.register("cell_net", run_cell("relu"))
    first = models.fingerprint("cell_net")
    with caplog.at_level("WARNING"):
      models.register("cell_net", run_cell("relu"))  # the cell re-run unchanged
    assert models.fingerprint("cell_net") == first and not caplog.records
    with caplog.at_level("WARNING"):
      models.register("cell_net", run_cell("gelu"))  # the cell edited and re-run
    assert models.fingerprint("cell_net") != first
    assert "'cell_net' now names another definition" in caplog.text
    assert models.MODELS["cell_net"] is cell.TwoLayer
    assert models.fingerprint("mlp") is None  # built-ins: this package's code, by name
  finally:
    models.MODELS.pop("cell_net", None)


def test_an_import_path_model_that_fails_is_reported_with_its_real_cause(tmp_path, monkeypatch):
  (tmp_path / "no_k.py").write_text(textwrap.dedent(_MODULE).replace("  num_classes: int\n", ""))
  (tmp_path / "broken.py").write_text("import flax.linen as nn\n\nundefined_helper()\n")
  (tmp_path / "needs.py").write_text("import not_an_installed_package\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  c = config_lib.base_config()
  try:
    for model, cause in [
        ("no_k:TwoLayer", r"TwoLayer has no num_classes field"),
        ("broken:Net", r"importing broken failed: NameError: name 'undefined_helper'"),
        ("needs:Net", r"importing needs failed: ModuleNotFoundError: .*not_an_installed_package"),
        ("no_such_pkg.nets:Net", r"no module named 'no_such_pkg'"),
        ("my_nets_absent:Net", r"no module named 'my_nets_absent'")]:
      c.model = model
      with pytest.raises(ValueError, match=rf"^config\.model: '?{re.escape(model)}'?: .*{cause}"):
        config_lib.validate(c)
  finally:
    for m in ("no_k", "broken", "needs"):
      sys.modules.pop(m, None)
