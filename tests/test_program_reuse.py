"""A second run in the same process reuses the compiled programs of an equal first one (a
sweep's cells, a notebook, a rerun), and never those of a run that trains differently."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest

from sgd_phases import config_lib, datasets, engine, programs

# an executable made: compiled by XLA, or read from the persistent compilation cache (which
# tests/conftest.py turns on for the session)
MADE = ("/jax/core/compile/backend_compile_duration",
        "/jax/compilation_cache/cache_retrieval_time_sec")


@pytest.fixture
def compilations():
  """A list of the executables made (compiled or read from disk) while the test runs."""
  seen: list[str] = []

  def listen(event: str, _secs: float, **_kw) -> None:
    if event in MADE:
      seen.append(event)

  jax.monitoring.register_event_duration_secs_listener(listen)
  yield seen
  jax.monitoring.unregister_event_duration_listener(listen)


def _source(seed: int) -> datasets.Dataset:
  return datasets.get_dataset({"name": "markov_source", "k": 3, "order": 2, "length": 12,
                               "train_size": 32, "test_size": 8, "seed": seed})


def _trainer(ds, lr=1e-2):
  return engine.make_trainer("transformer", {"num_layers": 1, "d_model": 8, "max_len": 12},
                             config_lib.optimizer_config("adam", learning_rate=lr),
                             "cross_entropy", 8, 20, 3, sampler=ds.meta["train_sampler"])


def _run(tr, ds):
  out = engine.run_seeds(tr, engine.EvalData.create(ds, 32), ds.y_train,
                         engine.SeedSet(0, np.arange(2)), np.array([0, 7, 20]),
                         engine.RunOptions(strategy="map"))
  return np.asarray(out["predictions"])


def test_equal_trainers_share_programs_and_different_ones_do_not():
  ds = _source(0)
  a, b = _trainer(ds), _trainer(_source(0))  # built separately: new optax objects, samplers
  assert a == b and hash(a) == hash(b)
  assert programs.build(a, "map", None) is programs.build(b, "map", None)
  assert _trainer(ds, lr=2e-2) != a                              # another learning rate
  assert dataclasses.replace(a, tx=optax.sgd(1e-2)) != a          # a replaced optimizer
  assert _trainer(datasets.get_dataset({"name": "icl_markov", "length": 12, "train_size": 32,
                                        "test_size": 8})) != a   # another sampler


def test_a_second_equal_run_compiles_nothing_and_tables_stay_arguments(compilations):
  """Two markov_source tasks (seeds 0 and 1: other transition tables, same shapes) share the
  compiled programs: the second compiles nothing, and its results are those of a process that
  never ran the first (the table is an argument of the programs, not a baked-in constant)."""
  first, second = _source(0), _source(1)
  assert not np.array_equal(first.meta["transitions"], second.meta["transitions"])
  _run(_trainer(first), first)
  assert compilations
  compilations.clear()
  shared = _run(_trainer(second), second)
  assert not compilations
  programs.build.cache_clear()
  jax.clear_caches()
  np.testing.assert_array_equal(_run(_trainer(second), second), shared)
  assert compilations  # (that run did make its programs afresh)
