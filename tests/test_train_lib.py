"""End-to-end tests of the training engine on tiny synthetic runs (CPU, seconds)."""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from sgd_phases import (checkpointing, config_lib, datasets, engine, eval_lib, io_lib,
                        mutual_info, results, steps, train_lib)

sys.path.insert(0, str(Path(__file__).parent))
import tiny_run as tiny_run_lib  # noqa: E402


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  c = config_lib.base_config("ball2d_sinusoid", "mlp", width=32, depth=2)
  c.dataset.n_train = 256
  c.dataset.n_test = 512
  c.num_seeds = 3
  c.num_steps = 200
  c.batch_size = 32
  c.optimizer.learning_rate = 0.1
  c.eval.num_points = 12
  c.eval.train_eval_size = 256
  c.references.linear = config_lib.reference_config("linear", num_steps=100)
  c.progress = False
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("tiny")
  return train_lib.train(tiny_config(), workdir), workdir


def test_end_to_end_outputs(tiny_run):
  res, workdir = tiny_run
  a = io_lib.read_npz(workdir / "results.npz")  # allow_pickle=False
  s, e, n = 3, len(a["steps"]), 512
  assert a["steps"][0] == 0 and a["steps"][-1] == 200
  assert a["predictions"].shape == (s, e, n) and a["predictions"].dtype == np.int8
  assert a["ref/linear/predictions"].shape == (s, n)
  for f in ("i_fy", "mu", "i_fy_given_l", "acc_f"):
    assert a[f"mi/linear/{f}"].shape == (s, e)
    assert np.isfinite(a[f"mi/linear/{f}"]).all()
  np.testing.assert_allclose(a["mi/linear/acc_f"], a["test_acc"], atol=1e-6)
  assert (a["mi/linear/mu"] <= a["mi/linear/i_fy"] + 1e-5).all()
  assert a["test_acc"][:, -1].mean() > 0.75  # it learned something
  assert a["t0_index"].shape == (s,)
  for name in ("config.json", "metrics.jsonl"):
    assert (workdir / name).exists()
  rows = (workdir / "metrics.jsonl").read_text().splitlines()
  assert len(rows) == e
  np.testing.assert_array_equal(res.measures("linear")["mu"], a["mi/linear/mu"])


def test_null_added_to_a_finished_run_equals_the_engines(tiny_run, monkeypatch):
  """analysis.add_null re-scores stored predictions (no training) and gets the engine's draws."""
  from sgd_phases import analysis
  res, workdir = tiny_run
  stored = analysis.load(workdir)
  c = tiny_config()
  assert stored.null("linear").shape == (c.null.num_permutations, 3, len(stored.steps))
  bare = results.Results({k: v for k, v in stored.arrays.items()
                            if not k.startswith("null/")}, workdir)
  assert bare.null("linear") is None
  monkeypatch.setattr(engine, "run_seeds", lambda *a, **k: pytest.fail("retrained"))
  again = analysis.add_null(bare, c.null.num_permutations, seed=c.seed)
  np.testing.assert_array_equal(again.null("linear"), stored.null("linear"))
  # the null sits below the measured μ of two networks trained on the same labels
  mu_end, null_end = stored.measures("linear")["mu"][:, -1], stored.null("linear")[:, :, -1]
  assert (null_end.mean(axis=0) < mu_end).all()


def test_finished_run_is_not_retrained(tiny_run, monkeypatch):
  _, workdir = tiny_run
  monkeypatch.setattr(engine, "run_seeds", lambda *a, **k: pytest.fail("retrained"))
  res = train_lib.train(tiny_config(), workdir)
  assert res.arrays["predictions"].shape[0] == 3


def test_different_config_refused_then_overwritten(tiny_run, tmp_path):
  first, original = tiny_run
  workdir = tmp_path / "copy"
  shutil.copytree(original, workdir)  # the module's fixture stays untouched
  changed = tiny_config(optimizer=config_lib.optimizer_config(learning_rate=0.05))
  with pytest.raises(ValueError, match=r"optimizer\.learning_rate: 0\.1 -> 0\.05"):
    train_lib.train(changed, workdir)
  assert io_lib.read_json(workdir / "config.json")["optimizer"]["learning_rate"] == 0.1
  changed.overwrite = True
  res = train_lib.train(changed, workdir)
  assert io_lib.read_json(workdir / "config.json")["optimizer"]["learning_rate"] == 0.05
  on_disk = io_lib.read_npz(workdir / "results.npz")
  np.testing.assert_array_equal(on_disk["train_loss"], res.arrays["train_loss"])
  assert not np.array_equal(on_disk["train_loss"], first.arrays["train_loss"])  # retrained
  # an independent run of the new config in a fresh workdir gives the same numbers
  changed.overwrite = False
  fresh = train_lib.train(changed, tmp_path / "fresh")
  np.testing.assert_array_equal(fresh.arrays["predictions"], on_disk["predictions"])


