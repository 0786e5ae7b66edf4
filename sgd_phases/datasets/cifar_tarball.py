"""CIFAR-10 from the original tarballs (offline, no TFDS, no TensorFlow).

The python version ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html)
holds ``cifar-10-batches-py/`` with five training batches ``data_batch_1`` ... ``data_batch_5``
and ``test_batch``: Python pickles of a dict with ``data`` (uint8 [10000, 3072]: 1024 red, then
1024 green, then 1024 blue values of a 32x32 image, rows first) and ``labels`` (10000 ints in
0..9); written by Python 2, so its keys are byte strings. ``batches.meta`` holds the class
names. The binary version ``cifar-10-binary.tar.gz`` (what TFDS downloads) holds
``cifar-10-batches-bin/`` with ``data_batch_1.bin`` ... ``test_batch.bin``: records of one
label byte and the 3072 image bytes in the same order.

    x_train, y_train, x_test, y_test = cifar_tarball.read("~/data")   # uint8 NHWC, int64
    *arrays, fingerprint = cifar_tarball.load("~/data")               # cached, + content hash
    cifar_tarball.write(path, x_train, y_train, x_test, y_test)       # a file in that format

``read`` accepts the folder holding a tarball, a tarball itself, or an extracted batches folder.
Pickles are never trusted to build objects: the unpickler admits only what these files contain
(dicts, lists, strings, numpy dtypes and arrays), and an array is recorded as its declared shape,
dtype and the byte string it is to be built from; it is materialised only when that string holds
exactly shape x itemsize bytes, so a tampered file can neither run code nor make the reader
allocate memory that the file does not fill. The fingerprint hashes the six batches' bytes (the
same for a tarball and its extracted folder).
"""

from __future__ import annotations

import codecs
import io
import math
import os
import pickle
import tarfile
from typing import Any

import numpy as np
from etils import epath

from sgd_phases import io_lib
from sgd_phases.datasets import sources

TARBALL = "cifar-10-python.tar.gz"
BINARY_TARBALL = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCHES = (*TRAIN_BATCHES, TEST_BATCH)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
_RECORD = 1 + 3072  # one record of the binary version: label byte, then the image


class _DeclaredArray:
  """What a pickle says about an ndarray (``_reconstruct``, then its state): nothing is
  allocated until :func:`_materialise` checks the declared size against the bytes given."""

  def __init__(self, *args: Any):
    del args  # ndarray subtype, placeholder shape (0,), b"b": nothing to allocate
    self.state = None

  def __setstate__(self, state: Any) -> None:
    self.state = state


def _materialise(obj: Any, what: str) -> Any:
  """``obj`` with every :class:`_DeclaredArray` replaced by the array its bytes hold."""
  if isinstance(obj, dict):
    return {k: _materialise(v, what) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_materialise(v, what) for v in obj]
  if not isinstance(obj, _DeclaredArray):
    return obj
  state = obj.state
  if isinstance(state, tuple) and len(state) == 5:
    state = state[1:]  # (version, shape, dtype, fortran, data)
  if not (isinstance(state, tuple) and len(state) == 4):
    raise ValueError(f"data_dir: {what} declares an array without its data")
  shape, dtype, fortran, raw = state
  if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)
          and isinstance(dtype, np.dtype) and not dtype.hasobject and isinstance(raw, bytes)):
    raise ValueError(f"data_dir: {what} declares an array {shape!r} of {dtype!r} that is not "
                     "a plain numeric array")
  if math.prod(shape) * dtype.itemsize != len(raw):
    raise ValueError(f"data_dir: {what} declares an array of shape {shape} ({dtype}) but holds "
                     f"{len(raw)} bytes of data for it")
  return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _scalar(dtype: np.dtype, raw: bytes) -> Any:
  if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, bytes) or (
      len(raw) != dtype.itemsize):
    raise pickle.UnpicklingError("a numpy scalar that is not plain bytes of its dtype")
  return np.frombuffer(raw, dtype=dtype)[0]


_ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _DeclaredArray,
            ("numpy._core.multiarray", "_reconstruct"): _DeclaredArray,
            ("numpy", "ndarray"): _DeclaredArray, ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,
            ("numpy.core.multiarray", "scalar"): _scalar,
            ("numpy._core.multiarray", "scalar"): _scalar}


class _ArraysOnly(pickle.Unpickler):
  def find_class(self, module: str, name: str):
    if (module, name) not in _ALLOWED:
      raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
    return _ALLOWED[module, name]


