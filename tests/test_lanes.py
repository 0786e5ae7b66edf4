"""Seed lanes (sgd_phases.lanes): seeds split into groups trained on concurrent CPU threads give
the same bits as one program over every seed, in the same seed order."""

from __future__ import annotations

import numpy as np
import pytest

from sgd_phases import config_lib, datasets, engine, lanes


def test_bounds_are_contiguous_and_balanced():
  assert lanes.bounds(5, 2) == ((0, 3), (3, 5))
  assert lanes.bounds(16, 2) == ((0, 8), (8, 16))
  assert lanes.bounds(3, 3) == ((0, 1), (1, 2), (2, 3))
  assert lanes.bounds(4, 1) == ((0, 4),)


def test_lanes_only_where_they_change_nothing():
  cores = lanes.usable_cores()
  assert lanes.resolve(0, "map", 64, None) == min(64, cores)
  assert lanes.resolve(3, "map", 2, None) == 2      # capped at the seeds
  assert lanes.resolve(1, "map", 8, None) == 1      # off
  assert lanes.resolve(4, "vmap", 8, None) == 1     # one batched computation: never split
  assert lanes.resolve(4, "unroll", 8, None) == 1


def _run(tr, data, labels, ids, at, n_lanes):
  out = engine.run_seeds(tr, data, labels, engine.SeedSet(0, ids), at,
                         engine.RunOptions(strategy="map", lanes=n_lanes,
                                           train_predictions="final", probabilities="float32"))
  return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("task", ["icl_markov", "ball2d"])
def test_lanes_give_the_bits_of_one_program(task):
  """3 seeds on 1, 2 (sizes 2 + 1: two compiled lane sizes) and 3 lanes: every recorded array
  (predictions, probabilities, metrics, final train predictions) is bit-identical."""
  opt = config_lib.optimizer_config("adam", learning_rate=1e-2)
  if task == "icl_markov":  # sampled on device, inside the segment
    ds = datasets.get_dataset({"name": "icl_markov", "length": 12, "train_size": 32,
                               "test_size": 8})
    tr = engine.make_trainer("transformer", {"num_layers": 1, "d_model": 8, "mlp": False,
                                             "layer_norm": False, "max_len": 12},
                             opt, "cross_entropy", 8, 30, 3,
                             sampler=ds.meta["train_sampler"])
  else:  # a stored training set read through each seed's own example order
    ds = datasets.get_dataset({"name": "ball2d_sinusoid", "n_train": 256, "n_test": 64})
    tr = engine.make_trainer("mlp", {"width": 16, "depth": 2}, opt, "cross_entropy", 16, 30, 2)
  data, at = engine.EvalData.create(ds, 64), np.array([0, 3, 11, 30])
  ref = _run(tr, data, ds.y_train, np.arange(3), at, 1)
  assert ref["predictions"].shape[:2] == (3, 4)
  assert len({ref["predictions"][s, -1].tobytes() for s in range(3)}) == 3  # seeds differ
  for n in (2, 3):
    out = _run(tr, data, ds.y_train, np.arange(3), at, n)
    assert out.keys() == ref.keys()
    for k in ref:
      np.testing.assert_array_equal(out[k], ref[k], err_msg=f"{k}, {n} lanes")


def test_seed_lanes_is_a_validated_config_field():
  c = config_lib.base_config()
  assert c.seed_lanes == 0
  c.seed_lanes = -1
  with pytest.raises(ValueError, match="seed_lanes"):
    config_lib.validate(c)
