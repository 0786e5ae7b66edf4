"""TFDS builders for MNIST-format IDX files on local disk (no download, no TensorFlow).

:func:`prepare` turns the four original IDX ``.gz`` files (a folder holding them,
:func:`idx_files`, or the files TFDS's download manager fetched) into an array_record TFDS
dataset, once, under a cache folder; afterwards it is read like any TFDS dataset::

    files = local_idx.idx_files("../shared/data/mnist")     # key -> path, checked
    root, builder_name, fingerprint = local_idx.prepare("mnist", files, cache_dir)
    ds = tfds.data_source(builder_name, split="train", data_dir=root, download=False)

The builders (:class:`LocalMnist`, :class:`LocalFashionMnist`) are ordinary
``tfds.core.GeneratorBasedBuilder`` subclasses written as array_record, with the same decoded
features as TFDS ``mnist``: ``image`` uint8 (28, 28, 1) and ``label`` ClassLabel(10). The image
is stored as raw bytes (``tfds.features.Tensor``) rather than PNG: TFDS needs TensorFlow to encode
numpy arrays to PNG, and raw bytes halve build and read time. ``disable_shuffling`` keeps the
original IDX order (first MNIST train labels 5, 0, 4, 1, 9).

Cache layout: ``<cache_dir>/<fingerprint>/<builder_name>/1.0.0/`` where the fingerprint is a hash
of the four files' bytes (also the dataset's content fingerprint, ``datasets.pin``), so different
files never reuse a stale build. A build is
written under ``<cache_dir>/.tmp-<random>/`` and renamed into place when complete, so nothing
half-written is ever read; leftover ``.tmp-*`` folders from interrupted builds are ignored.
"""

from __future__ import annotations

import gzip
import inspect
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from sgd_phases import io_lib
from sgd_phases.datasets import sources

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
_VERSION = "1.0.0"


def idx_files(idx_dir: str | os.PathLike) -> dict[str, epath.Path]:
  """The four IDX files of the folder ``idx_dir`` (key of ``IDX_FILES`` -> path); one
  ValueError naming ``data_dir`` when it is not a folder holding them."""
  idx_dir = epath.Path(idx_dir)
  if io_lib.is_local(idx_dir):
    idx_dir = idx_dir.expanduser().resolve()
  if not idx_dir.is_dir():
    raise ValueError(f"data_dir={os.fspath(idx_dir)!r} is not a folder")
  missing = [f for f in IDX_FILES.values() if not (idx_dir / f).is_file()]
  if missing:
    raise ValueError(f"data_dir={os.fspath(idx_dir)!r} lacks the IDX files {missing}")
  return {key: idx_dir / f for key, f in IDX_FILES.items()}


def read_idx(path: str | os.PathLike, images: bool) -> np.ndarray:
  """Reads one gzipped IDX file (local path or URI): uint8 images [N, H, W, 1] or labels [N]."""
  try:
    raw = gzip.decompress(epath.Path(path).read_bytes())
    magic = struct.unpack(">I", raw[:4])[0]
  except (OSError, EOFError, struct.error) as e:
    raise ValueError(f"data_dir: {path} is not a readable gzipped IDX file ({e})") from e
  expected = _IMAGES_MAGIC if images else _LABELS_MAGIC
  if magic != expected:
    raise ValueError(f"data_dir: {path} has IDX magic number {magic}, expected {expected}")
  if images:
    n, h, w = struct.unpack(">III", raw[4:16])
    out = np.frombuffer(raw, dtype=np.uint8, offset=16)
    shape = (n, h, w, 1)
  else:
    (n,) = struct.unpack(">I", raw[4:8])
    out = np.frombuffer(raw, dtype=np.uint8, offset=8)
    shape = (n,)
  if out.size != int(np.prod(shape)):
    raise ValueError(f"data_dir: {path} holds {out.size} bytes of data, header says {shape}")
  return out.reshape(shape)


