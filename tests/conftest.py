"""Fixtures shared by several test modules."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import gcs_emulator  # noqa: E402  (sets GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT before gcsfs loads)

from sgd_phases.datasets import tfds_images


@pytest.fixture
def mock_tfds(monkeypatch):
  """``tfds.testing.mock_data`` with its batched read fixed, every dataset counting as prepared.

  In tfds 4.9.10 mock_data installs ``__getitems__`` on a MagicMock as a plain attribute, so it
  is called without ``self`` and fails; single-item reads work. We swap in a version that does not
  need ``self`` (only the unserialised path is used by data sources). A built-in dataset
  without ``data_dir`` reads a prepared TFDS copy and otherwise downloads the original files:
  here the mocked copy is the prepared one.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking

  def getitems(*args, generator, serialized=False):
    assert not serialized
    return [generator[k] for k in args[-1]]

  monkeypatch.setattr(mocking, "_getitems", getitems)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
  tfds_images.clear_cache()
  yield tfds
  tfds_images.clear_cache()


@pytest.fixture(scope="session")
def gcs_bucket():
  """``gs://sgd-phases-test``: a bucket on a local GCS emulator (127.0.0.1, tests/gcs_emulator.py)
  that this process and its children reach through the environment; stopped at session end."""
  with gcs_emulator.GcsEmulator() as emulator:
    emulator.create_bucket("sgd-phases-test")
    old = gcs_emulator.configure_env(emulator.host)
    try:
      yield "gs://sgd-phases-test"
    finally:
      gcs_emulator.restore_env(old)