def _check(data: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
  if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or (
      labels.shape != (data.shape[0],)) or labels.size and not (
          0 <= labels.min() and labels.max() < 10):
    raise ValueError(f"data_dir: {what} holds data {data.dtype}{list(data.shape)} and "
                     f"{labels.size} labels; expected uint8 [N, 3072] and N labels in 0..9")
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_batch(raw: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, 32, 32, 3], int64 [N]) from one pickled batch."""
  try:
    d = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
  except Exception as e:  # pickle raises many types on a corrupt file
    raise ValueError(f"data_dir: {what} is not a CIFAR-10 python batch ({e})") from e
  d = _materialise(d, what)
  d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()} if isinstance(
      d, dict) else {}
  if "data" not in d or "labels" not in d:
    raise ValueError(f"data_dir: {what} lacks the 'data' and 'labels' entries of a CIFAR-10 "
                     "batch")
  labels = d["labels"]
  if not (isinstance(labels, list) and all(isinstance(v, (int, np.integer)) for v in labels)):
    raise ValueError(f"data_dir: {what}: 'labels' is not a list of ints")
  if not isinstance(d["data"], np.ndarray):
    raise ValueError(f"data_dir: {what}: 'data' is not an array")
  return _check(d["data"], np.asarray(labels, dtype=np.int64), what)


def _load_binary_batch(raw: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, 32, 32, 3], int64 [N]) from one batch of the binary version."""
  if len(raw) % _RECORD:
    raise ValueError(f"data_dir: {what} holds {len(raw)} bytes, not a whole number of "
                     f"{_RECORD}-byte records")
  records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
  return _check(records[:, 1:], records[:, 0].astype(np.int64), what)


def _names(binary: bool) -> dict[str, str]:
  """Batch -> its file name in the python or the binary version."""
  return {n: f"{n}.bin" if binary else n for n in BATCHES}


def _locate(location: epath.Path) -> tuple[epath.Path | dict[str, epath.Path], bool]:
  """The tarball at ``location`` (a file, or the one in the folder), or the batch files of an
  extracted folder and whether they are the binary version."""
  if location.is_dir():
    tarballs = [location / t for t in (TARBALL, BINARY_TARBALL) if (location / t).exists()]
    if tarballs:
      return tarballs[0], False
    for folder in (location / FOLDER, location / "cifar-10-batches-bin", location):
      for binary in (False, True):
        files = {n: folder / f for n, f in _names(binary).items()}
        if all(f.exists() for f in files.values()):
          return files, binary
    raise ValueError(f"data_dir={os.fspath(location)!r} holds neither {TARBALL} nor "
                     f"{BINARY_TARBALL} nor the batches {list(BATCHES)} of {FOLDER}/")
  return location, False


def _members(found: epath.Path | dict[str, epath.Path], binary: bool
             ) -> tuple[dict[str, bytes], bool]:
  """Batch name -> its bytes and whether they are the binary version."""
  if isinstance(found, dict):
    return {n: f.read_bytes() for n, f in found.items()}, binary
  try:
    with tarfile.open(fileobj=io.BytesIO(found.read_bytes()), mode="r:*") as tar:
      members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
      binary = "test_batch.bin" in members
      names = _names(binary)
      missing = [f for f in names.values() if f not in members]
      if missing:
        raise ValueError(f"data_dir: {os.fspath(found)} lacks the batches {missing}")
      return {n: tar.extractfile(members[f]).read() for n, f in names.items()}, binary
  except (tarfile.TarError, OSError, EOFError) as e:
    raise ValueError(f"data_dir: {os.fspath(found)} is not a readable {TARBALL} or "
                     f"{BINARY_TARBALL} ({e})") from e


@sources.cached_by_stamp(maxsize=1)
def _load(data_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
  raw, binary = _members(*_locate(epath.Path(data_dir)))
  batch = _load_binary_batch if binary else _load_batch
  train = [batch(raw[n], n) for n in TRAIN_BATCHES]
  x_test, y_test = batch(raw[TEST_BATCH], TEST_BATCH)
  return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
          x_test, y_test, sources.digest(p for n in BATCHES for p in (n, raw[n])))


def load(data_dir: str | os.PathLike
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
  """:func:`read`'s arrays and the content fingerprint of the batches (cached in memory until
  the files change)."""
  location = epath.Path(data_dir)
  if not location.exists():
    raise ValueError(f"data_dir={os.fspath(data_dir)!r} does not exist")
  found, _ = _locate(location)
  return _load(os.fspath(location),
               files=list(found.values()) if isinstance(found, dict) else [found])


def read(data_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """All CIFAR-10 train/test images (uint8 [N, 32, 32, 3]) and labels (int64), in file order.

  ``data_dir``: the folder holding ``cifar-10-python.tar.gz`` or ``cifar-10-binary.tar.gz``,
  a tarball, or an extracted batches folder (local path or URI). Raises ValueError naming
  ``data_dir`` on anything else.
  """
  return load(data_dir)[:4]


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