def test_seed_alone_equals_seed_in_batch():
  c = tiny_config()
  ds = datasets.get_dataset(c.dataset)
  data = engine.EvalData.create(ds, 256)
  tr = engine.make_trainer("mlp", dict(width=32, depth=2), c.optimizer, "cross_entropy", 32,
                              200, 2)
  at = np.array([0, 50, 200])
  run = lambda ids: engine.run_seeds(tr, data, ds.y_train, engine.SeedSet(0, ids), at,  # noqa
                                     engine.RunOptions(strategy="vmap"))
  batch = run(np.arange(3))
  alone = run(np.array([2]))
  np.testing.assert_array_equal(alone["predictions"][0], batch["predictions"][2])
  np.testing.assert_allclose(alone["train_loss"][0], batch["train_loss"][2], atol=1e-5)
  mapped = engine.run_seeds(tr, data, ds.y_train, engine.SeedSet(0, np.arange(3)), at,
                            engine.RunOptions(strategy="map"))
  np.testing.assert_array_equal(mapped["predictions"], batch["predictions"])


def test_unroll_strategy_equals_map_for_a_cnn():
  """"unroll" (Python-driven steps, seeds unrolled, no loops in the programs) trains the same
  seeds as "map": same data order, same steps, predictions equal up to float reassociation."""
  rng = np.random.default_rng(0)
  x = rng.random((96, 12, 12, 1), dtype=np.float32)
  y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype(np.int32)
  ds = datasets.Dataset(x_train=x, y_train=y, x_test=x[:40], y_test=y[:40], y_train_clean=y,
                        y_test_clean=y[:40], num_classes=2, name="random_images")
  data = engine.EvalData.create(ds, 64)
  opt = config_lib.optimizer_config(learning_rate=0.1)
  kw = dict(channels=4, dense=8)
  at = np.array([0, 3, 7, 10])  # 10 steps of batch 16: crosses an epoch (6 batches)
  out = {}
  for strategy in ("map", "unroll"):
    tr = engine.make_trainer("cnn2", kw, opt, "cross_entropy", 16, 10, 2, eval_batch_size=16,
                                unroll=strategy == "unroll")
    out[strategy] = jax.tree.map(np.asarray, engine.run_seeds(
        tr, data, y, engine.SeedSet(0, np.arange(3)), at, engine.RunOptions(strategy=strategy)))
  assert engine.make_trainer("cnn2", kw, opt, "cross_entropy", 16, 10, 2,
                                unroll=True).model.conv_impl == "lax"
  np.testing.assert_allclose(out["unroll"]["train_loss"], out["map"]["train_loss"], atol=2e-4)
  np.testing.assert_allclose(out["unroll"]["test_acc"], out["map"]["test_acc"], atol=1 / 40 + 1e-6)
  assert (out["unroll"]["predictions"] == out["map"]["predictions"]).mean() > 0.97


def test_unroll_strategy_in_a_full_run():
  res = train_lib.train(tiny_config(num_seeds=2, seed_strategy="unroll", num_steps=60), None)
  ref = train_lib.train(tiny_config(num_seeds=2, seed_strategy="map", num_steps=60), None)
  np.testing.assert_allclose(res.arrays["train_loss"], ref.arrays["train_loss"], atol=1e-4)
  assert res.arrays["predictions"].shape == ref.arrays["predictions"].shape


