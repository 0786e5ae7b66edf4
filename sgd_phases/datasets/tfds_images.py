"""Image datasets read through TFDS without TensorFlow: MNIST, Fashion-MNIST, CIFAR-10, and any
TFDS image classification dataset by name (``tfds:<name>[/<config>]``).

Whole splits are read with ``tfds.data_source`` (array_record files, batched reads) and stacked
into numpy; images become float32 NHWC in [0, 1], labels int32. Field ``classes`` regroups the
classes (default ``"first5_vs_last5"`` for the three built-in names: label = int(class > 4), as
in the paper's Figure 4; ``"all"`` for ``tfds:`` names).

Where the files come from:

* ``data_dir=None`` (default): a TFDS copy already prepared under ``tfds_dir`` (the TFDS default
  ``~/tensorflow_datasets`` when None) is read as it is. Otherwise the original files that
  TFDS's own builder downloads (the four IDX files; ``cifar-10-binary.tar.gz``) are fetched once
  with TFDS's download manager, checked against TFDS's registered checksums, into
  ``<tfds_dir>/downloads`` (:mod:`originals`), and read like a ``data_dir`` below: no
  TensorFlow, which TFDS's own preparation needs. Needs internet the first time.
* ``data_dir="<folder>"``, MNIST / Fashion-MNIST: a folder with the four original IDX ``.gz``
  files. A TFDS dataset is built from them once (see :mod:`local_idx`) under ``tfds_dir``
  (default ``$SGD_PHASES_CACHE`` or ``~/.cache/sgd_phases/tfds``) and read back with
  ``tfds.data_source``. Offline; this is what the tests use.
* ``data_dir="<folder>"``, CIFAR-10: the folder holding the original ``cifar-10-python.tar.gz``
  or ``cifar-10-binary.tar.gz`` (or that file, or its extracted batches), read directly
  (:mod:`cifar_tarball`).
* ``tfds:<name>[/<config>]`` (e.g. ``tfds:svhn_cropped``, ``tfds:cifar100``): any TFDS dataset
  whose examples hold a fixed-shape image and a ``ClassLabel``, under the keys ``image_key`` /
  ``label_key`` of the splits ``train_split`` / ``test_split``; K is the label's class count.
  A dataset already prepared under ``tfds_dir`` is read without downloading.

Synopsis::

    from sgd_phases import datasets
    ds = datasets.get_dataset({"name": "mnist", "data_dir": "../shared/data/mnist",
                               "train_size": 10_000, "label_noise": 0.1})
    ds.x_train.shape, ds.num_classes  # (10000, 28, 28, 1), 2

Raw splits are kept in a small in-process cache keyed by where they came from (and, for local
files, their size and mtime); :func:`clear_cache` empties it. Every source has a content
fingerprint (:func:`fingerprint`, recorded by ``datasets.pin``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from etils import epath
from ml_collections import config_dict

from sgd_phases import io_lib
from sgd_phases.datasets import base, sources

# name -> (image shape, number of original classes)
IMAGE_DATASETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
}
TFDS_PREFIX = "tfds:"  # any TFDS image classification dataset: tfds:<name>[/<config>]
_READ_BATCH = 10_000  # records decoded per data-source call (bounds the list-of-dicts overhead)


def default_cache_dir() -> Path:
  """Where local IDX builds go: ``$SGD_PHASES_CACHE`` or ``~/.cache/sgd_phases/tfds``."""
  env = os.environ.get("SGD_PHASES_CACHE")
  return Path(env).expanduser() if env else Path.home() / ".cache" / "sgd_phases" / "tfds"


def default_config(name: str) -> ml_collections.ConfigDict:
  """Defaults for one of the image datasets."""
  c = base.common_config(name)
  # 'all' (K=10), 'first5_vs_last5' (label = class > 4, K=2) or explicit class groups such as
  # [[2, 3, 4, 5, 6, 7], [0, 1, 8, 9]] (group i -> label i; classes in no group are dropped).
  c.classes = config_dict.FieldReference("first5_vs_last5", field_type=object)
  # None: the normal TFDS dataset (downloads once). Else, offline: mnist / fashion_mnist: a
  # folder holding the 4 original IDX files (train-images-idx3-ubyte.gz,
  # train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), turned
  # into a TFDS dataset; cifar10: the folder holding cifar-10-python.tar.gz (or that file).
  c.data_dir = config_dict.placeholder(str)
  # TFDS data folder. With data_dir: cache for the local build (None = $SGD_PHASES_CACHE or
  # ~/.cache/sgd_phases/tfds). Without: where TFDS keeps the download (None = TFDS default).
  c.tfds_dir = config_dict.placeholder(str)
  c.fingerprint = _fingerprint_field()
  return c


def _fingerprint_field():
  # the content's identity (16 hex digits), filled in by a run (datasets.pin): the hash of the
  # files read, or a TFDS copy's name/version/splits; a value given here must match the data
  return config_dict.placeholder(str)


def is_tfds_name(name: Any) -> bool:
  """Whether ``name`` is ``tfds:<name>[/<config>]``."""
  return isinstance(name, str) and name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX)


def default_config_tfds(name: str) -> ml_collections.ConfigDict:
  """Defaults for ``tfds:<name>[/<config>]`` (any TFDS image classification dataset)."""
  c = base.common_config(name)
  c.classes = config_dict.FieldReference("all", field_type=object)  # as for the built-ins
  c.tfds_dir = config_dict.placeholder(str)  # TFDS data folder (None = the TFDS default)
  c.train_split = "train"  # TFDS split F is trained on (any split spec, e.g. "train[:80%]")
  c.test_split = "test"  # TFDS split F is scored on
  c.image_key = "image"  # feature holding the (fixed-shape) image
  c.label_key = "label"  # feature holding the ClassLabel
  c.fingerprint = _fingerprint_field()
  return c


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
  return tfds


def _read_split(source, image_key: str, label_key: str, what: str
                ) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a whole TFDS data source into (images [N, ...], int64 labels [N])."""
  n = len(source)
  images, labels = None, np.empty((n,), dtype=np.int64)
  for start in range(0, n, _READ_BATCH):
    stop = min(n, start + _READ_BATCH)
    records = source.__getitems__(list(range(start, stop)))
    try:
      batch = np.stack([np.asarray(r[image_key]) for r in records])
    except ValueError as e:
      raise ValueError(f"{what}: images of different shapes ({e}); only fixed-shape images "
                       "are supported") from None
    if images is None:
      images = np.empty((n, *batch.shape[1:]), dtype=batch.dtype)
    images[start:stop] = batch
    labels[start:stop] = [int(np.asarray(r[label_key])) for r in records]
  return images, labels


Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]  # x/y train, x/y test, fp


