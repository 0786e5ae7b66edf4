"""Image datasets (MNIST, Fashion-MNIST, CIFAR-10) read through TFDS without TensorFlow.

Whole splits are read with ``tfds.data_source`` (array_record files, batched reads) and stacked
into numpy; images become float32 NHWC in [0, 1], labels int32. Field ``classes`` regroups the
10 classes (default ``"first5_vs_last5"``: label = int(class > 4), as in the paper's Figure 4).

Two ways to get the files:

* ``data_dir=None`` (default): the normal TFDS dataset (``tfds.data_source(name,
  download=True)``, stored under ``tfds_dir`` or the TFDS default ``~/tensorflow_datasets``).
  Needs internet the first time and, for that one-off preparation, TensorFlow (TFDS encodes
  the images to PNG with it); reading an already prepared array_record copy needs neither.
* ``data_dir="<folder>"`` (MNIST / Fashion-MNIST only): a folder with the four original IDX
  ``.gz`` files. A TFDS dataset is built from them once (see :mod:`local_idx`) under
  ``tfds_dir`` (default ``$SGD_PHASES_CACHE`` or ``~/.cache/sgd_phases/tfds``) and read back with
  ``tfds.data_source``. Offline; this is what the tests use.

Synopsis::

    from sgd_phases import datasets
    ds = datasets.get_dataset({"name": "mnist", "data_dir": "../shared/data/mnist",
                               "train_size": 10_000, "label_noise": 0.1})
    ds.x_train.shape, ds.num_classes  # (10000, 28, 28, 1), 2

Raw uint8 splits are kept in a small in-process LRU cache keyed by (name, data_dir, tfds_dir);
:func:`clear_cache` empties it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from ml_collections import config_dict

from sgd_phases import io_lib
from sgd_phases.datasets import base

# name -> (image shape, number of original classes, local IDX files supported)
IMAGE_DATASETS: dict[str, tuple[tuple[int, int, int], int, bool]] = {
    "mnist": ((28, 28, 1), 10, True),
    "fashion_mnist": ((28, 28, 1), 10, True),
    "cifar10": ((32, 32, 3), 10, False),
}
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
  # None: the normal TFDS dataset (downloads once). Else (mnist, fashion_mnist only) a folder
  # holding the 4 original IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
  # t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), turned into a TFDS dataset offline.
  c.data_dir = config_dict.placeholder(str)
  # TFDS data folder. With data_dir: cache for the local build (None = $SGD_PHASES_CACHE or
  # ~/.cache/sgd_phases/tfds). Without: where TFDS keeps the download (None = TFDS default).
  c.tfds_dir = config_dict.placeholder(str)
  return c


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
  return tfds


def _read_split(source, image_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a whole TFDS data source into (uint8 [N, H, W, C], int64 [N])."""
  n = len(source)
  images = np.empty((n, *image_shape), dtype=np.uint8)
  labels = np.empty((n,), dtype=np.int64)
  for start in range(0, n, _READ_BATCH):
    stop = min(n, start + _READ_BATCH)
    records = source.__getitems__(list(range(start, stop)))
    images[start:stop] = np.stack([np.asarray(r["image"]) for r in records])
    labels[start:stop] = [int(np.asarray(r["label"])) for r in records]
  return images, labels


@functools.lru_cache(maxsize=4)
def load_raw(name: str, data_dir: str | None, tfds_dir: str | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """All train/test images (uint8 NHWC) and labels (int64) of an image dataset (cached)."""
  tfds = _tfds()
  image_shape = IMAGE_DATASETS[name][0]
  if data_dir is not None:
    from sgd_phases.datasets import local_idx  # pylint: disable=g-import-not-at-top
    root, builder_name = local_idx.prepare(
        name, data_dir, tfds_dir if tfds_dir is not None else default_cache_dir())
    kwargs = dict(data_dir=str(root), download=False)
  else:
    builder_name, kwargs = name, dict(data_dir=tfds_dir, download=True)
  out = []
  for split in ("train", "test"):
    source = tfds.data_source(builder_name, split=split, **kwargs)
    out.extend(_read_split(source, image_shape))
  return tuple(out)


def clear_cache() -> None:
  """Forgets the raw splits held in memory."""
  load_raw.cache_clear()


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


def build_image_dataset(config: Mapping[str, Any]) -> base.Dataset:
  """Builds an image dataset from a resolved config (see :func:`default_config`)."""
  name = config["name"]
  num_original = IMAGE_DATASETS[name][1]
  groups = base.parse_classes(config["classes"], num_original)  # validate before any I/O
  base.check_label_noise(config, len(groups))
  data_dir = _check_path_field(config, "data_dir")
  if data_dir is not None and not IMAGE_DATASETS[name][2]:
    raise ValueError(f"data_dir={data_dir!r}: local IDX files are only supported for "
                     f"{[n for n, spec in IMAGE_DATASETS.items() if spec[2]]}, not {name!r}")
  tfds_dir = _check_path_field(config, "tfds_dir")
  if data_dir is not None and tfds_dir is not None and not io_lib.is_local(tfds_dir):
    raise ValueError(f"tfds_dir={tfds_dir!r}: with data_dir set it is where the IDX files are "
                     "built into TFDS array_record files and read back, a local folder; leave it "
                     "unset (data_dir may be a URI)")
  x_tr, y_tr, x_te, y_te = load_raw(name, data_dir, tfds_dir)
  y_tr, y_te = (base.group_classes(y, groups, num_original) for y in (y_tr, y_te))
  keep_tr, keep_te = y_tr >= 0, y_te >= 0
  if not keep_tr.all():
    x_tr, y_tr = x_tr[keep_tr], y_tr[keep_tr]
  if not keep_te.all():
    x_te, y_te = x_te[keep_te], y_te[keep_te]
  return base.finalize(config, x_tr, y_tr, x_te, y_te, num_classes=len(groups),
                       to_float=lambda x: x.astype(np.float32) / np.float32(255.0))