def test_segment_compiled_once(monkeypatch):
  traces = []
  orig = steps.run_segment

  def counting(*args, **kwargs):
    traces.append(1)
    return orig(*args, **kwargs)

  monkeypatch.setattr(steps, "run_segment", counting)
  c = tiny_config(num_seeds=2)
  c.references = ml_collections.ConfigDict()
  c.t0.reference = ""
  res = train_lib.train(c, None)
  assert len(res.steps) >= 10
  assert len(traces) == 1  # one trace for F, reused by every evaluation interval


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
  c = tiny_config(checkpoint_every=2, num_seeds=2, seeds_per_chunk=1)
  trained = tiny_run_lib.count_trained_steps(
      monkeypatch, eval_lib.eval_steps(c.num_steps, "log", c.eval.num_points))
  full = train_lib.train(c, tmp_path / "full")
  assert sum(trained) == 2 * c.num_steps  # two chunks of one seed, every step
  trained.clear()
  saves = []
  orig_save = checkpointing.ChunkCheckpointer.save

  def crashing_save(self, k, *args, **kwargs):
    orig_save(self, k, *args, **kwargs)
    saves.append(k)
    if len(saves) == 9:  # chunk 0 saved evaluations 0, 2, ..., 12; chunk 1 then 0 and 2
      self.wait()
      raise KeyboardInterrupt("simulated preemption")

  monkeypatch.setattr(checkpointing.ChunkCheckpointer, "save", crashing_save)
  with pytest.raises(KeyboardInterrupt):
    train_lib.train(c, tmp_path / "resumed")
  monkeypatch.setattr(checkpointing.ChunkCheckpointer, "save", orig_save)
  assert not (tmp_path / "resumed" / "results.npz").exists()
  trained.clear()
  resumed = train_lib.train(c, tmp_path / "resumed")
  # the crash came after chunk 1 saved evaluation 2: the restart trains only chunk 1's steps
  # after it, neither chunk 0 again nor chunk 1 from scratch
  assert len(full.steps) == 13 and saves[-1] == 2
  assert sum(trained) == c.num_steps - int(full.steps[2])
  assert set(full.arrays) == set(resumed.arrays)
  for k, v in full.arrays.items():
    np.testing.assert_array_equal(v, resumed.arrays[k], err_msg=k)


def test_references_on_predictions_and_snapshot():
  c = tiny_config(num_seeds=2)
  c.references.on_final = config_lib.reference_config("linear", "final_predictions",
                                                      num_steps=100)
  c.references.on_t0 = config_lib.reference_config("linear", "predictions_at_T0", num_steps=100)
  c.references.f_t0 = config_lib.reference_config("linear", "snapshot_at_T0")
  res = train_lib.train(c, None)
  a = res.arrays
  assert set(res.reference_names) == {"linear", "on_final", "on_t0", "f_t0"}
  for s in range(2):  # T_0 by its definition, one seed at a time
    reached = [e for e, acc in enumerate(a["test_acc"][s]) if acc >= a["ref/linear/test_acc"][s]]
    t0 = reached[0] if reached else -1
    assert a["t0_index"][s] == t0
    if t0 < 0:
      assert (a["ref/f_t0/predictions"][s] == -1).all() and np.isnan(a["mi/f_t0/mu"][s]).all()
      continue
    np.testing.assert_array_equal(a["ref/f_t0/predictions"][s], a["predictions"][s, t0])
    # L := F_T0 makes μ_Y(F_T0; L) = I(F_T0; Y).
    assert a["mi/f_t0/mu"][s, t0] == pytest.approx(a["mi/f_t0/i_fy"][s, t0], abs=1e-5)
  assert (a["t0_index"] >= 0).any()  # the run exercises the defined case
  # A linear model fit to F_T's own predictions agrees with F_T more than chance.
  agree = (a["ref/on_final/predictions"] == a["predictions"][:, -1]).mean()
  assert agree > 0.7


def test_batchnorm_model_under_vmapped_seeds():
  rng = np.random.default_rng(0)
  x = rng.random((64, 8, 8, 3), dtype=np.float32)
  y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
  ds = datasets.Dataset(x_train=x, y_train=y, x_test=x[:32], y_test=y[:32], y_train_clean=y,
                        y_test_clean=y[:32], num_classes=2, name="random_images")
  data = engine.EvalData.create(ds, 64)
  tr = engine.make_trainer("resnet20", {}, config_lib.optimizer_config(), "cross_entropy", 16,
                              3, 2, eval_batch_size=32)
  assert tr.has_batch_stats
  out = engine.run_seeds(tr, data, y, engine.SeedSet(0, np.arange(2)), np.array([0, 3]),
                         engine.RunOptions(strategy="vmap"))
  assert out["predictions"].shape == (2, 2, 32)
  assert np.isfinite(out["test_loss"]).all()


def test_nan_loss_names_seed_and_step():
  c = tiny_config(num_seeds=2, loss="squared")
  c.optimizer.learning_rate = 1e4
  with pytest.raises(FloatingPointError, match=r"non-finite loss in seed \d+ at step \d+"):
    train_lib.train(c, None)


