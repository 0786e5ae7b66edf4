"""The original files behind TFDS's ``mnist``, ``fashion_mnist`` and ``cifar10``, fetched with
TFDS's download manager: the URLs TFDS's own builders download, checked against the sizes and
sha256 sums TFDS registers for them, kept under ``<tfds_dir>/downloads`` (TFDS's default data
folder when ``tfds_dir`` is None) and not fetched again once there.

    files = originals.download("mnist", tfds_dir=None)    # file name -> local path

TFDS's own preparation of these datasets needs TensorFlow (it decodes the files and encodes
every image to PNG with it); the files fetched here are read without it (:mod:`local_idx`,
:mod:`cifar_tarball`).
"""

from __future__ import annotations

import os

from etils import epath

NAMES = ("mnist", "fashion_mnist", "cifar10")


def download(name: str, tfds_dir: str | None) -> dict[str, epath.Path]:
  """The original files of TFDS dataset ``name`` (file name, e.g.
  ``train-images-idx3-ubyte.gz`` or ``cifar-10-binary.tar.gz`` -> local path). One ValueError
  naming ``name`` when they cannot be fetched or fail TFDS's checksums."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top

  if name not in NAMES:
    raise ValueError(f"name={name!r}: no original files known; choose from {NAMES}")
  infos = tfds.builder_cls(name).url_infos  # url -> UrlInfo(size, checksum, filename)
  root = epath.Path(tfds_dir if tfds_dir is not None else constants.get_default_data_dir())
  manager = tfds.download.DownloadManager(download_dir=root / "downloads", url_infos=infos,
                                          dataset_name=name)
  urls = {info.filename or os.path.basename(url): url for url, info in infos.items()}
  try:
    paths = manager.download(urls)
  except Exception as e:  # TFDS and requests raise many types: offline, HTTP error, checksum
    raise ValueError(f"name={name!r}: cannot download TFDS's original files {sorted(urls)} "
                     f"({type(e).__name__}: {e}); offline, set data_dir to a folder holding "
                     "them") from e
  return {f: epath.Path(p) for f, p in paths.items()}
