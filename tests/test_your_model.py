"""Your model: a Flax Linen module given by import path (or registered) runs an experiment."""

from __future__ import annotations

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