@pytest.mark.parametrize("field,value", [
    ("num_seeds", 0), ("batch_size", -1), ("seed_strategy", "pmap"), ("loss", "hinge"),
    ("model", "no_such_net")])
def test_bad_config_names_field(field, value):
  c = tiny_config()
  c[field] = value
  with pytest.raises(ValueError, match=rf"^config\.{re.escape(field)}\b"):
    train_lib.train(c, None)


def test_bad_nested_config_names_field():
  c = tiny_config()
  c.optimizer.learning_rate = -1.0
  with pytest.raises(ValueError, match=r"^config\.optimizer\.learning_rate\b"):
    config_lib.validate(c)
  c = tiny_config()
  c.references.linear.trained_on = "vibes"
  with pytest.raises(ValueError, match=r"^config\.references\.linear\.trained_on\b"):
    config_lib.validate(c)
  c = tiny_config()
  c.t0.reference = "nope"
  with pytest.raises(ValueError, match=r"^config\.t0\.reference\b"):
    config_lib.validate(c)


def test_strategy_auto_per_backend():
  assert engine.resolve_strategy("auto", "mlp", "cpu") == "vmap"
  assert engine.resolve_strategy("auto", "paper_cnn", "cpu") == "map"
  assert engine.resolve_strategy("auto", "paper_cnn", "gpu") == "vmap"
  assert engine.resolve_strategy("map", "mlp", "gpu") == "map"


def test_eval_schedule():
  from sgd_phases import eval_lib
  s = eval_lib.eval_steps(10_000, "log", 100)
  assert s[0] == 0 and s[-1] == 10_000 and 95 <= len(s) <= 105
  assert (np.diff(s) > 0).all()
  np.testing.assert_array_equal(eval_lib.eval_steps(10, "every", every=5), [0, 5, 10])
  assert len(eval_lib.eval_steps(5, "log", 100)) == 6


def test_deterministic_on_cpu():
  c = tiny_config(num_seeds=2, num_steps=60)
  a, b = train_lib.train(c, None).arrays, train_lib.train(c, None).arrays
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_nonfinite_update_at_the_last_step_of_a_segment_is_never_checkpointed(tmp_path):
  """The loss of step t is taken before its update, so an exploding update at a segment's last
  step shows in no loss of that segment: the state check must catch it before the save."""
  c = tiny_config()
  ds = datasets.get_dataset(c.dataset)
  data = engine.EvalData.create(ds, 256)
  tr = engine.make_trainer("mlp", dict(width=32, depth=2), c.optimizer, "cross_entropy", 32,
                              100, 2)
  explode_at = 49  # the last step of the segment 0 -> 50
  lr = lambda count: jnp.where(count == explode_at, jnp.inf, 0.1)  # noqa: E731
  tr = dataclasses.replace(tr, tx=optax.sgd(lr))
  ckpt = tmp_path / "ckpt"
  with pytest.raises(FloatingPointError, match=rf"\bat step {explode_at}\b"):
    engine.run_seeds(tr, data, ds.y_train, engine.SeedSet(0, np.arange(2)), np.array([0, 50, 100]),
                     engine.RunOptions(strategy="vmap", ckpt_dir=ckpt, checkpoint_every=1))
  mngr = checkpointing.ChunkCheckpointer(next(ckpt.iterdir()))
  assert mngr.latest() == 0  # evaluation 1 (step 50, NaN state) was never saved
  mngr.close()


def test_seeds_that_never_reach_t0_have_undefined_t0_references(caplog):
  """F at lr 1e-5 for 20 steps stays at chance; L reaches > 0.7: T_0 is never reached. The
  T_0 references are then undefined (−1 predictions, NaN measures), not F at some stand-in."""
  c = tiny_config(num_seeds=2, num_steps=20)
  c.optimizer.learning_rate = 1e-5
  c.references.f_t0 = config_lib.reference_config("linear", "snapshot_at_T0")
  c.references.on_t0 = config_lib.reference_config("linear", "predictions_at_T0", num_steps=20)
  with caplog.at_level(logging.WARNING):
    res = train_lib.train(c, None)
  a = res.arrays
  assert (a["t0_index"] == -1).all() and (a["t0_step"] == -1).all()
  assert (a["ref/linear/test_acc"] > a["test_acc"].max(axis=1)).all()
  warnings_ = [r.getMessage() for r in caplog.records if "T_0 never reached" in r.getMessage()]
  assert len(warnings_) == 1 and "[0, 1]" in warnings_[0]
  for name in ("f_t0", "on_t0"):
    assert (a[f"ref/{name}/predictions"] == -1).all()
    assert np.isnan(a[f"ref/{name}/test_acc"]).all()
    assert np.isnan(a[f"mi/{name}/mu"]).all() and np.isnan(a[f"null/{name}/mu"]).all()
  assert np.isfinite(a["mi/linear/mu"]).all()  # the T_0-free reference is unaffected
  from sgd_phases import analysis
  h = analysis.headline(res, "linear")
  assert h["t0_step"]["n"] == 0 and h["mu_over_i_at_t0"]["n"] == 0
  assert h["mu_over_i_at_t0_vs_null"]["value"]["n"] == 0
  assert h["mu_end_over_i_ly_vs_null"]["value"]["n"] == 2


