"""Tests for sgd_phases.datasets: synthetic tasks, label noise, subsampling, config errors,
real MNIST / Fashion-MNIST from local IDX files (skipped when absent) and CIFAR-10 under
``tfds.testing.mock_data``.

The IDX builds go to a session-scoped pytest tmp folder (never the user's home) and happen once
per session (~15 s each on 2 CPU cores).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from sgd_phases import datasets
from sgd_phases.datasets import base, sequences, tfds_images

SYNTHETIC = ["ball2d_sinusoid", "sinusoid_hd", "theorem1"]
SMALL = {"n_train": 300, "n_test": 200}


def _binomial_ok(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
  return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


# --------------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_shapes_dtypes(name):
  ds = datasets.get_dataset({"name": name, **SMALL})
  assert ds.x_train.shape[0] == 300 and ds.x_test.shape[0] == 200
  assert ds.x_train.dtype == ds.x_test.dtype == np.float32
  for y in (ds.y_train, ds.y_test, ds.y_train_clean, ds.y_test_clean):
    assert y.dtype == np.int32 and set(np.unique(y)) <= {0, 1}
  assert ds.num_classes == 2 and ds.name == name
  assert ds.input_shape == ds.x_train.shape[1:] == ds.x_test.shape[1:]
  assert not ds.flipped.any()
  # Labels roughly balanced (all three tasks are symmetric by construction).
  assert 0.35 < ds.y_test.mean() < 0.65


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_determinism(name):
  cfg = {"name": name, "label_noise": 0.2, **SMALL}
  a, b = datasets.get_dataset({**cfg, "seed": 5}), datasets.get_dataset({**cfg, "seed": 5})
  c = datasets.get_dataset({**cfg, "seed": 6})
  for field in ("x_train", "y_train", "x_test", "y_test", "y_train_clean"):
    assert getattr(a, field).tobytes() == getattr(b, field).tobytes()
  assert a.x_train.tobytes() != c.x_train.tobytes()
  assert a.y_train.tobytes() != c.y_train.tobytes()


def test_ball2d_sinusoid_geometry():
  ds = datasets.get_dataset({"name": "ball2d_sinusoid", "amplitude": 0.3, "frequency": 5.0})
  x = np.concatenate([ds.x_train, ds.x_test])
  y = np.concatenate([ds.y_train_clean, ds.y_test_clean])
  r = np.linalg.norm(x, axis=1)
  assert r.max() <= 1.0 + 1e-6
  assert abs((r < np.sqrt(0.5)).mean() - 0.5) < 0.03  # uniform in area, not in radius
  np.testing.assert_array_equal(y, x[:, 1] > 0.3 * np.sin(5.0 * x[:, 0]))


def test_sinusoid_hd_linear_limit_and_uniform():
  ds = datasets.get_dataset({"name": "sinusoid_hd", "dim": 7, "distribution": "uniform",
                             **SMALL})
  assert ds.input_shape == (7,)
  assert np.abs(ds.x_train).max() <= np.sqrt(3) + 1e-6
  assert abs(ds.x_train.var() - 1.0) < 0.1  # unit variance per coordinate
  # With amplitude 0 the task is linear (y = 1[<u,x> > 0]); for Gaussian x the least-squares
  # direction is parallel to u in expectation, so it classifies almost perfectly.
  ds = datasets.get_dataset({"name": "sinusoid_hd", "dim": 7, "amplitude": 0.0,
                             "n_train": 4000, "n_test": 10})
  w = np.linalg.lstsq(ds.x_train, 2.0 * ds.y_train - 1, rcond=None)[0]
  assert ((ds.x_train @ w > 0) == ds.y_train).mean() > 0.98


def test_theorem1_linear_interpolation_keeps_concept():
  ds = datasets.get_dataset({"name": "theorem1", "n_train": 200, "n_test": 2000,
                             "dim": 2000, "label_noise": 0.2, "signal": 2.0})
  np.testing.assert_array_equal(ds.x_train[:, 0], np.where(ds.y_train_clean == 1, 2.0, -2.0))
  assert abs(int(ds.y_train_clean.sum()) - 100) <= 1  # balanced
  assert np.array_equal(ds.y_test, ds.y_test_clean)  # test labels clean by default
  x = ds.x_train.astype(np.float64)
  w = x.T @ np.linalg.solve(x @ x.T, 2.0 * ds.y_train - 1)  # min-norm interpolator
  assert ((x @ w > 0) == ds.y_train).all()  # fits the noisy labels
  assert ((ds.x_test @ w > 0) == ds.y_test).mean() > 0.9  # clean accuracy stays high


# ------------------------------------------------------------------------ label noise, subsample


def test_label_noise_rate_and_uniform_other_classes():
  k, n, p = 10, 200_000, 0.3
  y = np.arange(n, dtype=np.int32) % k
  noisy = base.apply_label_noise(y, p, k, base.data_rng(0, "test"))
  flipped = noisy != y
  assert _binomial_ok(int(flipped.sum()), n, p)
  offsets = (noisy[flipped] - y[flipped]) % k
  assert offsets.min() >= 1  # only to *other* classes
  counts = np.bincount(offsets, minlength=k)[1:]
  for c in counts:  # each of the 9 other classes equally likely
    assert _binomial_ok(int(c), int(flipped.sum()), 1 / (k - 1))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.45])
def test_label_noise_through_config(p):
  ds = datasets.get_dataset({"name": "ball2d_sinusoid", "n_train": 5000, "n_test": 4000,
                             "label_noise": p})
  assert _binomial_ok(int(ds.flipped.sum()), 5000, p)
  assert np.array_equal(ds.flipped, ds.y_train != ds.y_train_clean)
  assert np.array_equal(ds.y_test, ds.y_test_clean)


def test_noisy_test():
  cfg = {"name": "ball2d_sinusoid", "n_train": 2000, "n_test": 5000, "label_noise": 0.2}
  clean = datasets.get_dataset(cfg)
  noisy = datasets.get_dataset({**cfg, "noisy_test": True})
  np.testing.assert_array_equal(noisy.y_train, clean.y_train)  # train stream unchanged
  np.testing.assert_array_equal(noisy.y_test_clean, clean.y_test)
  test_flips = noisy.y_test != noisy.y_test_clean
  assert _binomial_ok(int(test_flips.sum()), 5000, 0.2)
  # Independent stream: test flips are not a copy of the train flip pattern.
  assert not np.array_equal(test_flips[:2000], noisy.flipped)


def test_balanced_subsample():
  y = np.repeat(np.arange(4), [50, 400, 400, 3])
  idx = base.balanced_subsample(y, 103, 4, np.random.default_rng(0))
  assert idx.shape == (103,) and np.all(np.diff(idx) > 0)  # sorted, unique
  # Class 3 has only 3 examples: it gives all, the other 100 split as evenly as possible.
  np.testing.assert_array_equal(np.bincount(y[idx], minlength=4), [34, 33, 33, 3])
  again = base.balanced_subsample(y, 103, 4, np.random.default_rng(0))
  np.testing.assert_array_equal(idx, again)


def test_subsample_through_config():
  cfg = {"name": "sinusoid_hd", "n_train": 1000, "n_test": 500, "train_size": 101,
         "test_size": 50, "seed": 3}
  ds = datasets.get_dataset(cfg)
  full = datasets.get_dataset({**cfg, "train_size": None, "test_size": None})
  assert ds.x_train.shape == (101, 50) and ds.x_test.shape == (50, 50)
  assert abs(int(ds.y_train.sum()) - 50) <= 1 and int(ds.y_test.sum()) == 25
  # Rows are rows of the full split, in their original order.
  rows = [np.flatnonzero((full.x_train == r).all(axis=1))[0] for r in ds.x_train]
  assert np.all(np.diff(rows) > 0)
  np.testing.assert_array_equal(ds.x_train, datasets.get_dataset(cfg).x_train)


def test_classes_grouping():
  y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  groups = base.parse_classes([[2, 3, 4, 5, 6, 7], [0, 1, 8, 9]], 10)
  np.testing.assert_array_equal(base.group_classes(y, groups, 10), [1, 1, 0, 0, 0, 0, 0, 0, 1, 1])
  groups = base.parse_classes("[[3], [5, 1]]", 10)
  np.testing.assert_array_equal(base.group_classes(y, groups, 10),
                                [-1, 1, -1, 0, -1, 1, -1, -1, -1, -1])
  first5 = base.group_classes(y, base.parse_classes("first5_vs_last5", 10), 10)
  np.testing.assert_array_equal(first5, (y > 4).astype(int))
  assert len(base.parse_classes("all", 10)) == 10


# ---------------------------------------------------------------------------- config handling


def test_default_configs_accept_overrides():
  for name in datasets.DATASETS:
    c = datasets.default_config(name)
    assert c.name == name and c.seed == 0 and c.label_noise == 0.0 and c.noisy_test is False
    if name in sequences.SEQUENCE_DATASETS:  # sizes count sequences, generated: no "all"
      assert c.train_size == 4096 and c.test_size == 256
    else:
      assert c.train_size is None and c.test_size is None
    c.train_size = 1000  # placeholder(int) fields accept ints (command-line overrides)
  c = datasets.default_config("mnist")
  assert c.classes == "first5_vs_last5" and c.data_dir is None and c.tfds_dir is None
  c.classes = [[0, 1], [2, 3]]
  c.classes = "all"
  c = datasets.default_config("theorem1")
  c.n_test = 10
  ds = datasets.get_dataset(c)  # a ConfigDict works as well as a dict
  assert ds.x_train.shape == (500, 2000) and ds.x_test.shape == (10, 2000)


ERRORS = [
    ({"name": "nope"}, "name"),
    ({"seed": 0}, "name"),
    ({"name": "theorem1", "n_trian": 5}, "n_trian"),
    ({"name": "theorem1", "label_noise": 0.5}, "label_noise"),
    ({"name": "theorem1", "label_noise": -0.1}, "label_noise"),
    ({"name": "theorem1", "train_size": 501}, "train_size"),
    ({"name": "theorem1", "train_size": 1}, "train_size"),
    ({"name": "theorem1", "test_size": 10**6}, "test_size"),
    ({"name": "theorem1", "seed": -1}, "seed"),
    ({"name": "theorem1", "dim": 0}, "dim"),
    ({"name": "sinusoid_hd", "distribution": "cauchy"}, "distribution"),
    ({"name": "ball2d_sinusoid", "n_train": 0}, "n_train"),
    ({"name": "ball2d_sinusoid", "noisy_test": "yes"}, "noisy_test"),
    ({"name": "mnist", "classes": [[0, 1], []]}, "classes"),
    ({"name": "mnist", "classes": [[0, 1], [1, 2]]}, "classes"),
    ({"name": "mnist", "classes": [[0, 10], [1, 2]]}, "classes"),
    ({"name": "mnist", "classes": "first_half"}, "classes"),
    ({"name": "mnist", "classes": "all", "label_noise": 0.9}, "label_noise"),
    ({"name": "cifar10", "data_dir": "/tmp"}, "data_dir"),
]


@pytest.mark.parametrize("config, field", ERRORS)
def test_errors_name_the_field(config, field):
  with pytest.raises(ValueError, match=rf"\b{field}\b"):
    datasets.get_dataset(config)


def test_data_dir_missing_files(tmp_path):
  (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
  with pytest.raises(ValueError, match=r"\bdata_dir\b") as err:
    datasets.get_dataset({"name": "mnist", "data_dir": str(tmp_path),
                          "tfds_dir": str(tmp_path / "cache")})
  for f in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
    assert f in str(err.value)
  assert "train-images-idx3-ubyte.gz" not in str(err.value)


def test_data_dir_bad_magic(tmp_path):
  from sgd_phases.datasets import local_idx
  for f in local_idx.IDX_FILES.values():  # labels everywhere: image files have the wrong magic
    with gzip.open(tmp_path / f, "wb") as fh:
      fh.write(struct.pack(">II", 2049, 2) + bytes([1, 2]))
  with pytest.raises(ValueError, match=r"\bdata_dir\b.*\bmagic\b"):
    datasets.get_dataset({"name": "mnist", "data_dir": str(tmp_path),
                          "tfds_dir": str(tmp_path / "cache")})
  assert not list((tmp_path / "cache").glob("*/local_mnist"))  # nothing half-built kept
  assert not list((tmp_path / "cache").glob(".tmp-*"))


def test_data_dir_not_gzip(tmp_path):
  from sgd_phases.datasets import local_idx
  for f in local_idx.IDX_FILES.values():
    (tmp_path / f).write_bytes(b"not a gzip file")
  with pytest.raises(ValueError, match=r"\bdata_dir\b"):
    datasets.get_dataset({"name": "fashion_mnist", "data_dir": str(tmp_path),
                          "tfds_dir": str(tmp_path / "cache")})


def test_shared_data_dir_env(tmp_path, monkeypatch):
  monkeypatch.setenv("SGD_PHASES_SHARED_DATA", str(tmp_path))
  assert datasets.shared_data_dir() == tmp_path
  for hidden in ("none", "None", " NONE "):  # as in a clone without it, even where it exists
    monkeypatch.setenv("SGD_PHASES_SHARED_DATA", hidden)
    assert datasets.shared_data_dir() is None


# ------------------------------------------------------------------------ real MNIST-format data


@pytest.fixture(scope="session")
def idx_cache(tmp_path_factory):
  cache = tmp_path_factory.mktemp("sgd_phases_tfds")
  # A leftover from an interrupted build must not confuse a later one.
  (cache / ".tmp-leftover" / "local_mnist" / "1.0.0").mkdir(parents=True)
  (cache / ".tmp-leftover" / "local_mnist" / "1.0.0" / "dataset_info.json").write_text("{")
  return cache


def _idx_config(name: str, cache: Path, **kw) -> dict:
  """The config of the shared real ``name`` files (tests marked ``shared_data(name)``)."""
  return {"name": name, "data_dir": str(datasets.shared_data_dir() / name),
          "tfds_dir": str(cache), **kw}


@pytest.mark.shared_data("mnist")
def test_mnist_from_idx(idx_cache):
  ds = datasets.get_dataset(_idx_config("mnist", idx_cache, classes="all"))
  assert ds.x_train.shape == (60_000, 28, 28, 1) and ds.x_test.shape == (10_000, 28, 28, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0 and ds.num_classes == 10
  assert list(ds.y_train[:5]) == [5, 0, 4, 1, 9]
  binary = datasets.get_dataset(_idx_config("mnist", idx_cache))  # first5_vs_last5
  assert binary.num_classes == 2
  np.testing.assert_array_equal(np.bincount(binary.y_test), [5139, 4861])
  np.testing.assert_array_equal(binary.y_train, ds.y_train > 4)
  np.testing.assert_array_equal(binary.x_test, ds.x_test)


@pytest.mark.shared_data("mnist")
def test_mnist_groups_subsample_noise(idx_cache):
  cfg = _idx_config("mnist", idx_cache, classes=[[2, 3], [7]], train_size=300, test_size=100,
                    label_noise=0.2, seed=1)
  ds = datasets.get_dataset(cfg)
  full = datasets.get_dataset({**cfg, "train_size": None, "test_size": None, "label_noise": 0.0})
  assert ds.x_train.shape == (300, 28, 28, 1) and ds.num_classes == 2
  np.testing.assert_array_equal(np.bincount(ds.y_train_clean), [150, 150])
  assert _binomial_ok(int(ds.flipped.sum()), 300, 0.2)
  # Group 0 = digits 2 and 3 (12,089 train images), group 1 = digit 7 (6,265).
  np.testing.assert_array_equal(np.bincount(full.y_train_clean), [6131 + 5958, 6265])


@pytest.mark.shared_data("mnist")
def test_idx_cache_reused(idx_cache, monkeypatch):
  import tensorflow_datasets as tfds
  from sgd_phases.datasets import local_idx
  cfg = _idx_config("mnist", idx_cache, train_size=10)
  datasets.get_dataset(cfg)  # built here, or earlier in the session
  (info,) = idx_cache.glob("[!.]*/local_mnist/1.0.0/dataset_info.json")
  mtime = info.stat().st_mtime_ns
  # A stray TFDS-style incomplete folder next to the build must be ignored too.
  (info.parents[1] / "incomplete.ABC123_1.0.0").mkdir(exist_ok=True)

  def no_rebuild(*args, **kwargs):
    raise AssertionError("the cached build should have been reused")

  monkeypatch.setattr(local_idx, "build", no_rebuild)
  root, builder_name, _ = local_idx.prepare("mnist", local_idx.idx_files(cfg["data_dir"]),
                                            idx_cache)
  assert info.is_relative_to(root) and builder_name == "local_mnist"
  source = tfds.data_source(builder_name, split="train", data_dir=str(root), download=False)
  assert [int(r["label"]) for r in source.__getitems__([0, 1, 2, 3, 4])] == [5, 0, 4, 1, 9]
  assert info.stat().st_mtime_ns == mtime
  assert not list(idx_cache.glob(".tmp-*/local_mnist/1.0.0/*.array_record*"))  # tmp cleaned


@pytest.mark.shared_data("fashion_mnist")
def test_fashion_mnist_from_idx(idx_cache):
  ds = datasets.get_dataset(_idx_config("fashion_mnist", idx_cache, classes="all"))
  assert ds.x_train.shape == (60_000, 28, 28, 1) and ds.x_test.shape == (10_000, 28, 28, 1)
  assert list(ds.y_train[:4]) == [9, 0, 0, 3]
  np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
  tfds_images.clear_cache()  # free the raw arrays held by this session


@pytest.mark.shared_data("mnist")
def test_mnist_idx_in_a_gcs_bucket_feeds_a_quick_run(gcs_bucket, tmp_path):
  """``data_dir = gs://...`` is read as a URI (it used to become ``/cwd/gs:/...``)."""
  from etils import epath

  from experiments import linear_phase
  local = _idx_config("mnist", tmp_path)["data_dir"]
  uri = f"{gcs_bucket}/idx/mnist"
  for f in sorted(os.listdir(local)):
    (epath.Path(uri) / f).write_bytes((Path(local) / f).read_bytes())
  tfds_images.clear_cache()
  cfg = {"name": "mnist", "data_dir": uri, "tfds_dir": str(tmp_path / "cache"),
         "train_size": 500, "test_size": 300}
  ds = datasets.get_dataset(cfg)
  ref = datasets.get_dataset({**cfg, "data_dir": local, "tfds_dir": str(tmp_path / "c2")})
  np.testing.assert_array_equal(ds.x_train, ref.x_train)
  np.testing.assert_array_equal(ds.y_test, ref.y_test)
  assert list((tmp_path / "cache").glob("*/local_mnist/1.0.0/dataset_info.json"))  # built
  c = linear_phase.get_config("mnist_mlp,quick")
  c.dataset.update({k: v for k, v in cfg.items() if k != "name"})
  c.progress = False
  s = linear_phase.run(c, str(tmp_path / "run"))
  assert s["dataset"] == "mnist" and s["identity"]["config"]["dataset"]["data_dir"] == uri
  assert s["test_acc_end"]["mean"] > 0.8  # it learned from the bucket's data
  with pytest.raises(ValueError, match=r"^tfds_dir="):
    datasets.get_dataset({**cfg, "tfds_dir": f"{gcs_bucket}/cache"})
  tfds_images.clear_cache()


# ----------------------------------------------------------------------------- CIFAR-10 (mock)


def test_cifar10_mock(mock_tfds, tmp_path):
  tfds = mock_tfds
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
    base_cfg = {"name": "cifar10", "tfds_dir": str(tmp_path)}
    full = datasets.get_dataset({**base_cfg, "classes": "all"})
    grouped = datasets.get_dataset({**base_cfg, "classes": [[0, 1, 2], [3, 4], [9]]})
  assert full.x_train.shape == (64, 32, 32, 3) and full.x_test.shape == (64, 32, 32, 3)
  assert full.x_train.dtype == np.float32 and 0 <= full.x_train.min() <= full.x_train.max() <= 1
  assert full.num_classes == 10 and grouped.num_classes == 3
  table = np.array([0, 0, 0, 1, 1, -1, -1, -1, -1, 2])
  for x, y, gx, gy in ((full.x_train, full.y_train, grouped.x_train, grouped.y_train),
                       (full.x_test, full.y_test, grouped.x_test, grouped.y_test)):
    keep = table[y] >= 0
    np.testing.assert_array_equal(gy, table[y][keep])
    np.testing.assert_array_equal(gx, x[keep])