class _LocalIdxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MNIST-like dataset from local IDX files; ``files`` (key -> path) is only needed to build."""

  VERSION = tfds.core.Version(_VERSION)
  RELEASE_NOTES = {_VERSION: "Built from the original IDX .gz files on local disk."}
  HOMEPAGE = ""

  def __init__(self, *, files: Mapping[str, epath.Path] | None = None, **kwargs):
    self._files = files
    super().__init__(**kwargs)

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default probes the `importlib_resources` backport, which TFDS only installs on
    # Python < 3.9, and fails for builders defined in a package; the file path is all it needs.
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{type(self).__name__}: MNIST-format IDX files read from local disk.",
        features=tfds.features.FeaturesDict({
            # Raw bytes rather than TFDS mnist's PNG `Image` feature: the decoded example is the
            # same uint8 (28, 28, 1) array, but build and read are ~2x faster (no Pillow).
            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage=self.HOMEPAGE,
        disable_shuffling=True,  # keep the IDX order
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    if self._files is None:
      raise ValueError("data_dir: the IDX files are required to build this dataset")
    return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    images = read_idx(self._files[f"{split}_images"], images=True)
    labels = read_idx(self._files[f"{split}_labels"], images=False)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28, 1):
      raise ValueError(f"data_dir: {split} images {images.shape} do not match labels "
                       f"{labels.shape} or are not 28x28")
    for i in range(labels.shape[0]):
      yield i, {"image": images[i], "label": int(labels[i])}


class LocalMnist(_LocalIdxBuilder):
  """MNIST from local IDX files (TFDS name ``local_mnist``)."""

  HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"


class LocalFashionMnist(_LocalIdxBuilder):
  """Fashion-MNIST from local IDX files (TFDS name ``local_fashion_mnist``)."""

  HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"


BUILDERS: dict[str, type[_LocalIdxBuilder]] = {
    "mnist": LocalMnist, "fashion_mnist": LocalFashionMnist}


def fingerprint(files: Mapping[str, epath.Path]) -> str:
  """Short hash of the four IDX files' bytes (identifies a build in the cache and the
  dataset's content)."""
  return sources.digest(p for key in sorted(IDX_FILES)
                        for p in (IDX_FILES[key], epath.Path(files[key]).read_bytes()))


def prepare(name: str, files: Mapping[str, epath.Path], cache_dir: str | os.PathLike
            ) -> tuple[Path, str, str]:
  """Builds (once) the TFDS dataset for ``name`` from the four IDX ``files`` (key of
  ``IDX_FILES`` -> path, local or URI); returns (data_dir, builder name, fingerprint).

  ``cache_dir``, where the array_record files are built and read, is a local folder. Raises
  ValueError naming ``data_dir`` if the files are not valid IDX files.
  """
  builder_cls = BUILDERS[name]
  builder_name = builder_cls.name
  cache_dir = Path(cache_dir).expanduser()
  fp = fingerprint(files)
  root = cache_dir / fp
  final = root / builder_name / _VERSION
  if not (final / "dataset_info.json").is_file():
    build(builder_cls, files, cache_dir, final)
  return root, builder_name, fp


def build(builder_cls: type[_LocalIdxBuilder], files: Mapping[str, epath.Path], cache_dir: Path,
          final: Path) -> None:
  """Builds into a private temporary folder, then renames the version folder to ``final``."""
  cache_dir.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
  try:
    logging.info("Building %s from %s into %s", builder_cls.name, list(files.values()), final)
    builder = builder_cls(files=files, data_dir=str(tmp), file_format="array_record")
    builder.download_and_prepare(download_dir=str(tmp / "downloads"))
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
      os.rename(tmp / builder_cls.name / _VERSION, final)
    except OSError:
      # Another process finished the same build first: keep its (identical) copy.
      if not (final / "dataset_info.json").is_file():
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
