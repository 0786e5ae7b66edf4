"""CIFAR-10 from the original ``cifar-10-python.tar.gz`` (offline, no TFDS, no TensorFlow).

The tarball (https://www.cs.toronto.edu/~kriz/cifar.html) holds ``cifar-10-batches-py/`` with
five training batches ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``: Python pickles
of a dict with ``data`` (uint8 [10000, 3072]: 1024 red, then 1024 green, then 1024 blue values
of a 32x32 image, rows first) and ``labels`` (10000 ints in 0..9); written by Python 2, so its
keys are byte strings. ``batches.meta`` holds the class names.

    x_train, y_train, x_test, y_test = cifar_tarball.read("~/data")   # uint8 NHWC, int64
    cifar_tarball.write(path, x_train, y_train, x_test, y_test)       # a file in that format

``read`` accepts the folder holding the tarball, the tarball itself, or the extracted
``cifar-10-batches-py`` folder. Pickles are loaded by an unpickler that admits only what these
files contain (dicts, lists, strings and numpy arrays), so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
from etils import epath

from sgd_phases import io_lib

TARBALL = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _ArraysOnly(pickle.Unpickler):
  def find_class(self, module: str, name: str):
    if (module, name) not in _ALLOWED:
      raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
    return super().find_class(module, name)


def _load_batch(raw: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, 32, 32, 3], int64 [N]) from one pickled batch."""
  try:
    d = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
  except Exception as e:  # pickle raises many types on a corrupt file
    raise ValueError(f"data_dir: {what} is not a CIFAR-10 python batch ({e})") from e
  d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()} if isinstance(
      d, dict) else {}
  if "data" not in d or "labels" not in d:
    raise ValueError(f"data_dir: {what} lacks the 'data' and 'labels' entries of a CIFAR-10 "
                     "batch")
  data, labels = np.asarray(d["data"]), np.asarray(d["labels"], dtype=np.int64)
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or (
      labels.shape != (data.shape[0],)) or labels.size and not (
          0 <= labels.min() and labels.max() < 10):
    raise ValueError(f"data_dir: {what} holds data {data.dtype}{list(data.shape)} and "
                     f"{labels.size} labels; expected uint8 [N, 3072] and N labels in 0..9")
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _members(location: epath.Path) -> dict[str, bytes]:
  """Batch name -> pickled bytes, from a tarball or an extracted folder."""
  names = (*TRAIN_BATCHES, TEST_BATCH)
  if location.is_dir() and (location / TARBALL).exists():
    location = location / TARBALL
  if location.is_dir():
    folder = location / FOLDER if (location / FOLDER).is_dir() else location
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
      raise ValueError(f"data_dir={os.fspath(location)!r} holds neither {TARBALL} nor the "
                       f"batches {missing} of {FOLDER}/")
    return {n: (folder / n).read_bytes() for n in names}
  try:
    with tarfile.open(fileobj=io.BytesIO(location.read_bytes()), mode="r:*") as tar:
      found = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
      missing = [n for n in names if n not in found]
      if missing:
        raise ValueError(f"data_dir: {os.fspath(location)} lacks the batches {missing}")
      return {n: tar.extractfile(found[n]).read() for n in names}
  except (tarfile.TarError, OSError, EOFError) as e:
    raise ValueError(f"data_dir: {os.fspath(location)} is not a readable {TARBALL} ({e})") from e


def read(data_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """All CIFAR-10 train/test images (uint8 [N, 32, 32, 3]) and labels (int64), in file order.

  ``data_dir``: the folder holding ``cifar-10-python.tar.gz``, the tarball, or the extracted
  folder (local path or URI). Raises ValueError naming ``data_dir`` on anything else.
  """
  location = epath.Path(data_dir)
  if not location.exists():
    raise ValueError(f"data_dir={os.fspath(data_dir)!r} does not exist")
  raw = _members(location)
  train = [_load_batch(raw[n], n) for n in TRAIN_BATCHES]
  x_test, y_test = _load_batch(raw[TEST_BATCH], TEST_BATCH)
  return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
          x_test, y_test)


def _batch_bytes(x: np.ndarray, y: np.ndarray, label: str) -> bytes:
  planes = np.ascontiguousarray(np.asarray(x, np.uint8).transpose(0, 3, 1, 2)).reshape(-1, 3072)
  d = {b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": planes,
       b"filenames": [f"{i:05d}.png".encode() for i in range(len(y))]}
  return pickle.dumps(d, protocol=2)


def write(path: str | os.PathLike, x_train: np.ndarray, y_train: np.ndarray,
          x_test: np.ndarray, y_test: np.ndarray) -> None:
  """Writes uint8 [N, 32, 32, 3] images and labels as a ``cifar-10-python.tar.gz`` in the
  original layout (training examples split over the five batches): for tests, and for data
  of that shape that should be read like CIFAR-10."""
  tar_bytes = io.BytesIO()
  with tarfile.open(fileobj=tar_bytes, mode="w:gz") as tar:
    parts = np.array_split(np.arange(len(y_train)), len(TRAIN_BATCHES))
    files = {n: _batch_bytes(x_train[i], y_train[i], f"training batch {k + 1} of 5")
             for k, (n, i) in enumerate(zip(TRAIN_BATCHES, parts))}
    files[TEST_BATCH] = _batch_bytes(x_test, y_test, "testing batch 1 of 1")
    files["batches.meta"] = pickle.dumps(
        {b"label_names": [c.encode() for c in CLASS_NAMES], b"num_cases_per_batch": 10000,
         b"num_vis": 3072}, protocol=2)
    for name, data in files.items():
      info = tarfile.TarInfo(f"{FOLDER}/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  io_lib.write_bytes(path, tar_bytes.getvalue())