@sources.cached_by_stamp(maxsize=2)
def _load_idx(name: str, files: tuple[tuple[str, str], ...], cache_dir: str) -> Raw:
  """MNIST-format IDX files -> the local TFDS build (made once) -> arrays, fingerprint."""
  from sgd_phases.datasets import local_idx  # pylint: disable=g-import-not-at-top
  root, builder_name, fp = local_idx.prepare(
      name, {k: epath.Path(v) for k, v in files}, cache_dir)
  return (*_read_splits(builder_name, f"dataset {name!r}", data_dir=str(root), download=False),
          fp)


def _idx(name: str, files: dict[str, epath.Path], cache_dir: str) -> Raw:
  return _load_idx(name, tuple(sorted((k, os.fspath(v)) for k, v in files.items())), cache_dir,
                   files=list(files.values()))


def _tfds_fingerprint(name: str, tfds_dir: str | None, *fields: str) -> str:
  """A TFDS dataset's identity: its full name (name/config/version), the splits and features
  read, and its prepared ``dataset_info.json`` (split sizes, source checksums) where present."""
  builder = _tfds().builder(name, data_dir=tfds_dir)
  info = epath.Path(builder.data_dir) / "dataset_info.json"
  return sources.digest(["tfds", builder.info.full_name, *fields,
                         info.read_bytes() if info.exists() else b""])


@functools.lru_cache(maxsize=2)
def _load_default(name: str, tfds_dir: str | None, cache_dir: str) -> Raw:
  """A built-in dataset without ``data_dir``: TFDS's copy if one is prepared under ``tfds_dir``,
  else TFDS's original files, downloaded once and read without TensorFlow."""
  from sgd_phases.datasets import cifar_tarball, local_idx, originals  # pylint: disable=g-import-not-at-top
  if _tfds().builder(name, data_dir=tfds_dir).is_prepared():
    out = _read_splits(name, f"dataset {name!r}", data_dir=tfds_dir, download=False)
    return (*out, _tfds_fingerprint(name, tfds_dir, "train", "test", "image", "label"))
  files = originals.download(name, tfds_dir)
  if name == "cifar10":
    return cifar_tarball.load(files["cifar-10-binary.tar.gz"])
  return _idx(name, {k: files[f] for k, f in local_idx.IDX_FILES.items()}, cache_dir)


def load_raw(name: str, data_dir: str | None, tfds_dir: str | None) -> Raw:
  """All train/test images (uint8 NHWC), labels (int64) and the content fingerprint of a
  built-in image dataset (cached in memory until the files change)."""
  cache_dir = tfds_dir if tfds_dir is not None else str(default_cache_dir())
  if data_dir is None:
    return _load_default(name, tfds_dir, cache_dir)
  if name == "cifar10":
    from sgd_phases.datasets import cifar_tarball  # pylint: disable=g-import-not-at-top
    return cifar_tarball.load(data_dir)
  from sgd_phases.datasets import local_idx  # pylint: disable=g-import-not-at-top
  return _idx(name, local_idx.idx_files(data_dir), cache_dir)


def _read_splits(name: str, what: str, **kwargs) -> list[np.ndarray]:
  """x_train, y_train, x_test, y_test of TFDS dataset ``name`` (``image`` and ``label``), read
  with ``tfds.data_source(name, split, **kwargs)``."""
  out = []
  for split in ("train", "test"):
    out.extend(_read_split(_tfds().data_source(name, split=split, **kwargs), "image", "label",
                           what))
  return out


