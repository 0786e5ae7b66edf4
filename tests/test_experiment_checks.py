"""Every experiment refuses a bad field with one ValueError naming it before anything is written
(``common.begin`` checks the experiment's ``engine_runs`` before claiming the workdir), and a
sweep refuses a bad point before its folder exists."""

from __future__ import annotations

import functools
import importlib

import pytest

from experiments import common
from sgd_phases import sweep

# (experiment, config arg, field path, bad value, what the error names)
CASES = [
    ("linear_phase", "quick", "seeds_per_chunk", -1, r"config\.seeds_per_chunk"),
    ("low_order_statistics", "quick", "num_seeds", 0, r"config\.num_seeds"),
    ("sequence_phases", "icl_markov,quick", "seed_lanes", -1, r"config\.seed_lanes"),
    ("synthetic_ball", "quick", "snapshot_steps", (-5, 10), r"config\.snapshot_steps"),
    ("complexity_ladder", "quick", "k", 9, r"config\.k\b"),
    ("complexity_ladder", "quick", "reference_batch_size", 0,  # every rung's: the first named
     r"config\.references\.\w+\.batch_size"),
    ("retention", "quick", "noise_rates", (0.1, 0.6), r"config\.noise_rates"),
    ("retention", "quick", "batch_size", 0, r"config\.batch_size"),
    ("retention_map", "quick", "map_values", (), r"config\.map_values"),
    ("retention_map", "quick", "eval.num_points", 1, r"config\.eval\.num_points"),
    ("kernel_regime", "quick", "optimizer.weight_decay", 0.1, r"optimizer\.weight_decay"),
    ("theorem1", "quick", "noise_rates", (), r"config\.noise_rates"),
    ("theorem1", "quick", "optimizer.learning_rate", -1.0, r"config\.optimizer\.learning_rate"),
    ("mi_vs_accuracy", "quick", "num_examples", 3, r"config\.num_examples"),
]


def _set(config, path: str, value) -> None:
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


@pytest.mark.parametrize("name,arg,path,value,names", CASES,
                         ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_a_bad_field_is_refused_before_the_workdir_exists(name, arg, path, value, names, tmp_path):
  module = importlib.import_module(f"experiments.{name}")
  config = module.get_config(arg)
  _set(config, path, value)
  wd = tmp_path / "run"
  with pytest.raises(ValueError, match=names):
    module.run(config, str(wd))
  assert not wd.exists()  # nothing claimed, nothing written


def test_a_good_config_passes_every_experiments_check():
  """The checks refuse only what is wrong: every experiment's own quick config passes, and
  the runs they list are the ones the experiment trains (one per width, noise rate, ...)."""
  counts = {}
  for name in sorted({c[0] for c in CASES}):
    module = importlib.import_module(f"experiments.{name}")
    config = module.get_config("quick")
    common.check(config, getattr(module, "engine_runs", common.engine_runs))
    counts[name] = len(getattr(module, "engine_runs", common.engine_runs)(config))
  quick = {n: importlib.import_module(f"experiments.{n}").get_config("quick")
           for n in ("kernel_regime", "retention", "retention_map", "theorem1")}
  assert counts["kernel_regime"] == len(quick["kernel_regime"].widths)
  assert counts["retention"] == len(quick["retention"].noise_rates)
  assert counts["retention_map"] == (len(quick["retention_map"].map_values)
                                     * len(quick["retention_map"].noise_rates))
  assert counts["theorem1"] == len(quick["theorem1"].noise_rates) * len(quick["theorem1"].inits)
  assert counts["mi_vs_accuracy"] == 0 and counts["linear_phase"] == 1


def test_a_sweep_refuses_a_bad_point_before_anything_is_written(tmp_path):
  module = importlib.import_module("experiments.linear_phase")
  config = module.get_config("quick")
  grid = sweep.make_grid(config, {"batch_size": [32, 0]})
  root = tmp_path / "sweep"
  check = functools.partial(common.check, runs=common.engine_runs)
  with pytest.raises(ValueError, match=r"sweep point batch_size=0: config\.batch_size"):
    sweep.run_sweep(module, config, grid, root, vectorize="off", check=check)
  assert not root.exists()
