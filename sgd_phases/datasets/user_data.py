"""Your data: arrays in memory (``from_arrays``) or a folder of ``.npz`` files (``npz``).

    data = datasets.from_arrays(x_train, y_train, x_test, y_test)   # num_classes: max label + 1
    results = train_lib.train(config, workdir, dataset=data)         # or experiments' run(...)
    config.dataset = data.config(label_noise=0.1)                    # the same, by hand

    # a folder with train.npz and test.npz, each holding arrays x [N, ...] and y [N]:
    --config.dataset.name=npz --config.dataset.data_dir=/data/mine

Both are identified by a content hash, the dataset field ``fingerprint`` (sha256 of the arrays'
dtypes, shapes and bytes and of K): ``from_arrays`` sets it; for ``npz`` a run fills it in from
the files when it starts (``datasets.pin``). It is part of the run identity, so a resumed run, a
cached reference or a reused sweep point never mixes two datasets: changed files are a
different run, refused or recomputed naming ``dataset.fingerprint``.

Inputs: uint8 arrays are scaled to float32 in [0, 1] (images), any other numeric dtype becomes
float32 unchanged. Labels are integers in [0, num_classes). Every common dataset field applies
(``classes`` grouping, ``train_size``/``test_size`` balanced subsampling, label noise).
Arrays given to ``from_arrays`` are held in this process, looked up by fingerprint; a config
naming arrays this process does not hold gets one error saying so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np
from ml_collections import config_dict

from sgd_phases import io_lib
from sgd_phases.datasets import base, sources

NPZ_FILES = ("train.npz", "test.npz")
_HELD: dict[str, InMemoryData] = {}  # fingerprint -> arrays given to from_arrays


@dataclasses.dataclass(frozen=True, eq=False)
class InMemoryData:
  """Arrays handed to :func:`from_arrays` (raw: before grouping, subsampling, noise)."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  fingerprint: str

  def config(self, **fields: Any) -> ml_collections.ConfigDict:
    """The dataset config of these arrays (``name="arrays"``), with ``fields`` set on it."""
    c = default_config("arrays")
    c.fingerprint = self.fingerprint
    for k, v in fields.items():
      if k not in c:
        raise ValueError(f"{k}: unknown dataset field; accepted: {sorted(c.keys())}")
      c[k] = v
    return c


def default_config(name: str) -> ml_collections.ConfigDict:
  """Defaults of ``arrays`` and ``npz``."""
  c = base.common_config(name)
  c.classes = config_dict.FieldReference("all", field_type=object)  # see tfds_images
  # sha256 of the content (16 hex digits); arrays: set by from_arrays; npz: filled in by a run
  # from the files (a value given here must match them)
  c.fingerprint = config_dict.placeholder(str)
  if name == "npz":
    c.data_dir = config_dict.placeholder(str)  # folder (or URI) with train.npz and test.npz
    c.num_classes = config_dict.placeholder(int)  # None: max label + 1 over both splits
  return c


def _check_split(x: Any, y: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x), np.asarray(y)
  if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
    raise ValueError(f"x_{split}: expected a numeric array [N, ...], got {x.dtype}{list(x.shape)}")
  if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"y_{split}: expected {x.shape[0]} integer labels (one per row of "
                     f"x_{split}), got {y.dtype}{list(y.shape)}")
  if y.size and y.min() < 0:
    raise ValueError(f"y_{split}: labels must be >= 0; found {int(y.min())}")
  if np.issubdtype(x.dtype, np.inexact):
    bad = ~np.isfinite(x)
    if bad.any():
      raise ValueError(f"x_{split}: {int(bad.sum())} values are NaN or infinite (the first in "
                       f"example {int(np.argmax(bad.reshape(len(x), -1).any(axis=1)))}); "
                       "inputs must be finite")
  return x, y.astype(np.int64)


def _fingerprint(arrays: tuple[np.ndarray, ...], num_classes: int) -> str:
  h = hashlib.sha256(f"K={num_classes}".encode())
  for a in arrays:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.data)
  return h.hexdigest()[:16]


def _checked(x_train, y_train, x_test, y_test, num_classes: int | None, field: str
             ) -> tuple[tuple[np.ndarray, ...], int]:
  x_train, y_train = _check_split(x_train, y_train, "train")
  x_test, y_test = _check_split(x_test, y_test, "test")
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(f"x_test: examples of shape {x_test.shape[1:]} differ from x_train's "
                     f"{x_train.shape[1:]}")
  inferred = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
  k = inferred if num_classes is None else num_classes
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
    raise ValueError(f"{field}={num_classes!r} must be an integer >= 2 (the labels need "
                     f">= {inferred})")
  for split, y in (("train", y_train), ("test", y_test)):
    if y.size and y.max() >= k:
      raise ValueError(f"y_{split}: label {int(y.max())} is not below {field}={k}")
  return (x_train, y_train, x_test, y_test), int(k)