def test_batch_larger_than_train_set_refused_before_the_workdir_is_written(tmp_path):
  c = tiny_config(batch_size=1000)  # n_train = 256
  with pytest.raises(ValueError, match=r"^config\.batch_size\b.*256 training examples"):
    train_lib.train(c, tmp_path / "wd")
  assert not (tmp_path / "wd" / "config.json").exists()
  c = tiny_config()
  c.references.linear.batch_size = 512
  with pytest.raises(ValueError, match=r"^config\.references\.linear\.batch_size\b"):
    train_lib.train(c, None)
  c = tiny_config()
  c.model_kwargs.widht = 3
  with pytest.raises(ValueError, match=r"^config\.model_kwargs\b.*\bwidht\b"):
    train_lib.train(c, tmp_path / "wd")
  assert not (tmp_path / "wd" / "config.json").exists()


def test_workdir_without_progress_is_fresh(tmp_path):
  """A config.json left by a run that failed before training blocks nothing."""
  wd = tmp_path / "wd"
  wd.mkdir()
  io_lib.write_json(wd / "config.json", config_lib.to_dict(tiny_config(num_seeds=7)))
  res = train_lib.train(tiny_config(num_seeds=2, num_steps=20), wd)
  assert res.arrays["predictions"].shape[0] == 2
  assert io_lib.read_json(wd / "config.json")["num_seeds"] == 2
  # with progress on disk, a different config is refused as before
  with pytest.raises(ValueError, match=r"\bnum_seeds: 2 -> 3\b"):
    train_lib.train(tiny_config(num_seeds=3, num_steps=20), wd)


def test_finished_run_is_rescored_not_retrained_under_new_scoring_options(tiny_run, tmp_path,
                                                                         monkeypatch):
  first, original = tiny_run
  workdir = tmp_path / "copy"
  shutil.copytree(original, workdir)
  monkeypatch.setattr(engine, "run_seeds", lambda *a, **k: pytest.fail("retrained"))
  c = tiny_config(bias_correction="miller_madow")
  c.null.num_permutations = 7
  c.plateau_tol = 0.2  # an experiment's analysis option: not part of the run's identity
  res = train_lib.train(c, workdir)
  np.testing.assert_array_equal(res.arrays["predictions"], first.arrays["predictions"])
  assert res.null("linear").shape[0] == 7
  # the stored measures are now the Miller–Madow ones of the stored predictions
  a = first.arrays
  mm = mutual_info.information_measures(a["predictions"], a["ref/linear/predictions"][:, None],
                                        a["y_test"], 2, bias_correction="miller_madow")
  np.testing.assert_allclose(res.measures("linear")["mu"], mm.mu, atol=1e-6)
  assert not np.allclose(res.measures("linear")["mu"], first.measures("linear")["mu"])
  on_disk = io_lib.read_npz(workdir / "results.npz")
  assert on_disk["null/linear/mu"].shape[0] == 7
  assert io_lib.read_json(workdir / "config.json")["plateau_tol"] == 0.2
  # what changes the trained networks is still refused
  with pytest.raises(ValueError, match=r"\bnum_steps: 200 -> 100\b"):
    train_lib.train(tiny_config(num_steps=100), workdir)


def test_resolved_choices_are_recorded(tiny_run):
  res, _ = tiny_run
  r = res.resolved
  assert r["seed_strategy"] in ("vmap", "map") and r["backend"] == jax.default_backend()
  assert r["mi_method"] in ("scatter", "onehot") and r["conv_impl"] == "none"  # an MLP
  assert int(r["device_count"]) == jax.device_count()
