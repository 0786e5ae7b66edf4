"""Bad input anywhere in the public API: one clear error naming the offending field/argument.

One place that tries each kind of mistake a user can make (config fields, MI inputs, dataset and
model arguments, results files, workdirs), so a regression in any message shows up here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sgd_phases import (analysis, config_lib, datasets, io_lib, models, mutual_info, results,
                        train_lib)


def _cfg():
  c = config_lib.base_config("ball2d_sinusoid", "mlp", width=8, depth=1)
  c.references.linear = config_lib.reference_config("linear", num_steps=10)
  return c


@pytest.mark.parametrize("path,value,field", [
    ("num_seeds", 0, "num_seeds"),
    ("num_seeds", 2.5, "num_seeds"),
    ("batch_size", "64", "batch_size"),
    ("num_steps", -5, "num_steps"),
    ("seed", -1, "seed"),
    ("seeds_per_chunk", -1, "seeds_per_chunk"),
    ("seed_strategy", "pmap", "seed_strategy"),
    ("loss", "hinge", "loss"),
    ("model", "no_such_net", "model"),
    ("optimizer.name", "lbfgs", "optimizer.name"),
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate"),
    ("optimizer.momentum", 1.5, "optimizer.momentum"),
    ("optimizer.weight_decay", -0.1, "optimizer.weight_decay"),
    ("optimizer.schedule", "exp", "optimizer.schedule"),
    ("eval.schedule", "sometimes", "eval.schedule"),
    ("eval.num_points", 1, "eval.num_points"),
    ("eval.batch_size", 0, "eval.batch_size"),
    ("eval.probe_grid", -3, "eval.probe_grid"),
    ("references.linear.trained_on", "vibes", "references.linear.trained_on"),
    ("references.linear.model", "nope", "references.linear.model"),
    ("references.linear.num_steps", 0, "references.linear.num_steps"),
    ("model_kwargs", {"width": 8, "channels": 4}, "model_kwargs"),
    ("references.linear.model_kwargs", {"depth": 2}, "references.linear.model_kwargs"),
    ("t0.rule", "whenever", "t0.rule"),
    ("t0.reference", "missing", "t0.reference"),
    ("t0.delta", 1.5, "t0.delta"),
    ("bias_correction", "jackknife", "bias_correction"),
    ("checkpoint_every", -1, "checkpoint_every"),
])
def test_config_field_errors(path, value, field):
  c = _cfg()
  *parents, leaf = path.split(".")
  node = c
  for p in parents:
    node = node[p]
  with node.unlocked() if hasattr(node, "unlocked") else _null():
    node._fields[leaf] = value  # bypass ConfigDict type safety: simulate a bad JSON/CLI value
  with pytest.raises(ValueError, match=rf"^config\.{re.escape(field)}\b"):
    config_lib.validate(c)


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def test_probe_grid_needs_2d_inputs():
  c = _cfg()
  c.dataset = datasets.default_config("sinusoid_hd")
  c.dataset.n_train, c.dataset.n_test = 64, 64
  c.eval.probe_grid = 5
  with pytest.raises(ValueError, match=r"\beval\.probe_grid\b"):
    train_lib.train(c, None)


@pytest.mark.parametrize("kwargs,arg", [
    (dict(f=np.zeros(5, np.float32)), "f"),
    (dict(l=np.full(5, 7)), "l"),
    (dict(y=np.zeros(4, np.int32)), "y"),
    (dict(num_classes=1), "num_classes"),
    (dict(num_classes=2.0), "num_classes"),
    (dict(f=np.full(5, -1)), "f"),
])
def test_mutual_info_input_errors(kwargs, arg):
  args = dict(f=np.zeros(5, np.int32), l=np.zeros(5, np.int32), y=np.zeros(5, np.int32),
              num_classes=2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=rf"\b{arg}\b"):
    mutual_info.information_measures(**args)


def test_mutual_info_option_errors():
  z = jnp.zeros(5, jnp.int32)
  with pytest.raises(ValueError, match=r"\bbias_correction\b"):
    mutual_info.information_measures(z, z, z, 2, bias_correction="jackknife")
  with pytest.raises(ValueError, match=r"\btable\b"):
    mutual_info.measures_from_table(jnp.zeros((2, 2), jnp.int32))


@pytest.mark.parametrize("update,field", [
    (dict(name="imagenet"), "name"),
    (dict(label_noise=0.6), "label_noise"),
    (dict(bogus_field=1), "bogus_field"),
    (dict(train_size=10**9), "train_size"),
])
def test_dataset_config_errors(update, field):
  cfg = dict(datasets.default_config("ball2d_sinusoid"))
  cfg.update(update)
  with pytest.raises(ValueError, match=rf"\b{field}\b"):
    datasets.get_dataset(cfg)


def test_dataset_missing_files(tmp_path):
  cfg = datasets.default_config("mnist")
  cfg.data_dir = str(tmp_path)
  cfg.tfds_dir = str(tmp_path / "cache")
  with pytest.raises(ValueError, match=r"\bdata_dir\b"):
    datasets.get_dataset(cfg)


@pytest.mark.parametrize("classes", [[[0, 1], []], [[0, 1], [1, 2]], [[0, 11], [2]]])
def test_dataset_class_group_errors(classes, tmp_path):
  cfg = datasets.default_config("mnist")
  cfg.classes = classes
  cfg.data_dir = str(tmp_path)
  with pytest.raises(ValueError, match=r"\bclasses\b"):
    datasets.get_dataset(cfg)


def test_model_errors():
  with pytest.raises(ValueError, match=r"\bname\b"):
    models.get_model("no_such_net", 2)
  with pytest.raises(ValueError, match=r"\bnum_classes\b"):
    models.get_model("mlp", 1)
  with pytest.raises(ValueError, match=r"\bwidht\b"):
    models.get_model("mlp", 2, widht=3)


def test_corrupt_and_missing_results(tmp_path):
  bad = tmp_path / "results.npz"
  bad.write_bytes(b"this is not a zip file")
  with pytest.raises(ValueError, match=r"\bresults\b"):
    io_lib.read_npz(bad)
  with pytest.raises(ValueError, match=r"\bresults\.npz\b"):
    results.load(bad)
  with pytest.raises(ValueError, match=r"\bresults\b"):
    analysis.load(tmp_path)
  with pytest.raises(ValueError, match=r"\bmissing\b"):
    results.load(tmp_path / "missing")
  with pytest.raises(ValueError, match=r"\bworkdir\b"):
    analysis.load(tmp_path / "nowhere")


def test_results_refuse_object_arrays(tmp_path):
  with pytest.raises(ValueError, match=r"\ballow_pickle\b"):
    io_lib.write_npz(tmp_path / "r.npz", {"x": np.array([{}, 1], dtype=object)})
  assert not list(tmp_path.iterdir())  # nothing half-written


def test_unknown_reference_in_results():
  res = results.Results({"reference_names": np.array(["linear"])})
  with pytest.raises(ValueError, match=r"\breference\b"):
    res.measures("cnn3")
  with pytest.raises(ValueError, match=r"\bref_predictions\b"):
    analysis.measures_against(results.Results(
        {"predictions": np.zeros((2, 3, 10), np.int8), "y_test": np.zeros(10, np.int32),
         "num_classes": np.int64(2)}), np.zeros(7, np.int8))


def test_unwritable_workdir(tmp_path):
  ro = tmp_path / "ro"
  ro.mkdir()
  ro.chmod(0o500)
  # root (as in CI) may write anywhere on a disk: /proc refuses new folders to everyone
  target = ro / "run" if os.geteuid() != 0 else Path("/proc/sgd_phases_test/run")
  with pytest.raises(ValueError, match=r"\bnot writable\b"):
    io_lib.check_writable(target)


def test_workdir_that_is_a_file(tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  with pytest.raises(ValueError, match=r"\bworkdir\b"):
    train_lib.train(_cfg(), f)


def test_disk_space_check(tmp_path):
  with pytest.raises(ValueError, match=r"\bfree\b"):
    io_lib.check_writable(tmp_path, min_free_bytes=1 << 60)


@pytest.mark.parametrize("uri,message", [
    ("gs:/bucket/run", r"missing slash"), ("gs:///bucket/run", r"no bucket name"),
    ("hdfs://x/run", r"unsupported URI scheme .hdfs."),
    ("gcs://b/run", r"unsupported URI scheme .gcs."),
])
def test_mistyped_uris_refused_before_anything_is_created(uri, message, tmp_path, monkeypatch):
  from experiments import mi_vs_accuracy
  from sgd_phases import config_lib, datasets, sweep, train_lib
  monkeypatch.chdir(tmp_path)
  c = config_lib.base_config()
  c.t0.reference = ""
  with pytest.raises(ValueError, match=rf"^workdir='{re.escape(uri)}'.*{message}"):
    train_lib.train(c, uri)
  with pytest.raises(ValueError, match=rf"^workdir='{re.escape(uri)}'.*{message}"):
    sweep.run_sweep(mi_vs_accuracy, mi_vs_accuracy.get_config("quick"),
                    [{"num_examples": 2000}], uri)
  with pytest.raises(ValueError, match=rf"^data_dir='{re.escape(uri)}'.*{message}"):
    datasets.get_dataset({"name": "mnist", "data_dir": uri})
  assert list(tmp_path.iterdir()) == []  # no ./gs: folder, nothing at all


def test_a_missing_bucket_is_named(gcs_bucket):
  from sgd_phases import io_lib
  with pytest.raises(ValueError, match=r"the bucket 'no-such-bucket' does not exist"):
    io_lib.check_writable("gs://no-such-bucket/run")
  assert str(io_lib.check_writable(f"{gcs_bucket}/fine")) == f"{gcs_bucket}/fine"


# ------------------------------------------------- everything knowable, checked in plan
def test_a_vocabulary_the_mi_kernels_cannot_take_is_refused_before_anything_is_written(tmp_path):
  """1,400 symbols: K**3 overflows the MI kernels' int32 tables (K <= 1290). With a reference
  to score, refused in plan, before F trains and before config.json, metrics.jsonl or
  TensorBoard files exist (a run without references needs no MI: K is free)."""
  text = "".join(chr(0x4E00 + i) for i in range(1400)) * 3
  (tmp_path / "big.txt").write_text(text, encoding="utf-8")
  c = config_lib.base_config("text", "transformer", num_layers=1, d_model=8, mlp=False)
  c.dataset.update(dict(path=str(tmp_path / "big.txt"), length=8, train_size=64, test_size=16))
  c.num_seeds, c.num_steps, c.batch_size, c.eval.num_points = 1, 2, 8, 2
  c.t0.reference, c.null.num_permutations, c.progress = "", 0, False
  c.references.ngram = config_lib.reference_config("ngram", trained_on="closed_form", order=2)
  wd = tmp_path / "wd"
  with pytest.raises(ValueError, match=r"^config\.dataset: .*K = 1400 .*K <= 1290"):
    train_lib.train(c, wd)
  assert not wd.exists() or not list(wd.iterdir())  # nothing written


def _sequence_config(ref_model: str, **ref_kwargs):
  c = config_lib.base_config("icl_markov", "transformer", num_layers=1, d_model=8, mlp=False)
  c.dataset.update(dict(length=12, train_size=32, test_size=8))
  c.t0.reference, c.batch_size = "", 8
  c.references.lin = config_lib.reference_config(ref_model, trained_on="labels", batch_size=8,
                                                 **ref_kwargs)
  return c


def test_a_network_whose_logits_do_not_fit_the_labels_is_refused_in_plan():
  """A ``labels`` reference on token sequences must predict every position: ``linear`` maps a
  whole sequence to one logit vector and is refused naming the field (it failed inside optax);
  a transformer reference trains (the sequence experiments' closed-form ones need none)."""
  with pytest.raises(ValueError, match=r"^config\.references\.lin\.model: 'linear' maps an "
                     r"input \[11\] to logits \[3\]; the labels of 'icl_markov' need \[11, 3\]"):
    train_lib.plan(_sequence_config("linear"))
  c = _sequence_config("transformer", num_layers=1, d_model=8, mlp=False)
  assert train_lib.plan(c).ds.y_train.shape[1:] == (11,)
  c.model, c.model_kwargs = "mlp", ml_collections.ConfigDict({"width": 4}, type_safe=False)
  with pytest.raises(ValueError, match=r"^config\.model: 'mlp' maps an input \[11\]"):
    train_lib.plan(c)