def from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any,
                num_classes: int | None = None) -> InMemoryData:
  """Your arrays as a dataset: pass the result as ``train(config, workdir, dataset=...)`` or
  to an experiment's ``run``, or set ``config.dataset = data.config()``.

  Args:
    x_train, x_test: numeric arrays [N, ...] (images NHWC; uint8 is scaled to [0, 1]).
    y_train, y_test: integer labels [N] in [0, num_classes).
    num_classes: K (None: the largest label + 1).
  """
  arrays, k = _checked(x_train, y_train, x_test, y_test, num_classes, "num_classes")
  data = InMemoryData(*arrays, num_classes=k, fingerprint=_fingerprint(arrays, k))
  _HELD[data.fingerprint] = data
  return data


def _read_npz(data_dir: str, num_classes: int | None) -> tuple[tuple[np.ndarray, ...], int]:
  folder = io_lib.path(data_dir, "data_dir")
  missing = [f for f in NPZ_FILES if not (folder / f).exists()]
  if missing:
    raise ValueError(f"data_dir={data_dir!r} lacks {missing} (each holding arrays x and y)")
  out = []
  for f in NPZ_FILES:
    try:  # numpy reports a bad file as OSError, ValueError (pickle), BadZipFile, EOFError, ...
      with np.load(io.BytesIO((folder / f).read_bytes()), allow_pickle=False) as z:
        files = sorted(z.files)
        arrays = [z[k] for k in ("x", "y") if k in files]
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"data_dir={data_dir!r}: {f} is not a readable .npz file of numeric "
                       f"arrays ({type(e).__name__}: {e})") from e
    if len(arrays) != 2:
      raise ValueError(f"data_dir={data_dir!r}: {f} holds {files}; expected arrays x and y")
    out += arrays
  return _checked(*out, num_classes, "num_classes")


@sources.cached_by_stamp(maxsize=2)
def _load_npz(data_dir: str, num_classes: int | None
              ) -> tuple[tuple[np.ndarray, ...], int, str]:
  arrays, k = _read_npz(data_dir, num_classes)
  return arrays, k, _fingerprint(arrays, k)


def _npz(config: Mapping[str, Any]) -> tuple[tuple[np.ndarray, ...], int, str]:
  """The arrays of ``data_dir``/train.npz and test.npz, K and their fingerprint."""
  data_dir = config.get("data_dir")
  if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir):
    raise ValueError(f"data_dir={data_dir!r}: name=npz needs the folder holding {NPZ_FILES}")
  data_dir = os.fspath(data_dir)
  if io_lib.is_local(io_lib.check_location(data_dir, "data_dir")):
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  return _load_npz(data_dir, config.get("num_classes"),
                   files=[os.path.join(data_dir, f) for f in NPZ_FILES])


def fingerprint(config: Mapping[str, Any]) -> str:
  """The content fingerprint of ``arrays`` (set by :func:`from_arrays`; refused when this
  process does not hold them) or ``npz`` (from the files)."""
  return _held(config).fingerprint if config["name"] == "arrays" else _npz(config)[2]


def _finish(config: Mapping[str, Any], arrays: tuple[np.ndarray, ...], k: int) -> base.Dataset:
  groups = base.parse_classes(config["classes"], k)
  return base.group_and_finalize(config, *arrays, groups, k, to_float=base.to_unit_float)


def _held(config: Mapping[str, Any]) -> InMemoryData:
  fp = config.get("fingerprint")
  if fp not in _HELD:
    raise ValueError(f"fingerprint={fp!r}: no arrays with this fingerprint were given to "
                     "datasets.from_arrays in this process (name=arrays is for arrays in "
                     "memory; use name=npz for files)")
  return _HELD[fp]


def build_arrays(config: Mapping[str, Any]) -> base.Dataset:
  """The ``arrays`` dataset: the arrays given to :func:`from_arrays` with this fingerprint."""
  d = _held(config)
  return _finish(config, (d.x_train, d.y_train, d.x_test, d.y_test), d.num_classes)


def build_npz(config: Mapping[str, Any]) -> base.Dataset:
  """The ``npz`` dataset: ``data_dir``/train.npz and test.npz."""
  arrays, k, _ = _npz(config)
  return _finish(config, arrays, k)