@functools.lru_cache(maxsize=2)
def load_tfds(name: str, tfds_dir: str | None, splits: tuple[str, str], image_key: str,
              label_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, str]:
  """Train/test images and labels of TFDS dataset ``name``, its number of classes and its
  fingerprint (cached). Raises ValueError naming the field that does not fit the dataset."""
  tfds = _tfds()
  out = []
  for field, split in zip(("train_split", "test_split"), splits):
    try:
      source = tfds.data_source(name, split=split, data_dir=tfds_dir, download=True)
    except Exception as e:  # TFDS raises many types: unknown name, split, failed download
      if split in str(e) and "split" in str(e).lower():
        raise ValueError(f"{field}={split!r}: not a split of TFDS dataset {name!r} ({e})") from e
      raise ValueError(f"name='{TFDS_PREFIX}{name}': TFDS cannot provide it "
                       f"({type(e).__name__}: {e})") from e
    features = source.dataset_info.features
    for key, value in (("image_key", image_key), ("label_key", label_key)):
      if value not in features:
        raise ValueError(f"{key}={value!r}: TFDS dataset {name!r} has the features "
                         f"{sorted(features.keys())}")
    num_classes = getattr(features[label_key], "num_classes", None)
    if not num_classes:
      raise ValueError(f"label_key={label_key!r}: {type(features[label_key]).__name__} is not "
                       f"a ClassLabel of TFDS dataset {name!r}")
    out.extend(_read_split(source, image_key, label_key, f"TFDS dataset {name!r}"))
  return (*out, int(num_classes),
          _tfds_fingerprint(name, tfds_dir, *splits, image_key, label_key))


def clear_cache() -> None:
  """Forgets the raw splits held in memory."""
  _load_default.cache_clear()
  _load_idx.cache_clear()
  load_tfds.cache_clear()


def _check_path_field(config: Mapping[str, Any], field: str) -> str | None:
  """A local path made absolute, or a URI (``gs://bucket/x``) left exactly as given."""
  value = config.get(field)
  if value is None:
    return None
  if not isinstance(value, (str, os.PathLike)) or not str(value):
    raise ValueError(f"{field}={value!r} must be a path or None")
  if not io_lib.is_local(io_lib.check_location(value, field)):
    return os.fspath(value)
  return str(Path(value).expanduser().resolve())


def _raw(config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                               int, str]:
  """Validates a resolved config (before any I/O) and loads its raw splits: x/y train, x/y
  test, the number of original classes and the content fingerprint."""
  name = config["name"]
  if is_tfds_name(name):
    for field in ("train_split", "test_split", "image_key", "label_key"):
      if not isinstance(config[field], str) or not config[field]:
        raise ValueError(f"{field}={config[field]!r} must be a non-empty string")
    return load_tfds(name[len(TFDS_PREFIX):], _check_path_field(config, "tfds_dir"),
                     (config["train_split"], config["test_split"]), config["image_key"],
                     config["label_key"])
  num_original = IMAGE_DATASETS[name][1]
  groups = base.parse_classes(config["classes"], num_original)
  base.check_label_noise(config, len(groups))
  data_dir = _check_path_field(config, "data_dir")
  tfds_dir = _check_path_field(config, "tfds_dir")
  if data_dir is not None and tfds_dir is not None and not io_lib.is_local(tfds_dir) and (
      name != "cifar10"):
    raise ValueError(f"tfds_dir={tfds_dir!r}: with data_dir set it is where the IDX files are "
                     "built into TFDS array_record files and read back, a local folder; leave it "
                     "unset (data_dir may be a URI)")
  if data_dir is not None and name == "cifar10":
    tfds_dir = None  # unused: the tarball is read directly
  x_tr, y_tr, x_te, y_te, fp = load_raw(name, data_dir, tfds_dir)
  return x_tr, y_tr, x_te, y_te, num_original, fp


def fingerprint(config: Mapping[str, Any]) -> str:
  """The content fingerprint of an image dataset (``datasets.pin``): the hash of the files
  read (IDX files, CIFAR batches), or a TFDS dataset's name, version, splits, features and
  prepared ``dataset_info.json``."""
  return _raw(config)[-1]


def build_image_dataset(config: Mapping[str, Any]) -> base.Dataset:
  """Builds an image dataset from a resolved config (see :func:`default_config`)."""
  x_tr, y_tr, x_te, y_te, num_original, _ = _raw(config)
  if x_tr.shape[1:] != x_te.shape[1:]:
    raise ValueError(f"test_split={config['test_split']!r}: images {x_te.shape[1:]} differ from "
                     f"the training split's {x_tr.shape[1:]}")
  groups = base.parse_classes(config["classes"], num_original)
  return base.group_and_finalize(config, x_tr, y_tr, x_te, y_te, groups, num_original,
                                 to_float=base.to_unit_float)
